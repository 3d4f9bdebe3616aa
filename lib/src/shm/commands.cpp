// plh-shm subcommands over the DataBlock API.
#include "plh/shm/commands.hpp"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <spdlog/spdlog.h>
#include <thread>
#include <vector>

#include "plh/control/broker_client.hpp"
#include "plh/core/error.hpp"
#include "plh/core/framing.hpp"
#include "plh/shm/data_block.hpp"
#include "plh/shm/layout.hpp"
#include "plh/core/signals.hpp"
#include "plh/core/text.hpp"

namespace plh::shm::commands {

namespace {

std::uint64_t parse_u64(std::string_view text, std::string_view what) {
  std::string_view digits = text;
  int base = 10;
  if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    digits.remove_prefix(2);
    base = 16;
  }
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
  if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size())
    throw UsageError("invalid " + std::string(what) + " '" + std::string(text) + "'");
  return v;
}

std::uint32_t parse_u32_size(const std::string& text, std::string_view what) {
  const std::uint64_t v = parse_size(text);
  if (v > 0xffffffffull) throw UsageError(std::string(what) + " '" + text + "' is too large");
  return static_cast<std::uint32_t>(v);
}

unsigned parse_mode(const std::string& text) {
  unsigned mode = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), mode, 8);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || mode > 0777)
    throw UsageError("invalid --mode '" + text + "' (octal permission bits, e.g. 0600 or 0660)");
  return mode;
}

Trust trust_of(const std::string& owner, const std::string& mode) {
  Trust t;
  if (!owner.empty()) t.owner = parse_owner(owner);
  t.mode = parse_mode(mode);
  return t;
}

CreateOptions create_options(const GeometryArgs& g) {
  CreateOptions o;
  const std::uint64_t slots = parse_u64(g.slots, "--slots value");
  if (slots < 1 || slots > 0xffffffffull) throw UsageError("--slots must be between 1 and 4294967295");
  o.geometry.slots = static_cast<std::uint32_t>(slots);
  o.geometry.slot_size = parse_u32_size(g.slot_size, "--slot-size");
  cli::require_positive(o.geometry.slot_size, "--slot-size");
  o.geometry.policy = parse_policy(g.policy);
  o.geometry.checksum = parse_checksum(g.checksum);
  o.mode = parse_mode(g.mode);
  return o;
}

std::array<std::uint64_t, 4> parse_dims(const std::string& text) {
  std::array<std::uint64_t, 4> d{};
  if (text.empty()) return d;
  std::size_t i = 0, start = 0;
  for (;;) {
    const std::size_t comma = text.find(',', start);
    const std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (i >= 4) throw UsageError("--dims takes at most 4 numbers: '" + text + "'");
    d[i++] = parse_u64(part, "--dims value");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return d;
}

std::string human_size(std::uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(b) / (1ull << 30));
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1ull << 20));
  else if (b >= 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(b) / 1024);
  else std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

void put_u32(std::byte* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}
std::uint32_t get_u32(const std::byte* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(p[i]) << (8 * i);
  return v;
}

std::unique_ptr<BrokerClient> connect_broker(const cli::BrokerOptions& o) {
  BrokerClientConfig cfg;
  cfg.endpoint = cli::resolve_broker_endpoint(o);
  cfg.server_key = cli::resolve_broker_key(o);
  cfg.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(o.timeout));
  return std::make_unique<BrokerClient>(cfg);
}

void print_stdout(const std::string& text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0) {
    if (errno == EPIPE) throw BrokenPipe();
    throw Error(ExitCode::failure, "cannot write to stdout: " + errno_text(errno));
  }
}

}  // namespace

int create(const std::string& name, const GeometryArgs& g) {
  create_segment(name, create_options(g));
  spdlog::info("created segment '{}'", name);
  return 0;
}

int rm(const std::string& name) {
  if (!remove_segment(name)) throw NotFoundError("segment '" + name + "' not found");
  return 0;
}

