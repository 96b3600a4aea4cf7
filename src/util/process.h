// Running other programs (iptables-restore, ipset, ufw, doveconf): argv only, never a shell.
#pragma once

#include <string>
#include <vector>

namespace mw {

struct ProcessResult {
  int status = -1;   ///< exit status; 127: not found; -1: could not run or killed by a signal
  std::string out;   ///< stdout
  std::string err;   ///< stderr
  bool ok() const { return status == 0; }
  /// stderr, or stdout when stderr is empty, trimmed: for error messages.
  std::string Message() const;
};

/// Runs argv[0] (looked up in PATH) with `input` on its stdin; collects stdout and stderr
/// separately without deadlocking on large outputs.
ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& input = "");

/// Whether `name` is an executable in PATH.
bool HaveProgram(const std::string& name);

}  // namespace mw
