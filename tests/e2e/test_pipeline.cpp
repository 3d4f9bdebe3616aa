// plh-pub --pattern pipeline with real plh-sub workers: fair shares, a slow worker is not
// pre-loaded, a killed worker's unconfirmed work goes to the others, every worker gets
// the end of stream, plh-pub exits 1 when work stays unconfirmed.
#include <catch2/catch.hpp>
#include <zmq.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "plh/data/pipeline.hpp"
#include "process.hpp"
#include "test_broker_process.hpp"
#include "zmq_frames.hpp"

using namespace plh::test;
using namespace std::chrono_literals;

namespace {

struct Lab {
  BrokerProcess broker = BrokerProcess::start({"--heartbeat-interval", "100ms", "--heartbeat-timeout", "2s"});
  std::string ch = "work.t" + unique_suffix();
  std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint}, {"PUB", PLH_PUB_BIN}, {"SUB", PLH_SUB_BIN}};
  TempDir dir;
};

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Job i as a line of 1023 bytes (1 KiB with its newline): its number, left-padded.
std::string job(int i) {
  std::string n = std::to_string(i);
  return std::string(1023 - n.size(), 'x') + n;
}

// "[TIME ]xxx...N" -> N
int job_number(const std::string& line) {
  const auto job = line.substr(line.find(' ') == std::string::npos ? 0 : line.find(' ') + 1);
  return std::stoi(job.substr(job.find_first_not_of('x')));
}
double job_time(const std::string& line) { return std::stod(line.substr(0, line.find(' '))); }

}  // namespace

TEST_CASE("pipeline: seq 30 to three equal workers is 10/10/10, and each ends on its own", "[e2e][pipeline]") {
  Lab lab;
  std::vector<Child> workers;
  for (int i = 0; i < 3; ++i)
    workers.push_back(Child::shell("$SUB " + lab.ch + " --wait -W 30 > " + lab.dir.file("w" + std::to_string(i)), lab.env));
  auto pub = Child::shell("seq 30 | $PUB " + lab.ch + " --pattern pipeline -w 3 -W 30", lab.env);
  const auto rp = pub.wait(40s);
  CHECK(rp.code == 0);
  std::vector<int> all;
  for (int i = 0; i < 3; ++i) {
    // End of stream reached every worker: each exits 0 without -n.
    CHECK(workers[static_cast<std::size_t>(i)].wait(40s).code == 0);
    const auto got = lines_of(lab.dir.file("w" + std::to_string(i)));
    INFO("worker " << i);
    CHECK(got.size() == 10);
    for (const auto& l : got) all.push_back(std::stoi(l));
  }
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == 30);
  for (int i = 0; i < 30; ++i) CHECK(all[static_cast<std::size_t>(i)] == i + 1);
}

TEST_CASE("pipeline: a worker taking 0.5 s per job gets at most 5 of 100, two at 0.01 s take the rest",
          "[e2e][pipeline]") {
  Lab lab;
  // Each worker is plh-sub piped into a job loop that reads one line (the shell's read
  // takes it byte by byte, so the rest stays in the pipe where plh-sub sees it unread)
  // and then works SECS: a read with a timeout on a FIFO nobody writes, so the job's
  // time is not a fork and exec of sleep(1) (which a loaded machine makes slow).
  auto worker = [&](const std::string& name, const std::string& secs) {
    const std::string idle = lab.dir.file(name + ".idle");
    return Child::shell("set -o pipefail; mkfifo " + idle + "; exec 9<>" + idle + "; $SUB " + lab.ch +
                            " --wait -W 60 | while IFS= read -r l; do read -r -t " + secs +
                            " -u 9; printf '%s %s\\n' \"$EPOCHREALTIME\" \"$l\"; done > " + lab.dir.file(name),
                        lab.env);
  };
  auto slow = worker("slow", "0.5");
  auto fast1 = worker("fast1", "0.01");
  auto fast2 = worker("fast2", "0.01");
  std::string input;
  for (int i = 1; i <= 100; ++i) input += job(i) + "\n";
  {
    std::ofstream(lab.dir.file("jobs")) << input;
  }
  auto pub = Child::shell("$PUB " + lab.ch + " --pattern pipeline -w 3 -W 30 < " + lab.dir.file("jobs"), lab.env);
  CHECK(pub.wait(60s).code == 0);
  CHECK(slow.wait(60s).code == 0);
  CHECK(fast1.wait(60s).code == 0);
  CHECK(fast2.wait(60s).code == 0);
  const auto s = lines_of(lab.dir.file("slow")), f1 = lines_of(lab.dir.file("fast1")), f2 = lines_of(lab.dir.file("fast2"));
  REQUIRE(!f1.empty());
  REQUIRE(!f2.empty());
  // The fast workers' time from their first job to their last: at 0.01 s per job about
  // half a second, on a loaded machine more. The slow worker can take one job every 0.5 s
  // and hold one more in its pipe, beyond its first two; so at most 5 on a quiet machine.
  const double fast_secs = std::max(job_time(f1.back()), job_time(f2.back())) -
                           std::min(job_time(f1.front()), job_time(f2.front()));
  const std::size_t bound = std::max<std::size_t>(5, 2 + static_cast<std::size_t>(fast_secs / 0.5 + 0.999));
  INFO("slow " << s.size() << ", fast " << f1.size() << " and " << f2.size() << " in " << fast_secs << " s");
  CHECK(s.size() <= bound);
  CHECK(s.size() >= 1);
  std::vector<int> all;
  for (const auto* part : {&s, &f1, &f2})
    for (const auto& l : *part) all.push_back(job_number(l));
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(all[static_cast<std::size_t>(i)] == i + 1);
}