int write(const WriteArgs& a) {
  install_stop_handlers();
  const Format fmt = parse_format(a.format);
  const std::uint64_t type_hash = parse_u64(a.type_hash, "--type-hash");
  const auto dims = parse_dims(a.dims);
  Writer::Options wo;
  wo.create = a.create;
  if (a.create) {
    wo.create_options = create_options(a.geometry);
    wo.compare = {a.geometry.given_slots, a.geometry.given_slot_size, a.geometry.given_policy,
                  a.geometry.given_checksum};
  }
  else segment_object_name(a.name);  // validate the name before touching anything
  const Trust trust = trust_of(a.owner, a.geometry.mode);
  wo.wait.busy_poll = a.busy_poll;
  std::size_t chunk = parse_size(a.chunk_size);
  if (chunk == 0) throw UsageError("--chunk-size must be at least 1 byte");
  Writer w(a.name, wo, trust);
  const std::size_t slot_size = w.geometry().slot_size;
  // Control plane only: the broker never sees the data.
  std::unique_ptr<BrokerClient> broker;
  std::shared_ptr<ChannelMetrics> metrics;
  if (a.broker_register) {
    broker = connect_broker(a.broker);
    metrics = std::make_shared<ChannelMetrics>();
    const std::string name = a.name;
    broker->on_notification([name](const std::string& type, const nlohmann::json& body) {
      if (type == "CHECKSUM_ERROR_REPORT")
        spdlog::warn("a reader (pid {}) reported a checksum error in slot seq {} of '{}'",
                     body.value("reader_pid", nlohmann::json(nullptr)).dump(),
                     body.value("seq", nlohmann::json(nullptr)).dump(), name);
      else if (type == "CHANNEL_CLOSING_NOTIFY")
        spdlog::warn("the broker closed channel '{}' ({})", name, body.value("reason", nlohmann::json("")).dump());
    });
    ChannelRegistration reg;
    reg.channel = a.name;
    reg.transport = "shm";
    reg.pattern = std::string(policy_name(w.geometry().policy));
    reg.shm_name = "/plh." + a.name;
    reg.metadata = {{"slots", w.geometry().slots},
                    {"slot_size", w.geometry().slot_size},
                    {"policy", policy_name(w.geometry().policy)},
                    {"checksum", checksum_name(w.geometry().checksum)}};
    broker->register_channel(reg, metrics);
  }
  auto count = [&](std::uint64_t msgs, std::uint64_t nbytes) {
    if (metrics) {
      metrics->messages.fetch_add(msgs, std::memory_order_relaxed);
      metrics->bytes.fetch_add(nbytes, std::memory_order_relaxed);
    }
  };
  FrameReader in(STDIN_FILENO, fmt, std::min(chunk, slot_size), slot_size);
  if (a.wait_readers > 0 && !w.wait_for_readers(a.wait_readers)) return exit_code_for_stop();

  const bool batch = !a.no_batch && fmt != Format::raw;
  std::optional<std::string_view> msg = in.next();
  std::uint64_t messages = 0, slots = 0;
  while (msg) {
    auto buf = w.begin_publish();
    if (buf.empty()) break;  // stopped
    const std::size_t m = msg->size();
    // Pack what is already waiting into one slot: count, then (u32 length, bytes) records.
    if (batch && in.has_buffered() && 8 + m <= slot_size) {
      std::size_t off = 4;
      std::uint32_t count_in_slot = 0;
      bool carry = false;
      for (;;) {
        put_u32(buf.data() + off, static_cast<std::uint32_t>(msg->size()));
        std::memcpy(buf.data() + off + 4, msg->data(), msg->size());
        off += 4 + msg->size();
        ++count_in_slot;
        if (!in.has_buffered()) break;
        msg = in.next();
        if (!msg) break;
        if (off + 4 + msg->size() > slot_size) {
          carry = true;
          break;
        }
      }
      put_u32(buf.data(), count_in_slot);
      w.end_publish(off, 0, type_hash, dims, layout::kSlotPacked);
      count(count_in_slot, off - 4 - 4 * count_in_slot);
      messages += count_in_slot;
      ++slots;
      if (!carry) msg = in.next();
      continue;
    }
    if (m) std::memcpy(buf.data(), msg->data(), m);
    w.end_publish(m, 0, type_hash, dims);
    count(1, m);
    ++messages;
    ++slots;
    msg = in.next();
  }
  spdlog::info("wrote {} messages in {} slots to '{}'", messages, slots, a.name);
  w.end_stream();
  return stop_requested() ? exit_code_for_stop() : 0;
}

