#include "cli/safety.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "backend/backend.h"
#include "util/fs.h"

namespace mw {
namespace {

std::string PendingPath(const std::string& dir) { return dir + "/pending-confirm"; }

/// "0100007F:0016" style address from /proc/net/tcp into text; IPv6 in 4 host-order words.
std::string ProcAddr(const std::string& hex) {
  if (hex.size() == 8) {
    uint32_t v = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
    in_addr a{v};  // already in network order as the kernel printed the raw u32
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, buf, sizeof buf);
    return buf;
  }
  if (hex.size() == 32) {
    in6_addr a;
    for (int w = 0; w < 4; ++w) {
      uint32_t v = static_cast<uint32_t>(std::stoul(hex.substr(w * 8, 8), nullptr, 16));
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

std::vector<SshSession> FindSshSessions(const char* ssh_connection, const std::vector<std::string>& proc_net_tcp) {
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
  for (const auto& text : proc_net_tcp) {
    std::istringstream in(text);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, st;
      if (!(f >> sl >> local >> remote >> st) || st != "01") continue;  // ESTABLISHED
      auto lc = local.find(':'), rc = remote.find(':');
      if (lc == std::string::npos || rc == std::string::npos) continue;
      uint16_t lport = static_cast<uint16_t>(std::stoul(local.substr(lc + 1), nullptr, 16));
      if (std::find(ports.begin(), ports.end(), lport) == ports.end()) continue;
      std::string client = ProcAddr(remote.substr(0, rc));
      if (client.empty()) continue;
      bool dup = false;
      for (const auto& s : out) dup |= s.client == client && s.port == lport;
      if (!dup) out.push_back({client, lport, "/proc/net/tcp"});
    }
  }
  return out;
}

std::vector<SshSession> FindSshSessions() {
  std::vector<std::string> texts;
  for (const char* p : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    auto t = ReadFile(p);
    if (t.ok()) texts.push_back(*t);
  }
  return FindSshSessions(std::getenv("SSH_CONNECTION"), texts);
}

std::vector<SshSession> SshSessionsFor(const Policy& policy) {
  const char* env = std::getenv("SSH_CONNECTION");
  auto from_env = FindSshSessions(env, {});
  for (const auto& p : policy.ports) {
    if (p.state != PortState::kClosed) continue;
    bool ssh_port = p.port == 22;
    for (const auto& s : from_env) ssh_port |= s.port == p.port;
    if (ssh_port) return FindSshSessions();
  }
  return from_env;
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

bool ReadPending(const std::string& state_dir, PendingConfirm* out) {
  auto t = ReadFile(PendingPath(state_dir));
  if (!t.ok()) return false;
  auto j = nlohmann::json::parse(*t, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  out->snapshot = j.value("snapshot", "");
  out->deadline = j.value("deadline", 0LL);
  out->pid = j.value("pid", 0);
  return !out->snapshot.empty();
}

namespace {

void Log(const std::string& state_dir, const std::string& msg) {
  std::string path = state_dir + "/confirm.log";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return;
  char ts[32];
  std::time_t now = std::time(nullptr);
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::string line = std::string(ts) + " " + msg + "\n";
  (void)!write(fd, line.data(), line.size());
  close(fd);
}

/// The watchdog's life: wait, then revert unless confirmed. Never returns.
[[noreturn]] void Watchdog(const std::string& state_dir, const std::string& snapshot, long long deadline) {
  for (;;) {
    PendingConfirm p;
    if (!ReadPending(state_dir, &p) || p.snapshot != snapshot || p.pid != getpid()) _exit(0);  // confirmed
    if (std::time(nullptr) >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Take the apply lock so the revert never interleaves with an apply or a rollback.
  int lock = open((state_dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock >= 0) flock(lock, LOCK_EX);
  PendingConfirm p;
  if (!ReadPending(state_dir, &p) || p.snapshot != snapshot || p.pid != getpid()) _exit(0);  // confirmed meanwhile
  auto bytes = ReadFile(snapshot);
  std::string att;
  auto a = ReadFile(snapshot.substr(0, snapshot.size() - 5) + ".elements");
  if (a.ok()) att = *a;
  Status s = bytes.ok() ? BackendForSnapshot(*bytes, BackendConfig{state_dir})->Restore(*bytes, att) : bytes.status();
  unlink(PendingPath(state_dir).c_str());
  Log(state_dir, s.ok() ? "not confirmed in time: reverted to " + snapshot : "not confirmed in time: REVERT FAILED: " + s.message());
  _exit(s.ok() ? 0 : 1);
}

}  // namespace

Status StartConfirmWatchdog(const std::string& state_dir, const std::string& snapshot, int seconds) {
  long long deadline = static_cast<long long>(std::time(nullptr)) + seconds;
  int ready[2];
  if (pipe(ready) != 0) return Status::Io("pipe failed");
  pid_t child = fork();
  if (child < 0) return Status::Io(std::string("fork failed: ") + std::strerror(errno));
  if (child == 0) {
    // First child: a new session (no controlling terminal), then fork again so the watchdog is
    // not a session leader and is reparented away from the caller.
    setsid();
    pid_t grandchild = fork();
    if (grandchild != 0) _exit(grandchild < 0 ? 1 : 0);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    // Drop every inherited descriptor (the caller's lock among them) except the ready pipe.
    for (int fd = 3; fd < 1024; ++fd)
      if (fd != ready[1]) close(fd);
    // Record ourselves as the pending watchdog, then tell the caller.
    nlohmann::json j = {{"snapshot", snapshot}, {"deadline", deadline}, {"pid", getpid()}};
    Status w = WriteFileAtomic(PendingPath(state_dir), j.dump() + "\n", Durability::kFsync);
    char ok = w.ok() ? 'y' : 'n';
    (void)!write(ready[1], &ok, 1);
    close(ready[1]);
    if (!w.ok()) _exit(1);
    Log(state_dir, "apply pending confirmation; reverts to " + snapshot + " in " + std::to_string(seconds) + " s");
    Watchdog(state_dir, snapshot, deadline);
  }
  close(ready[1]);
  int status = 0;
  waitpid(child, &status, 0);
  char ok = 'n';
  ssize_t n = read(ready[0], &ok, 1);
  close(ready[0]);
  if (n != 1 || ok != 'y') return Status::Io("could not start the confirm watchdog");
  return Status::Ok();
}

bool ConfirmPending(const std::string& state_dir) {
  PendingConfirm p;
  if (!ReadPending(state_dir, &p)) return false;
  // The watchdog sees the record gone and exits; the caller holds the lock, so a revert cannot
  // be half-way through.
  unlink(PendingPath(state_dir).c_str());
  Log(state_dir, "confirmed");
  return true;
}

}  // namespace mw
