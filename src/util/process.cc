#include "util/process.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <sstream>

namespace mw {

std::string ProcessResult::Message() const {
  std::string m = err.empty() ? out : err;
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  if (m.empty()) m = status == 127 ? "program not found" : "exit status " + std::to_string(status);
  return m;
}

bool HaveProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0;
  const char* path = getenv("PATH");
  std::stringstream ss(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':'))
    if (!dir.empty() && access((dir + "/" + name).c_str(), X_OK) == 0) return true;
  return false;
}

ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& input) {
  // A child that exits before reading all its input must not kill us with SIGPIPE.
  static const bool sigpipe_ignored = (signal(SIGPIPE, SIG_IGN), true);
  (void)sigpipe_ignored;
  ProcessResult r;
  if (argv.empty()) return r;
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0) return r;
  if (pipe2(out, O_CLOEXEC) != 0) { close(in[0]); close(in[1]); return r; }
  if (pipe2(err, O_CLOEXEC) != 0) { close(in[0]); close(in[1]); close(out[0]); close(out[1]); return r; }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // posix_spawn (vfork-like): no copy of this process's page tables, which matters when it
  // holds a 100,000-address policy and runs a handful of programs per apply.
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t dfl;
  sigemptyset(&dfl);
  sigaddset(&dfl, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &dfl);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &fa, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) close(fd);
    r.status = rc == ENOENT ? 127 : -1;
    r.err = std::string(args[0]) + ": " + std::strerror(rc);
    return r;
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  // Feed stdin and drain both outputs together: a child blocked on a full pipe never deadlocks us.
  int wfd = in[1];
  size_t written = 0;
  if (input.empty()) { close(wfd); wfd = -1; }
  else fcntl(wfd, F_SETFL, O_NONBLOCK);
  int open_fds = 2;
  int fds[2] = {out[0], err[0]};
  std::string* sinks[2] = {&r.out, &r.err};
  char buf[65536];
  while (open_fds > 0 || wfd >= 0) {
    pollfd p[3];
    int n = 0;
    int map[3];
    for (int i = 0; i < 2; ++i)
      if (fds[i] >= 0) { p[n] = {fds[i], POLLIN, 0}; map[n++] = i; }
    if (wfd >= 0) { p[n] = {wfd, POLLOUT, 0}; map[n++] = 2; }
    if (poll(p, static_cast<nfds_t>(n), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int k = 0; k < n; ++k) {
      if (!p[k].revents) continue;
      if (map[k] == 2) {
        ssize_t w = write(wfd, input.data() + written, input.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) { close(wfd); wfd = -1; }
        continue;
      }
      int i = map[k];
      ssize_t got = read(fds[i], buf, sizeof buf);
      if (got > 0) sinks[i]->append(buf, static_cast<size_t>(got));
      else if (got == 0 || (errno != EAGAIN && errno != EINTR)) { close(fds[i]); fds[i] = -1; --open_fds; }
    }
  }
  if (wfd >= 0) close(wfd);
  for (int fd : fds) if (fd >= 0) close(fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace mw