int read(const ReadArgs& a) {
  install_stop_handlers();
  const Format fmt = parse_format(a.format);
  Reader::Options ro;
  if (a.from == "oldest") ro.from = Reader::From::oldest;
  else if (a.from == "latest") ro.from = Reader::From::latest;
  else throw UsageError("invalid --from '" + a.from + "' (oldest, latest)");
  ro.wait.busy_poll = a.busy_poll;
  ro.wait.heartbeat_timeout = parse_duration(a.heartbeat_timeout);
  if (ro.wait.heartbeat_timeout.count() <= 0) throw UsageError("--heartbeat-timeout must be positive");
  const auto start = Clock::now();
  Clock::time_point deadline = kForever;
  if (!a.timeout.empty()) deadline = start + parse_duration(a.timeout);
  segment_object_name(a.name);
  const Trust trust = trust_of(a.owner, a.mode);

  std::optional<Reader> reader;
  for (;;) {
    try {
      reader.emplace(a.name, ro, trust);
      break;
    } catch (const NotFoundError&) {
      if (!a.wait) throw;
      if (stop_requested()) return exit_code_for_stop();
      if (Clock::now() >= deadline) throw TimeoutError("segment '" + a.name + "' did not appear in time");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling for a file to appear
    }
  }
  Reader& r = *reader;
  std::unique_ptr<BrokerClient> broker;
  std::shared_ptr<ChannelMetrics> metrics;
  if (a.broker_register) {
    broker = connect_broker(a.broker);
    metrics = std::make_shared<ChannelMetrics>();
    broker->register_consumer(a.name, std::nullopt, metrics);
  }
  const bool copy = r.geometry().policy == Policy::latest;  // the writer may overwrite a held slot
  FrameWriter out(STDOUT_FILENO, fmt, a.line_buffered || ::isatty(STDOUT_FILENO));
  std::vector<std::byte> local;
  static const std::byte kNoBytes[1] = {};  // never hand a null pointer on, even for 0 bytes
  std::uint64_t messages = 0, bytes = 0, corrupt = 0, slots_seen = 0;
  const bool ordered = r.geometry().policy != Policy::latest;
  MessageMeta meta;
  meta.channel = a.name;
  meta.has_slot_meta = true;

  auto report = [&](const std::string& what) {
    ++corrupt;
    spdlog::error("{}; slot skipped", what);
  };
  cli::StatsAtExit stats([&] {  // also when the run ends by an error (writer gone: exit 1)
    if (!a.stats) return;
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::fprintf(stderr,
                 "plh-shm: stats: messages=%llu bytes=%llu skipped=%llu missed=%llu checksum_errors=%llu rate=%.0f/s\n",
                 static_cast<unsigned long long>(messages), static_cast<unsigned long long>(bytes),
                 static_cast<unsigned long long>(r.skipped()), static_cast<unsigned long long>(r.missed()),
                 static_cast<unsigned long long>(r.checksum_errors()),
                 secs > 0 ? static_cast<double>(messages) / secs : 0.0);
  });
  auto finish = [&](int code) {
    out.flush();
    stats.print();
    if (code == 0 && corrupt > 0)
      throw Error(ExitCode::failure, std::to_string(corrupt) + " corrupt slot(s) of '" + a.name + "' were skipped");
    // Under sequential/sync nothing may be lost: slots this reader never got (overwritten
    // before it attached, or while it joined) make the run incomplete.
    if (code == 0 && ordered && r.skipped() > 0)
      throw Error(ExitCode::failure, std::to_string(r.skipped()) + " slot(s) of '" + a.name +
                                         "' were overwritten before this reader got them (policy " +
                                         std::string(policy_name(r.geometry().policy)) + ")");
    return code;
  };

  auto timed_out = [&]() -> int {
    finish(3);
    throw TimeoutError("timed out after " + a.timeout + " reading '" + a.name + "' (" + std::to_string(messages) +
                       " messages)");
  };
  try {
    for (;;) {
      std::optional<SlotView> view;
      // -W holds even while slots keep coming (a writer that never lets the reader
      // catch up): the clock is read once every 64 slots.
      if ((++slots_seen & 63) == 0 && deadline != kForever && Clock::now() >= deadline) return timed_out();
      try {
        view = r.try_acquire();
        if (!view) {
          out.flush();  // about to wait: let downstream see what we have
          const AcquireResult got = r.acquire(deadline);
          switch (got.status) {
            case AcquireStatus::slot: view = got.view; break;
            case AcquireStatus::ended: return finish(0);
            case AcquireStatus::stopped: return finish(exit_code_for_stop());
            case AcquireStatus::timeout: return timed_out();
          }
        }
      } catch (const ChecksumError& e) {
        report(e.what());
        if (broker)
          broker->send("CHECKSUM_ERROR_REPORT", {{"channel", a.name},
                                                 {"shm_name", "/plh." + a.name},
                                                 {"seq", e.seq},
                                                 {"checksum", checksum_name(r.geometry().checksum)},
                                                 {"reader_pid", ::getpid()},
                                                 {"reader_hostname", hostname()}});
        continue;
      }
      const std::byte* data = view->meta.size ? view->data : kNoBytes;
      meta.seq = view->meta.seq;
      meta.ts_ns = view->meta.ts_ns;
      meta.type_hash = view->meta.type_hash;
      meta.dims = view->meta.dims;
      const std::uint32_t size = view->meta.size;
      if (copy) {
        local.resize(size);
        if (size) std::memcpy(local.data(), data, size);
        if (!r.release()) continue;  // overwritten while copying: counted as skipped
        data = size ? local.data() : kNoBytes;
      }
      bool done = false;
      if (view->meta.flags & layout::kSlotPacked) {
        // Never trust the records: under sequential/sync `data` is the shared slot itself,
        // which a hostile writer may change while we read it. Each length is read once
        // into a local, checked against the slot size, and only that local is used; the
        // loop ends at the slot's end whatever the count says.
        if (size < 4) {
          report("packed slot seq " + std::to_string(meta.seq) + " of '" + a.name + "' is too short");
        } else {
          const std::uint32_t n = get_u32(data);
          std::size_t off = 4;
          for (std::uint32_t i = 0; i < n && !done; ++i) {
            const std::uint32_t len = off + 4 <= size ? get_u32(data + off) : 0;
            if (off + 4 > size || len > size - off - 4) {
              report("packed slot seq " + std::to_string(meta.seq) + " of '" + a.name + "' has a record out of bounds");
              break;
            }
            out.write({reinterpret_cast<const char*>(data + off + 4), len}, meta);
            off += 4 + len;
            ++messages;
            bytes += len;
            done = a.count && messages >= a.count;
          }
        }
      } else {
        out.write({reinterpret_cast<const char*>(data), size}, meta);
        ++messages;
        bytes += size;
        done = a.count && messages >= a.count;
      }
      if (!copy) r.release();
      if (metrics) {
        metrics->messages.store(messages, std::memory_order_relaxed);
        metrics->bytes.store(bytes, std::memory_order_relaxed);
        metrics->gaps.store(r.skipped(), std::memory_order_relaxed);
      }
      if (done) return finish(0);
    }
  } catch (const BrokenPipe&) {
    throw;
  } catch (const TimeoutError&) {
    throw;
  } catch (const Error&) {
    try {
      out.flush();
    } catch (...) {
    }
    throw;
  }
}

