// plh-shm: the shared-memory DataBlock ring buffer from the command line.
#include "plh/core/cli.hpp"
#include "plh/shm/commands.hpp"

namespace {

namespace cmd = plh::shm::commands;

void add_geometry(CLI::App* app, cmd::GeometryArgs& g, bool required, const char* mode_help) {
  auto* slots = app->add_option("--slots", g.slots, "Number of slots in the ring")->type_name("N");
  auto* size = app->add_option("--slot-size", g.slot_size, "Max payload bytes per slot (K, M suffixes)")->type_name("SIZE");
  if (required) {  // no default shown next to REQUIRED
    slots->required()->default_str("");
    size->required()->default_str("");
  }
  app->add_option("--policy", g.policy, "latest, sequential or sync")
      ->check(CLI::IsMember({"latest", "sequential", "sync"}));
  app->add_option("--checksum", g.checksum, "Per-slot checksum: none, xxh3 or blake2b")
      ->check(CLI::IsMember({"none", "xxh3", "blake2b"}));
  app->add_option("--mode", g.mode, mode_help);
}

}  // namespace

int main(int argc, char** argv) {
  plh::cli::LogOptions log;
  std::string name;
  cmd::GeometryArgs create_geo;
  cmd::WriteArgs wa;
  cmd::ReadArgs ra;
  bool info_json = false, ls_json = false;
  return plh::cli::run(
      "plh-shm", "Shared-memory ring buffer (DataBlock): create, write, read, info, ls, rm", argc, argv,
      [&](CLI::App& app) -> std::function<int()> {
        plh::cli::add_log_options(app, log);
        app.require_subcommand(1);
        app.fallthrough();  // -v, -q, --log-* also after the subcommand (`plh-shm write x -v`)

        auto* create = app.add_subcommand("create", "Create a segment /plh.NAME");
        create->add_option("NAME", name, "Segment name (channel-name grammar)")->required();
        add_geometry(create, create_geo, true, "Permission bits of the segment (octal, default 0600)");

        auto* write = app.add_subcommand("write", "stdin -> slots");
        write->add_option("NAME", wa.name, "Segment name")->required();
        write->add_option("-f,--format", wa.format, "Input framing: line, zero, len, raw, json");
        write->add_flag("--create", wa.create, "Create the segment when missing (with the geometry options)");
        add_geometry(write, wa.geometry, false,
                     "Permission bits of a created segment (octal); an existing one may grant group/others no more");
        write->add_option("--owner", wa.owner, "Also trust an existing segment owned by this user (name or uid)");
        write->add_option("--type-hash", wa.type_hash, "u64 stored in every slot's metadata (decimal or 0x hex)");
        write->add_option("--dims", wa.dims, "Up to 4 u64 dimensions stored in every slot: a,b,c,d");
        write->add_option("--chunk-size", wa.chunk_size, "raw format: max bytes per message");
        write->add_flag("--no-batch", wa.no_batch, "One message per slot even when more input is waiting");
        write->add_option("-w,--wait-readers", wa.wait_readers, "Do not write until N readers are attached");
        write->add_flag("--busy-poll", wa.busy_poll, "Spin instead of sleeping while waiting for space");
        write->add_flag("--broker-register", wa.broker_register, "Register the segment as a channel in the broker");
        plh::cli::add_broker_options(*write, wa.broker);

        auto* read = app.add_subcommand("read", "slots -> stdout");
        read->add_option("NAME", ra.name, "Segment name")->required();
        read->add_option("-f,--format", ra.format, "Output framing: line, zero, len, raw, json");
        read->add_option("-n,--count", ra.count, "Exit 0 after N messages")->check(plh::cli::positive());
        read->add_option("-W,--timeout", ra.timeout, "Exit 3 if not done by then (e.g. 5s)");
        read->add_option("--from", ra.from, "Start at the oldest slot still held or the latest")
            ->check(CLI::IsMember({"oldest", "latest"}));
        read->add_flag("--busy-poll", ra.busy_poll, "Spin instead of sleeping (lowest latency, one core busy)");
        read->add_flag("--wait", ra.wait, "Wait for the segment to appear instead of exit 4");
        read->add_flag("--line-buffered", ra.line_buffered, "Flush stdout after every message");
        read->add_flag("--stats", ra.stats, "Counters on stderr at exit");
        read->add_option("--owner", ra.owner, "Also trust a segment owned by this user (name or uid)");
        read->add_option("--mode", ra.mode, "Group/other permission bits the segment may grant (octal, default 0600)");
        read->add_option("--heartbeat-timeout", ra.heartbeat_timeout,
                         "A writer silent this long (or whose pid is gone) is dead: exit 1");
        read->add_flag("--broker-register", ra.broker_register,
                       "Register as a consumer in the broker and report checksum errors to it");
        plh::cli::add_broker_options(*read, ra.broker);

        auto* info = app.add_subcommand("info", "Geometry, policy, sequence, writer and readers of a segment");
        info->add_option("NAME", name, "Segment name")->required();
        info->add_flag("--json", info_json, "One JSON object");

        auto* ls = app.add_subcommand("ls", "List plh segments");
        ls->add_flag("--json", ls_json, "One JSON array");

        auto* rm = app.add_subcommand("rm", "Remove a segment");
        rm->add_option("NAME", name, "Segment name")->required();

        return [&, create, write, read, info, ls, rm]() -> int {
          plh::cli::apply_log_options("plh-shm", log);
          if (*create) return cmd::create(name, create_geo);
          if (*write) {
            // --create means "create if missing": an existing segment is compared only
            // with the geometry options given.
            wa.geometry.given_slots = write->count("--slots") > 0;
            wa.geometry.given_slot_size = write->count("--slot-size") > 0;
            wa.geometry.given_policy = write->count("--policy") > 0;
            wa.geometry.given_checksum = write->count("--checksum") > 0;
            return cmd::write(wa);
          }
          if (*read) return cmd::read(ra);
          if (*info) return cmd::info(name, info_json);
          if (*ls) return cmd::ls(ls_json);
          if (*rm) return cmd::rm(name);
          return 2;
        };
      });
}
