// DISC_REQ round trips per second against a running plh-broker.
//
//   bench_broker --broker ENDPOINT [--channels 10000] [--clients 1,4] [--seconds 3]
//                [--window 1] [--loop] [--no-populate] [--via-client]
//
// First registers --channels channels (REG_REQ from one DEALER; start the broker with a
// long --heartbeat-timeout so they stay), then for each client count runs that many
// threads, each with its own DEALER socket, doing DISC_REQ for random channels with
// --window requests in flight (1 = strict request/reply round trips). Prints one JSON
// line per run on stdout. --loop serves all the clients' sockets from one thread with
// zmq_poll instead of a thread per client (each client still its own DEALER, connection
// and --window; the way redis-benchmark or wrk drive many connections from one thread).
// --via-client also measures 1 client through plh::BrokerClient
// (the library path the tools use: thread hand-off plus reply validation).
#include <zmq.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "plh/control/broker_client.hpp"

using namespace std::chrono;

namespace {
std::string channel_name(int i) { return "bench.ch" + std::to_string(i); }

void* dealer(void* ctx, const std::string& ep) {
  void* s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0, hwm = 100000;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
  if (zmq_connect(s, ep.c_str()) != 0) {
    std::fprintf(stderr, "bench_broker: connect %s: %s\n", ep.c_str(), zmq_strerror(zmq_errno()));
    std::exit(1);
  }
  return s;
}

void send2(void* s, const char* type, const std::string& body) {
  zmq_send(s, type, std::strlen(type), ZMQ_SNDMORE);
  zmq_send(s, body.data(), body.size(), 0);
}

// Receives one two-frame reply; returns the type frame's first byte ('D' for DISC_ACK, 'E' ERROR...).
char recv2(void* s) {
  zmq_msg_t m;
  zmq_msg_init(&m);
  char first = 0;
  int more = 1, n = 0;
  while (more) {
    if (zmq_msg_recv(&m, s, 0) < 0) {
      zmq_msg_close(&m);
      return 0;
    }
    if (n++ == 0 && zmq_msg_size(&m) > 0) first = *static_cast<const char*>(zmq_msg_data(&m));
    more = zmq_msg_more(&m);
  }
  zmq_msg_close(&m);
  return first;
}

void populate(void* ctx, const std::string& ep, int channels) {
  void* s = dealer(ctx, ep);
  const int window = 500;
  int sent = 0, got = 0, errors = 0;
  while (got < channels) {
    while (sent < channels && sent - got < window) {
      nlohmann::json b = {{"channel", channel_name(sent)},
                          {"endpoint", "tcp://10.0.0.1:" + std::to_string(20000 + sent % 40000)},
                          {"producer_pid", 100000 + sent},
                          {"producer_hostname", "bench-elsewhere"},
                          {"schema_hash", 42},
                          {"schema_version", "bench@1"}};
      send2(s, "REG_REQ", b.dump());
      ++sent;
    }
    if (recv2(s) != 'R') ++errors;
    ++got;
  }
  zmq_close(s);
  if (errors) std::fprintf(stderr, "bench_broker: %d registrations failed (already registered?)\n", errors);
}

struct Result {
  double seconds = 0;
  std::uint64_t round_trips = 0, errors = 0;
};

// 1024 DISC_REQ bodies for random channels (client t's own sequence).
std::vector<std::string> disc_bodies(int t, int channels) {
  std::mt19937 rng(static_cast<unsigned>(t + 1));
  std::vector<std::string> bodies;
  for (int i = 0; i < 1024; ++i)
    bodies.push_back("{\"channel\":\"" + channel_name(static_cast<int>(rng() % channels)) +
                     "\",\"corr\":" + std::to_string(i) + "}");
  return bodies;
}

// --loop: one thread, one DEALER per client, each keeping `window` requests in flight.
void disc_loop(void* ctx, const std::string& ep, int clients, int channels, int window,
               const std::atomic<bool>& go, const std::atomic<bool>& stop, std::vector<std::uint64_t>& counts,
               std::vector<std::uint64_t>& errs) {
  std::vector<void*> socks;
  std::vector<zmq_pollitem_t> items;
  std::vector<std::vector<std::string>> bodies;
  for (int t = 0; t < clients; ++t) {
    socks.push_back(dealer(ctx, ep));
    send2(socks.back(), "PING_REQ", "{}");  // connect before the clock starts
    recv2(socks.back());
    items.push_back({socks.back(), 0, ZMQ_POLLIN, 0});
    bodies.push_back(disc_bodies(t, channels));
  }
  std::vector<std::size_t> next(clients, 0);
  std::vector<int> in_flight(clients, 0);
  while (!go) std::this_thread::yield();
  for (int t = 0; t < clients; ++t)
    for (; in_flight[t] < window; ++in_flight[t]) send2(socks[t], "DISC_REQ", bodies[t][next[t]++ & 1023]);
  while (!stop) {
    if (zmq_poll(items.data(), clients, 100) <= 0) continue;
    for (int t = 0; t < clients; ++t) {
      if (!(items[t].revents & ZMQ_POLLIN)) continue;
      if (recv2(socks[t]) != 'D') ++errs[t];
      ++counts[t];
      send2(socks[t], "DISC_REQ", bodies[t][next[t]++ & 1023]);
    }
  }
  for (int t = 0; t < clients; ++t) {
    while (in_flight[t]-- > 0) recv2(socks[t]);
    zmq_close(socks[t]);
  }
}

Result run_disc(void* ctx, const std::string& ep, int clients, int channels, double seconds, int window,
                bool loop) {
  std::atomic<bool> go{false}, stop{false};
  std::vector<std::uint64_t> counts(clients, 0), errs(clients, 0);
  std::vector<std::thread> threads;
  if (loop)
    threads.emplace_back([&] { disc_loop(ctx, ep, clients, channels, window, go, stop, counts, errs); });
  for (int t = 0; t < (loop ? 0 : clients); ++t)
    threads.emplace_back([&, t] {
      void* s = dealer(ctx, ep);
      const std::vector<std::string> bodies = disc_bodies(t, channels);
      send2(s, "PING_REQ", "{}");  // connect before the clock starts
      recv2(s);
      while (!go) std::this_thread::yield();
      std::uint64_t n = 0, e = 0;
      int in_flight = 0;
      std::size_t next = 0;
      while (!stop) {
        while (in_flight < window) {
          send2(s, "DISC_REQ", bodies[next++ & 1023]);
          ++in_flight;
        }
        if (recv2(s) != 'D') ++e;
        --in_flight;
        ++n;
      }
      while (in_flight-- > 0) recv2(s);
      counts[t] = n;
      errs[t] = e;
      zmq_close(s);
    });
  std::this_thread::sleep_for(200ms);  // all threads connected (bench program, not a test)
  const auto t0 = steady_clock::now();
  go = true;
  std::this_thread::sleep_for(duration<double>(seconds));
  stop = true;
  const auto t1 = steady_clock::now();
  for (auto& th : threads) th.join();
  Result r;
  r.seconds = duration<double>(t1 - t0).count();
  for (int t = 0; t < clients; ++t) {
    r.round_trips += counts[t];
    r.errors += errs[t];
  }
  return r;
}
}  // namespace