int info(const std::string& name, bool json) {
  const SegmentInfo i = inspect_segment(name);
  if (json) {
    print_stdout(to_json(i).dump() + "\n");
    return 0;
  }
  char line[512];
  std::string s;
  std::snprintf(line, sizeof line, "segment   %s (%s, %s, mode %04o)\n", i.name.c_str(), i.object.c_str(),
                human_size(i.total_size).c_str(), i.mode);
  s += line;
  std::snprintf(line, sizeof line, "geometry  %u slots x %u bytes, policy %s, checksum %s\n", i.geometry.slots,
                i.geometry.slot_size, std::string(policy_name(i.geometry.policy)).c_str(),
                std::string(checksum_name(i.geometry.checksum)).c_str());
  s += line;
  std::snprintf(line, sizeof line, "sequence  %llu%s\n", static_cast<unsigned long long>(i.write_seq),
                i.ended ? " (ended)" : "");
  s += line;
  if (i.writer_pid)
    std::snprintf(line, sizeof line, "writer    pid %d %s, heartbeat %.1f s ago, waited %llu times\n", i.writer_pid,
                  i.writer_alive ? "alive" : "gone", i.writer_heartbeat_age_s,
                  static_cast<unsigned long long>(i.writer_waits));
  else
    std::snprintf(line, sizeof line, "writer    none\n");
  s += line;
  std::snprintf(line, sizeof line, "readers   %zu\n", i.readers.size());
  s += line;
  if (!i.readers.empty()) {
    std::snprintf(line, sizeof line, "  %-3s %-8s %-12s %-10s %-10s %-10s %s\n", "#", "PID", "CURSOR", "LAG", "SKIPPED",
                  "CHECKSUM", "STATE");
    s += line;
    for (const auto& r : i.readers) {
      std::snprintf(line, sizeof line, "  %-3u %-8d %-12llu %-10llu %-10llu %-10llu %s\n", r.index, r.pid,
                    static_cast<unsigned long long>(r.cursor), static_cast<unsigned long long>(r.lag),
                    static_cast<unsigned long long>(r.skipped), static_cast<unsigned long long>(r.checksum_errors),
                    r.alive ? "alive" : "gone");
      s += line;
    }
  }
  print_stdout(s);
  return 0;
}

