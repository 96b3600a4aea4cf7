// Safety nets around apply: anti-lockout for SSH callers, and commit-confirmed applies whose
// revert survives the applying process and its terminal.
#pragma once

#include <string>
#include <vector>

#include "policy/policy.h"
#include "util/status.h"

namespace mw {

/// An SSH session to this host: the client's address and the local port it reached.
struct SshSession {
  std::string client;
  uint16_t port = 0;
  std::string source;  ///< "SSH_CONNECTION" or "/proc/net/tcp"
};

/// The caller's SSH_CONNECTION plus established TCP connections to the SSH port(s) (22 and the
/// SSH_CONNECTION's port) found in `proc_net_tcp` texts (/proc/net/tcp, /proc/net/tcp6).
std::vector<SshSession> FindSshSessions(const char* ssh_connection, const std::vector<std::string>& proc_net_tcp);
std::vector<SshSession> FindSshSessions();

/// The sessions that matter for `policy`: /proc/net/tcp is only read (it can take milliseconds
/// on a busy host) when the policy closes port 22 or the SSH_CONNECTION's port.
std::vector<SshSession> SshSessionsFor(const Policy& policy);

/// Refuses (Code::kRefused, with an explanation) a policy that would close the port of an SSH
/// session to its client's address.
Status CheckLockout(const Policy& policy, const std::vector<SshSession>& sessions);

/// A pending commit-confirmed apply: STATE_DIR/pending-confirm.
struct PendingConfirm {
  std::string snapshot;   ///< the snapshot to restore
  long long deadline = 0; ///< unix seconds
  int pid = 0;            ///< the watchdog
};
bool ReadPending(const std::string& state_dir, PendingConfirm* out);

/// Writes the pending record and starts a detached watchdog (own session, no terminal, SIGHUP
/// ignored) that restores `snapshot` at the deadline unless `mailward confirm` ran first.
Status StartConfirmWatchdog(const std::string& state_dir, const std::string& snapshot, int seconds);

/// Confirms: removes the pending record, so the watchdog exits without reverting. False when
/// nothing was pending. REQUIRES: the caller holds the state directory's lock.
bool ConfirmPending(const std::string& state_dir);

}  // namespace mw