int main(int argc, char** argv) {
  std::string ep;
  int channels = 10000, window = 1;
  double seconds = 3;
  std::vector<int> client_counts{1, 4};
  bool do_populate = true, via_client = false, loop = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_broker: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--broker") ep = next();
    else if (a == "--channels") channels = std::atoi(next().c_str());
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--window") window = std::max(1, std::atoi(next().c_str()));
    else if (a == "--no-populate") do_populate = false;
    else if (a == "--loop") loop = true;
    else if (a == "--via-client") via_client = true;
    else if (a == "--clients") {
      client_counts.clear();
      std::string v = next();
      for (std::size_t p = 0; p < v.size();) {
        const auto q = v.find(',', p);
        client_counts.push_back(std::atoi(v.substr(p, q - p).c_str()));
        if (q == std::string::npos) break;
        p = q + 1;
      }
    } else {
      std::fprintf(stderr, "usage: bench_broker --broker EP [--channels N] [--clients 1,4] [--seconds S] "
                           "[--window W] [--loop] [--no-populate] [--via-client]\n");
      return 2;
    }
  }
  if (ep.empty() || channels < 1) {
    std::fprintf(stderr, "bench_broker: --broker is required\n");
    return 2;
  }
  void* ctx = zmq_ctx_new();
  if (do_populate) {
    const auto t0 = steady_clock::now();
    populate(ctx, ep, channels);
    std::printf("{\"bench\":\"register\",\"channels\":%d,\"seconds\":%.3f,\"per_s\":%.0f}\n", channels,
                duration<double>(steady_clock::now() - t0).count(),
                channels / duration<double>(steady_clock::now() - t0).count());
    std::fflush(stdout);
  }
  for (int clients : client_counts) {
    const Result r = run_disc(ctx, ep, clients, channels, seconds, window, loop);
    std::printf("{\"bench\":\"disc\",\"clients\":%d,\"client_threads\":%d,\"window\":%d,\"channels\":%d,\"seconds\":%.3f,"
                "\"round_trips\":%llu,\"errors\":%llu,\"round_trips_per_s\":%.0f}\n",
                clients, loop ? 1 : clients, window, channels, r.seconds, static_cast<unsigned long long>(r.round_trips),
                static_cast<unsigned long long>(r.errors), static_cast<double>(r.round_trips) / r.seconds);
    std::fflush(stdout);
  }
  zmq_ctx_term(ctx);
  if (via_client) {
    plh::BrokerClientConfig cfg;
    cfg.endpoint = ep;
    plh::BrokerClient client(cfg);
    client.discover(channel_name(0));
    std::mt19937 rng(7);
    std::uint64_t n = 0;
    const auto t0 = steady_clock::now();
    const auto until = t0 + duration<double>(seconds);
    while (steady_clock::now() < until) {
      client.discover(channel_name(static_cast<int>(rng() % channels)));
      ++n;
    }
    const double s = duration<double>(steady_clock::now() - t0).count();
    std::printf("{\"bench\":\"disc_via_broker_client\",\"clients\":1,\"seconds\":%.3f,\"round_trips\":%llu,"
                "\"round_trips_per_s\":%.0f}\n",
                s, static_cast<unsigned long long>(n), static_cast<double>(n) / s);
  }
  return 0;
}
