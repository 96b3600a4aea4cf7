// ops/: anti-lockout. An apply over SSH must not close the port of the caller's own session (or
// any SSH session) to its client: the sessions are found from SSH_CONNECTION, the TCP table and
// sshd's sockets (through sys::Env), and a policy that would cut one is refused without --force.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "policy/policy.h"
#include "sys/env.h"
#include "util/status.h"

namespace mw::ops {

/// An SSH session to this host: the client's address and the local port it reached.
struct SshSession {
  std::string client;
  uint16_t port = 0;
  std::string source;  ///< "SSH_CONNECTION", "sshd" (a connection sshd holds) or "the TCP table" (port 22)
};

/// The caller's SSH_CONNECTION plus the established TCP connections, in `proc_net_tcp` texts
/// (/proc/net/tcp, /proc/net/tcp6), that are SSH sessions: to port 22, to the SSH_CONNECTION's
/// port, to a port sshd listens on, or held by sshd itself (`sshd_inodes`: the socket inodes
/// of processes whose comm is sshd, so sshd on 2222 or socket-activated sshd are found too).
std::vector<SshSession> FindSshSessions(const char* ssh_connection, const std::vector<std::string>& proc_net_tcp,
                                        const std::set<uint64_t>& sshd_inodes = {});
std::vector<SshSession> FindSshSessions(sys::Env& env = sys::RealEnv());

/// The socket inodes held open by processes whose comm is sshd (or sshd-session), from
/// /proc/*/fd (root can read them all).
std::set<uint64_t> SshdSocketInodes(sys::Env& env = sys::RealEnv());

/// The sessions that matter for `policy`: /proc is only read when the policy closes a port.
std::vector<SshSession> SshSessionsFor(const Policy& policy, sys::Env& env = sys::RealEnv());

/// Refuses (Code::kRefused, with an explanation) a policy that would close the port of an SSH
/// session to its client's address.
Status CheckLockout(const Policy& policy, const std::vector<SshSession>& sessions);

}  // namespace mw::ops
