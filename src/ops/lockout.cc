#include "ops/lockout.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>


namespace mw::ops {
namespace {

/// Exactly 8 hex digits into a u32; false on anything else (no exception on a malformed row).
bool ParseHex32(const std::string& hex, uint32_t* out) {
  if (hex.size() != 8) return false;
  uint32_t v = 0;
  for (char c : hex) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | static_cast<uint32_t>(d);
  }
  *out = v;
  return true;
}

/// "0100007F:0016" style address from /proc/net/tcp into text; IPv6 in 4 host-order words.
/// "" when it is not one (the row is skipped).
std::string ProcAddr(const std::string& hex) {
  if (hex.size() == 8) {
    uint32_t v = 0;
    if (!ParseHex32(hex, &v)) return "";
    in_addr a{v};  // already in network order as the kernel printed the raw u32
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, buf, sizeof buf);
    return buf;
  }
  if (hex.size() == 32) {
    in6_addr a;
    for (int w = 0; w < 4; ++w) {
      uint32_t v = 0;
      if (!ParseHex32(hex.substr(w * 8, 8), &v)) return "";
      std::memcpy(&a.s6_addr[w * 4], &v, 4);
    }
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a, buf, sizeof buf);
    std::string s = buf;
    if (s.rfind("::ffff:", 0) == 0 && s.find('.') != std::string::npos) s = s.substr(7);  // v4-mapped
    return s;
  }
  return "";
}

}  // namespace

namespace {

struct TcpLine {
  std::string local, remote, state;
  uint16_t lport = 0;
  uint64_t inode = 0;
};

/// The rows of /proc/net/tcp{,6} texts; malformed rows are skipped.
std::vector<TcpLine> ParseTcp(const std::vector<std::string>& texts) {
  std::vector<TcpLine> out;
  for (const auto& text : texts) {
    std::istringstream in(text);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, txrx, trtm, retr, uid, timeout, inode;
      TcpLine t;
      if (!(f >> sl >> t.local >> t.remote >> t.state)) continue;
      if (f >> txrx >> trtm >> retr >> uid >> timeout >> inode) t.inode = std::strtoull(inode.c_str(), nullptr, 10);
      auto lc = t.local.find(':');
      if (lc == std::string::npos || t.remote.find(':') == std::string::npos) continue;
      char* end = nullptr;
      unsigned long v = std::strtoul(t.local.c_str() + lc + 1, &end, 16);
      if (end == t.local.c_str() + lc + 1 || v > 65535) continue;
      t.lport = static_cast<uint16_t>(v);
      out.push_back(std::move(t));
    }
  }
  return out;
}

}  // namespace

namespace {

/// FindSshSessions on rows already parsed.
std::vector<SshSession> SessionsIn(const char* ssh_connection, const std::vector<TcpLine>& rows,
                                   const std::set<uint64_t>& sshd_inodes) {
  std::vector<SshSession> out;
  std::vector<uint16_t> ports = {22};
  if (ssh_connection && *ssh_connection) {
    std::istringstream in(ssh_connection);
    std::string client, cport, server;
    unsigned sport = 0;
    if (in >> client >> cport >> server >> sport && sport > 0 && sport < 65536) {
      out.push_back({client, static_cast<uint16_t>(sport), "SSH_CONNECTION"});
      if (sport != 22) ports.push_back(static_cast<uint16_t>(sport));
    }
  }
  // The ports sshd listens on, whatever they are.
  std::vector<uint16_t> sshd_ports;
  for (const auto& r : rows)
    if (r.state == "0A" && r.inode && sshd_inodes.count(r.inode)) sshd_ports.push_back(r.lport);
  for (const auto& r : rows) {
    if (r.state != "01") continue;  // ESTABLISHED
    bool by_sshd = (r.inode && sshd_inodes.count(r.inode)) ||
                   std::find(sshd_ports.begin(), sshd_ports.end(), r.lport) != sshd_ports.end();
    if (!by_sshd && std::find(ports.begin(), ports.end(), r.lport) == ports.end()) continue;
    std::string client = ProcAddr(r.remote.substr(0, r.remote.find(':')));
    if (client.empty()) continue;
    bool dup = false;
    for (const auto& s : out) dup |= s.client == client && s.port == r.lport;
    if (!dup) out.push_back({client, r.lport, by_sshd ? "sshd" : "the TCP table"});
  }
  return out;
}

}  // namespace