int ls(bool json) {
  const auto all = list_segments();
  if (json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& l : all) {
      if (l.info) arr.push_back(to_json(*l.info));
      else arr.push_back({{"name", l.name}, {"object", "/plh." + l.name}, {"error", l.problem}});
    }
    print_stdout(arr.dump() + "\n");
    return 0;
  }
  std::string s;
  char line[512];
  std::snprintf(line, sizeof line, "%-24s %-8s %-10s %-11s %-10s %-16s %-8s %s\n", "NAME", "SLOTS", "SLOT_SIZE",
                "POLICY", "SEQ", "WRITER", "READERS", "STATE");
  s += line;
  for (const auto& l : all) {
    if (!l.info) {
      std::snprintf(line, sizeof line, "%-24s %-8s %-10s %-11s %-10s %-16s %-8s %s\n", l.name.c_str(), "-", "-", "-",
                    "-", "-", "-", ("unreadable: " + l.problem).c_str());
      s += line;
      continue;
    }
    const auto& i = *l.info;
    std::string writer = i.writer_pid ? std::to_string(i.writer_pid) + (i.writer_alive ? "" : " (gone)") : "-";
    const char* state = i.ended ? "ended" : (i.writer_pid && i.writer_alive ? "live" : (i.writer_pid ? "stale" : "idle"));
    std::snprintf(line, sizeof line, "%-24s %-8u %-10u %-11s %-10llu %-16s %-8zu %s\n", i.name.c_str(),
                  i.geometry.slots, i.geometry.slot_size, std::string(policy_name(i.geometry.policy)).c_str(),
                  static_cast<unsigned long long>(i.write_seq), writer.c_str(), i.readers.size(), state);
    s += line;
  }
  print_stdout(s);
  return 0;
}

}  // namespace plh::shm::commands