TEST_CASE("pipeline: a worker killed mid-stream: its unconfirmed jobs go to the others, plh-pub exits 0",
          "[e2e][pipeline]") {
  Lab lab;
  // The victim writes to a pipe the test stops reading, so it holds jobs it has not
  // finished when it is killed; the others write to files.
  auto victim = Child::spawn({PLH_SUB_BIN, lab.ch, "--wait", "-W", "60"}, lab.env);
  auto other1 = Child::shell("$SUB " + lab.ch + " --wait -W 60 > " + lab.dir.file("o1"), lab.env);
  auto other2 = Child::shell("$SUB " + lab.ch + " --wait -W 60 > " + lab.dir.file("o2"), lab.env);
  auto pub = Child::spawn({PLH_PUB_BIN, lab.ch, "--pattern", "pipeline", "-w", "3", "-W", "30"}, lab.env);
  std::string first;
  for (int i = 1; i <= 600; ++i) first += job(i) + "\n";
  pub.write_stdin(first);
  const auto line = victim.read_line(20s);  // it is working
  REQUIRE(line);
  victim.kill(SIGKILL);
  const auto rv = victim.wait(10s);
  CHECK(rv.code == 128 + SIGKILL);
  std::string second;
  for (int i = 601; i <= 1200; ++i) second += job(i) + "\n";
  pub.write_stdin(second);
  pub.close_stdin();
  const auto rp = pub.wait(60s);
  CHECK(rp.code == 0);  // every job was confirmed by a worker still alive
  CHECK(other1.wait(30s).code == 0);
  CHECK(other2.wait(30s).code == 0);
  // At least once: every job is in some output; the victim's are what it wrote before it died.
  std::set<int> seen{job_number(*line)};
  for (const auto& l : split_lines(rv.out)) seen.insert(job_number(l));
  for (const auto& f : {"o1", "o2"})
    for (const auto& l : lines_of(lab.dir.file(f))) seen.insert(job_number(l));
  CHECK(seen.size() == 1200);
  CHECK(*seen.begin() == 1);
  CHECK(*seen.rbegin() == 1200);
}

TEST_CASE("pipeline: a worker that never confirms its work makes plh-pub exit 1 saying so", "[e2e][pipeline]") {
  Lab lab;
  // A raw DEALER that asks for 5 messages and never confirms them, then leaves.
  void* ctx = zmq_ctx_new();
  void* dealer = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0;
  zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
  auto pub = Child::spawn({PLH_PUB_BIN, "--no-broker", "--print-endpoint", "--pattern", "pipeline", "-w", "1", "-W",
                           "20", "--linger", "1s"});
  const auto ep = pub.read_line(10s);
  REQUIRE(ep);
  REQUIRE(zmq_connect(dealer, ep->c_str()) == 0);
  plh::pipeline::Credit hello;
  hello.window = 5;
  send_frames(dealer, {plh::pipeline::encode_credit(hello)});
  pub.write_stdin("a\nb\nc\n");
  pub.close_stdin();
  int timeout = 10000;
  zmq_setsockopt(dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
  const auto frames = recv_frames(dealer);  // the work arrives ...
  REQUIRE(frames.size() == 1);
  zmq_close(dealer);  // ... and the worker goes away without confirming it
  zmq_ctx_term(ctx);
  const auto r = pub.wait(30s);
  CHECK(r.code == 1);
  CHECK(r.err.find("3 of 3 message(s) not confirmed by any worker") != std::string::npos);
}

TEST_CASE("pipeline: a pyzmq DEALER speaking docs/protocol.md is a worker beside plh-sub", "[e2e][pipeline]") {
  Lab lab;
  auto pub = Child::spawn({PLH_PUB_BIN, "--no-broker", "--print-endpoint", "--pattern", "pipeline", "-w", "2", "-W", "20"});
  const auto ep = pub.read_line(10s);
  REQUIRE(ep);
  auto py = Child::spawn({"/usr/bin/python3", std::string(PLH_SOURCE_DIR) + "/tests/e2e/pyzmq_worker.py", *ep, "3"});
  auto sub = Child::spawn({PLH_SUB_BIN, "--connect", *ep, "--pattern", "pipeline", "-W", "20"});
  std::string input;
  for (int i = 1; i <= 300; ++i) input += std::to_string(i) + "\n";
  pub.write_stdin(input);
  pub.close_stdin();
  const auto rp = pub.wait(30s);
  CHECK(rp.code == 0);
  const auto ry = py.wait(30s), rs = sub.wait(30s);
  CHECK(ry.code == 0);
  CHECK(rs.code == 0);
  std::vector<int> all;
  for (const auto* r : {&ry, &rs})
    for (const auto& l : split_lines(r->out)) all.push_back(std::stoi(l));
  CHECK(!split_lines(ry.out).empty());
  CHECK(!split_lines(rs.out).empty());
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == 300);
  for (int i = 0; i < 300; ++i) CHECK(all[static_cast<std::size_t>(i)] == i + 1);
}
