// Safety nets around apply: anti-lockout for SSH callers, and commit-confirmed applies whose
// revert survives the applying process and its terminal.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "policy/policy.h"
#include "util/status.h"

namespace mw {

/// An SSH session to this host: the client's address and the local port it reached.
struct SshSession {
  std::string client;
  uint16_t port = 0;
  std::string source;  ///< "SSH_CONNECTION", "sshd" (a connection sshd holds) or "/proc/net/tcp" (port 22)
};

/// The caller's SSH_CONNECTION plus the established TCP connections, in `proc_net_tcp` texts
/// (/proc/net/tcp, /proc/net/tcp6), that are SSH sessions: to port 22, to the SSH_CONNECTION's
/// port, to a port sshd listens on, or held by sshd itself (`sshd_inodes`: the socket inodes
/// of processes whose comm is sshd, so sshd on 2222 or socket-activated sshd are found too).
std::vector<SshSession> FindSshSessions(const char* ssh_connection, const std::vector<std::string>& proc_net_tcp,
                                        const std::set<uint64_t>& sshd_inodes = {});
std::vector<SshSession> FindSshSessions();

/// The socket inodes held open by processes whose comm is sshd (or sshd-session), from
/// /proc/*/fd (root can read them all).
std::set<uint64_t> SshdSocketInodes();

/// The sessions that matter for `policy`: /proc is only read when the policy closes a port.
std::vector<SshSession> SshSessionsFor(const Policy& policy);

/// Refuses (Code::kRefused, with an explanation) a policy that would close the port of an SSH
/// session to its client's address.
Status CheckLockout(const Policy& policy, const std::vector<SshSession>& sessions);

/// A pending commit-confirmed apply: STATE_DIR/pending-confirm.
struct PendingConfirm {
  std::string snapshot;      ///< the snapshot to restore
  long long deadline = 0;    ///< unix seconds, for people (the watchdog uses deadline_ms)
  long long deadline_ms = 0; ///< CLOCK_BOOTTIME milliseconds: immune to clock steps
  int pid = 0;               ///< the watchdog
  std::string boot_id;       ///< /proc/sys/kernel/random/boot_id when it was armed
  int seconds = 0;           ///< the --confirm time
  bool committed = false;    ///< the apply committed (the deadline counts from the commit)
};
/// False when there is none, or it is not a record mailward wrote (unparsable, or its snapshot
/// is not one of STATE_DIR/snapshots/<digits>.snap).
bool ReadPending(const std::string& state_dir, PendingConfirm* out);

/// Whether STATE_DIR/pending-confirm exists at all (readable or not). A record that exists but
/// cannot be read is still a pending confirm to its watchdog.
bool PendingRecordExists(const std::string& state_dir);
/// Whether any watchdog of this state directory still runs (holds its watchdog-<pid>.lock).
bool AnyWatchdogAlive(const std::string& state_dir);

/// This boot's /proc/sys/kernel/random/boot_id ("" when unreadable).
std::string BootId();
/// CLOCK_BOOTTIME in milliseconds.
long long BootMs();

/// A pending confirm nobody will ever resolve: armed in another boot, or its watchdog process
/// is gone (it no longer holds STATE_DIR/watchdog-<pid>.lock). `why` says which.
bool PendingIsStale(const std::string& state_dir, const PendingConfirm& p, std::string* why);

/// Resolves a stale pending confirm as not confirmed: restores its snapshot (the last confirmed
/// state), removes the record and logs it. REQUIRES: the caller holds the state directory's lock.
Status ResolveStalePending(const std::string& state_dir, const PendingConfirm& p, const std::string& why);

/// Arms a commit-confirmed apply BEFORE its batch is committed: starts a detached watchdog (own
/// session, no terminal, SIGHUP ignored, named mailward-watch) that writes the pending record
/// durably and then restores `snapshot` at the deadline (`seconds` from now until
/// CommitPending moves it) unless the record is confirmed or disarmed first. Whatever happens to
/// the applying process afterwards, the revert happens.
Status ArmConfirm(const std::string& state_dir, const std::string& snapshot, int seconds);

/// The batch committed: the deadline becomes `seconds` from now.
Status CommitPending(const std::string& state_dir, int seconds);

/// The apply changed nothing or put the old state back itself: the watchdog exits without
/// reverting. `why` goes to confirm.log.
void DisarmConfirm(const std::string& state_dir, const std::string& why);

/// Confirms: removes the pending record (a damaged one too), so the watchdog exits without
/// reverting, and logs `how` ("confirmed" by default). False when nothing was pending.
/// REQUIRES: the caller holds the state directory's lock.
bool ConfirmPending(const std::string& state_dir, const std::string& how = "confirmed");

/// Ends a pending confirm some other way (a rollback): removes the record and logs `line`.
void EndPending(const std::string& state_dir, const std::string& line);

/// Test hook: calls mailward_test_pause_point(point) when a test preloads the library that
/// defines it (tests/hooks: it stops the process there so a test can kill it at exactly that
/// moment); does nothing otherwise. It never changes what a command does.
void TestPausePoint(const char* point);

}  // namespace mw
