// One function per command. Each prints its own report and returns the process exit code of
// SPEC.md; main() only parses arguments.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "util/status.h"

namespace mw {

struct GlobalOptions {
  std::string policy = "/etc/mailward/policy.yaml";
  std::string backend;  ///< empty: the policy's choice
  std::string state_dir = "/var/lib/mailward";
  std::string format = "text";
  bool quiet = false;
  bool verbose = false;
  double lock_timeout = 60;  ///< seconds a second apply waits for the first
};

namespace exit_code {
inline constexpr int kOk = 0;
inline constexpr int kError = 1;
inline constexpr int kChanges = 2;  ///< plan: changes pending; check: drift or findings
inline constexpr int kVerifyFailed = 3;
}  // namespace exit_code

/// Reports a failed Status (stderr, and a JSON error document with --format json) and returns
/// `code`. The one place commands turn an error into output.
int ReportError(const GlobalOptions& g, const std::string& command, const Status& s, int code = exit_code::kError);

int CmdValidate(const GlobalOptions& g);
int CmdPlan(const GlobalOptions& g);
struct ApplyOptions {
  int confirm_seconds = 0;  ///< > 0: revert after this long unless `mailward confirm`
  bool auto_confirm = false;
  bool force = false;       ///< skip the anti-lockout refusal
  bool probe = true;        ///< probe the open ports locally after applying
};
int CmdApply(const GlobalOptions& g, const ApplyOptions& o);
int CmdConfirm(const GlobalOptions& g);
struct CheckOptions {
  bool probe = true;         ///< probe the open ports locally (--no-probe: skip)
  std::string metrics_file;  ///< Prometheus textfile output, written atomically
  /// Dovecot findings at this severity or worse fail the check (exit 2); milder ones are
  /// reported only. critical | high | medium | low | info.
  std::string fail_on = "info";
};
int CmdCheck(const GlobalOptions& g, const CheckOptions& o);
struct RollbackOptions {
  std::optional<uint64_t> to;  ///< --to ID: the state before that apply (default: the last one)
  bool dry_run = false;        ///< show what the restore would change, change nothing
};
int CmdRollback(const GlobalOptions& g, const RollbackOptions& o);
struct RemoveOptions {
  bool dry_run = false;  ///< show what would go, change nothing
};
/// Takes away everything mailward owns, on every backend it finds it on, after a snapshot each
/// (0 removed or nothing to remove; --dry-run: 0 nothing there, 2 something would go; 1 error).
int CmdRemove(const GlobalOptions& g, const RemoveOptions& o);
/// Whether this process has CAP_NET_ADMIN (root has it), which reading the firewall needs.
bool HaveNetAdmin();
/// An error naming root / CAP_NET_ADMIN when this process lacks it.
Status RequireNetAdmin(const std::string& command);
/// The rollback points, oldest first (0, 1).
int CmdSnapshots(const GlobalOptions& g);
/// The effective state of every port of the policy, like `ufw status verbose` (0, 1 on error).
int CmdStatus(const GlobalOptions& g);

}  // namespace mw