std::vector<SshSession> FindSshSessions(const char* ssh_connection, const std::vector<std::string>& proc_net_tcp,
                                        const std::set<uint64_t>& sshd_inodes) {
  return SessionsIn(ssh_connection, ParseTcp(proc_net_tcp), sshd_inodes);
}

std::set<uint64_t> SshdSocketInodes(sys::Env& env) {
  std::set<uint64_t> out;
  for (const auto& pid : env.ListEntries("/proc")) {
    if (pid.empty() || pid[0] < '0' || pid[0] > '9') continue;
    const std::string dir = "/proc/" + pid;
    auto comm = env.ReadFile(dir + "/comm");
    if (!comm.ok()) continue;
    std::string c = *comm;
    if (!c.empty() && c.back() == '\n') c.pop_back();
    if (c != "sshd" && c.rfind("sshd-", 0) != 0) continue;  // sshd, sshd-session (OpenSSH >= 9.8)
    for (const auto& fd : env.ListEntries(dir + "/fd")) {
      if (fd.empty() || fd[0] == '.') continue;
      auto target = env.ReadLink(dir + "/fd/" + fd);
      if (!target) continue;
      unsigned long long inode = 0;
      if (std::sscanf(target->c_str(), "socket:[%llu]", &inode) == 1) out.insert(inode);
    }
  }
  return out;
}

namespace {

std::vector<std::string> ReadTcpTables(sys::Env& env) {
  std::vector<std::string> texts;
  for (int family : {AF_INET, AF_INET6}) {
    auto t = env.TcpTable(family);
    if (t.ok()) texts.push_back(*t);
  }
  return texts;
}

}  // namespace

std::vector<SshSession> FindSshSessions(sys::Env& env) {
  auto texts = ReadTcpTables(env);
  auto conn = env.GetEnv("SSH_CONNECTION");
  return FindSshSessions(conn ? conn->c_str() : nullptr, texts, SshdSocketInodes(env));
}

std::vector<SshSession> SshSessionsFor(const Policy& policy, sys::Env& env) {
  // sshd may listen on any port, so any closed port may cut a session. Only a policy that
  // closes nothing, or a host with no established connection to a port the policy closes, can
  // skip looking for sshd's sockets in /proc/*/fd.
  std::vector<uint16_t> closed;
  for (const auto& p : policy.ports)
    if (p.state == PortState::kClosed) closed.push_back(p.port);
  auto conn = env.GetEnv("SSH_CONNECTION");
  const char* ssh_connection = conn ? conn->c_str() : nullptr;
  if (closed.empty()) return FindSshSessions(ssh_connection, {});
  auto rows = ParseTcp(ReadTcpTables(env));
  bool candidate = false;
  for (const auto& r : rows)
    candidate |= r.state == "01" && std::find(closed.begin(), closed.end(), r.lport) != closed.end();
  return SessionsIn(ssh_connection, rows, candidate ? SshdSocketInodes(env) : std::set<uint64_t>{});
}

Status CheckLockout(const Policy& policy, const std::vector<SshSession>& sessions) {
  for (const auto& s : sessions) {
    for (const auto& p : policy.ports) {
      if (p.port != s.port || p.state != PortState::kClosed) continue;
      bool loopback = s.client.rfind("127.", 0) == 0 || s.client == "::1";  // loopback is exempt
      if (loopback || InAllowlists(policy, p, s.client)) continue;
      return Status::Error(Code::kRefused,
                           "refusing to apply: the policy closes port " + std::to_string(s.port) + " ('" + p.name +
                               "' at " + p.where.ToString() + ") to " + s.client + ", which is connected over SSH to "
                               "that port right now (" + s.source + "); this would lock the session out. Add " +
                               s.client + " to one of its allow lists, or pass --force if you really mean it; nothing "
                               "was applied");
    }
  }
  return Status::Ok();
}

}  // namespace mw::ops
