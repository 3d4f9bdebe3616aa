#pragma once
// CurveZMQ key material: generation, the key files written by `plh-ctl keygen`, and the
// allow-list read by `plh-broker --allow-keys`.
//
// Key files (all text, Z85, 40 characters per key):
//   PREFIX.pub  one line: the public key.
//   PREFIX.key  mode 0600; first line the secret key, second line the public key.
// A file may carry comments (lines starting with '#') and blank lines.
// All functions throw plh::Error (exit 1) or UsageError with a message naming the file.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace plh {

struct CurveKeypair {
  std::string public_key;  // Z85, 40 chars
  std::string secret_key;  // Z85, 40 chars
};

// True when `key` is a 40-character Z85 string that decodes to 32 bytes.
bool is_z85_key(std::string_view key);

CurveKeypair generate_curve_keypair();
// Derives the public key from a Z85 secret key (UsageError when malformed).
std::string curve_public_key(const std::string& secret_key);

// Writes PREFIX.key (0600) and PREFIX.pub. Refuses to replace existing files unless
// `overwrite`. Returns the two paths written.
std::vector<std::string> write_curve_keypair(const std::string& prefix, const CurveKeypair& kp, bool overwrite);

// Reads a secret key file (PREFIX.key). Accepts the path itself or the prefix. With
// `require_private` (the broker's own key), a regular file that its group or other users
// may read or write is refused: RefusedError (exit 6) naming the file and its mode.
CurveKeypair read_curve_secret_file(const std::string& path, bool require_private = false);

// Reads an allow-list: one Z85 public key per line; '#' comments and blank lines are
// skipped; a malformed line is an error naming the line number.
std::vector<std::string> read_allowed_keys(const std::string& path);

// The first line of a token file, surrounding whitespace removed (UsageError if empty).
// `require_private` as for read_curve_secret_file (the broker's admin token).
std::string read_token_file(const std::string& path, bool require_private = false);

// The client keypair for CURVE connections: read from the file given to
// set_client_key_file (the tools' --client-key) when set, else from PLH_CLIENT_KEY=@PATH
// (a secret key file from `plh-ctl keygen`, or its prefix) when set, else a fresh
// ephemeral keypair. UsageError naming the file when it cannot be read.
CurveKeypair client_keypair_from_env();
// The process's own key file from now on ("PATH" or "@PATH"; the --client-key option, set
// while parsing, before any connection is made; not for use while other threads connect).
void set_client_key_file(const std::string& path);

}  // namespace plh
