#pragma once
// Which machine and PID namespace this process runs in, for the broker's PID-based
// liveness shortcut (kill(pid, 0) on a peer's pid is meaningful only when the peer shares
// the broker's kernel and PID namespace; a host *name* proves neither).
//
// host_id = lowercase hex of the first 16 bytes of
//   SHA-256( machine_id "\n" boot_id "\n" pid_namespace_inode )
// where machine_id is /etc/machine-id (else /var/lib/dbus/machine-id, else ""), trimmed;
// boot_id is /proc/sys/kernel/random/boot_id, trimmed (else ""); pid_namespace_inode is the
// decimal inode number of /proc/self/ns/pid (else "0"). Two machines differ in machine-id
// and boot id; two containers or `unshare --pid` children of one kernel differ in the PID
// namespace inode. docs/protocol.md ("Liveness") gives the same recipe for other languages.
//
// Thread-safe; computed once per process.
#include <string>

namespace plh {

const std::string& host_id();

// The recipe above over given inputs (what host_id() feeds it; for tests).
std::string make_host_id(const std::string& machine_id, const std::string& boot_id, unsigned long long pid_ns_inode);

}  // namespace plh
