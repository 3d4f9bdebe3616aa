#pragma once
// One error type for the whole suite. Every failure that reaches a tool's main carries
// the exit code the SPEC assigns to it; the tool's single top-level catch prints
// "plh-X: error: <message>" and returns that code.
#include <stdexcept>
#include <string>

namespace plh {

enum class ExitCode : int {
  ok = 0,
  failure = 1,      // runtime failure not covered below
  usage = 2,        // bad option, bad channel name, bad value
  timeout = 3,      // --timeout elapsed before the work was done
  not_found = 4,    // channel or segment not found
  unreachable = 5,  // broker unreachable
  refused = 6,      // schema mismatch, authentication failure, permission denied
  sigint = 130,
  sigterm = 143,
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode code() const noexcept { return code_; }

 private:
  ExitCode code_;
};

// Shorthands, so call sites read as what went wrong.
struct UsageError : Error {
  explicit UsageError(const std::string& m) : Error(ExitCode::usage, m) {}
};
struct TimeoutError : Error {
  explicit TimeoutError(const std::string& m) : Error(ExitCode::timeout, m) {}
};
struct NotFoundError : Error {
  explicit NotFoundError(const std::string& m) : Error(ExitCode::not_found, m) {}
};
struct UnreachableError : Error {
  explicit UnreachableError(const std::string& m) : Error(ExitCode::unreachable, m) {}
};
struct RefusedError : Error {
  explicit RefusedError(const std::string& m) : Error(ExitCode::refused, m) {}
};

// Thrown when stdout is closed by the reader (EPIPE): tools end quietly with exit 0.
struct BrokenPipe : Error {
  BrokenPipe() : Error(ExitCode::ok, "broken pipe") {}
};

// errno as text, for messages.
std::string errno_text(int err);

}  // namespace plh
