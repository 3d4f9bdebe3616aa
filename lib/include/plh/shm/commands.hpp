#pragma once
// The plh-shm subcommands (create, write, read, info, ls, rm) as library functions over
// the DataBlock API, so that tools/plh-shm/main.cpp only builds the command line.
// Each returns the process exit code or throws plh::Error (the tool's one catch maps it).
// stdout carries data (read) or the requested listing (info, ls); diagnostics go to
// spdlog (stderr).
#include <cstdint>
#include <string>

#include "plh/core/cli.hpp"

namespace plh::shm::commands {

struct GeometryArgs {
  std::string slots = "64";
  std::string slot_size = "64K";
  std::string policy = "sequential";
  std::string checksum = "none";
  std::string mode = "0600";  // creation mode; also the group/other bits accepted on attach
  // Given on the command line (write --create compares only these with an existing segment).
  bool given_slots = true, given_slot_size = true, given_policy = true, given_checksum = true;
};

struct WriteArgs {
  std::string name;
  std::string format = "line";
  bool create = false;
  GeometryArgs geometry;
  std::string type_hash = "0";   // decimal or 0x hex
  std::string dims;              // "a,b,c,d" (1 to 4 numbers)
  std::string chunk_size = "64K";  // raw format
  bool no_batch = false;         // one message per slot even when more are waiting
  unsigned wait_readers = 0;
  bool busy_poll = false;
  bool broker_register = false;
  std::string owner;             // also trust a segment owned by this user (name or uid)
  cli::BrokerOptions broker;
};

struct ReadArgs {
  std::string name;
  std::string format = "line";
  std::uint64_t count = 0;     // 0: until end of stream
  std::string timeout;         // -W: exit 3 when not done by then
  std::string from = "oldest";
  bool busy_poll = false;
  bool wait = false;           // wait for the segment to appear
  bool line_buffered = false;
  bool stats = false;
  std::string heartbeat_timeout = "5s";
  std::string owner;             // also trust a segment owned by this user (name or uid)
  std::string mode = "0600";     // group/other permission bits the segment may grant
  bool broker_register = false;
  cli::BrokerOptions broker;
};

int create(const std::string& name, const GeometryArgs& g);
int write(const WriteArgs& a);
int read(const ReadArgs& a);
int info(const std::string& name, bool json);
int ls(bool json);
int rm(const std::string& name);

}  // namespace plh::shm::commands
