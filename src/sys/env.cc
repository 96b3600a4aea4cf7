#include "sys/env.h"

#include "util/fs.h"

#include <fcntl.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <ctime>
#include <thread>

#include "sys/tcp_table.h"
#include "sys/test_hooks.h"

namespace mw::sys {
namespace {

class FdLock : public FileLock {
 public:
  explicit FdLock(int fd) : fd_(fd) {}
  ~FdLock() override { close(fd_); }
  FdLock(const FdLock&) = delete;
  FdLock& operator=(const FdLock&) = delete;

 private:
  int fd_;
};

class PosixEnv : public Env {
 public:
  Result<std::string> ReadFile(const std::string& path, Follow follow) override { return mw::ReadFile(path, follow); }
  Result<std::string> TcpTable(int family) override { return TcpTableText(family); }
  std::optional<unsigned> FileMode(const std::string& path) override {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return std::nullopt;
    return st.st_mode & 07777;
  }
  Status WriteFileAtomic(const std::string& path, const std::string& data, Durability durability,
                         unsigned mode) override {
    return mw::WriteFileAtomic(path, data, durability, mode);
  }
  bool Exists(const std::string& path) override { return mw::Exists(path); }
  Status RemoveFile(const std::string& path) override {
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return Status::Io(path + ": cannot remove: " + std::strerror(errno));
    return Status::Ok();
  }
  Status Link(const std::string& from, const std::string& to) override {
    if (link(from.c_str(), to.c_str()) != 0) return Status::Io(to + ": cannot link " + from + ": " + std::strerror(errno));
    return Status::Ok();
  }
  Result<std::vector<std::string>> ListFiles(const std::string& dir, const std::string& suffix) override {
    return mw::ListFiles(dir, suffix);
  }
  std::optional<EntryKind> Lstat(const std::string& path) override {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return std::nullopt;
    if (S_ISLNK(st.st_mode)) return EntryKind::kSymlink;
    if (S_ISDIR(st.st_mode)) return EntryKind::kDirectory;
    if (S_ISREG(st.st_mode)) return EntryKind::kRegular;
    return EntryKind::kOther;
  }
  std::vector<std::string> ListEntries(const std::string& dir) override {
    std::vector<std::string> out;
    DIR* d = opendir(dir.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
  }
  std::optional<std::string> ReadLink(const std::string& path) override {
    char buf[4096];
    ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
    if (n <= 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
  }
  void AppendFile(const std::string& path, const std::string& data) override {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return;
    (void)!write(fd, data.data(), data.size());
    close(fd);
  }
  Status MakeDirs(const std::string& path) override { return mw::MakeDirs(path); }
  Status CheckTrusted(const std::string& path, TrustedKind kind) override { return mw::CheckTrusted(path, kind); }
  Result<std::unique_ptr<FileLock>> TryLock(const std::string& path, LockInherit inherit) override {
    // Without O_CLOEXEC the programs run while it is held inherit it (and keep it held).
    // A regular file only (a FIFO or device planted there is refused, never opened blocking).
    int fd = mw::OpenStateFile(path, O_RDWR | O_CREAT);
    if (fd >= 0 && inherit != LockInherit::kNo) fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) & ~FD_CLOEXEC);
    if (fd < 0)
      return Status::Io(std::string(std::strerror(errno)) +
                        (errno == ELOOP || errno == EINVAL ? " (not a regular file: remove it)" : ""));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      close(fd);
      return std::unique_ptr<FileLock>();
    }
    return std::unique_ptr<FileLock>(std::make_unique<FdLock>(fd));
  }
  /// One descriptor for the whole wait (others see who waits on the lock, in /proc/PID/fd).
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path, double timeout_s, int poll_ms,
                                             LockInherit inherit, const std::string& busy_message) override {
    // A regular file only (a FIFO or device planted there is refused, never opened blocking).
    int fd = mw::OpenStateFile(path, O_RDWR | O_CREAT);
    if (fd >= 0 && inherit != LockInherit::kNo) fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) & ~FD_CLOEXEC);
    if (fd < 0)
      return Status::Io(std::string(std::strerror(errno)) +
                        (errno == ELOOP || errno == EINVAL ? " (not a regular file: remove it)" : ""));
    const int64_t deadline = MonotonicMs() + static_cast<int64_t>(timeout_s * 1000);
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (MonotonicMs() >= deadline) {
        close(fd);
        return Status::Error(Code::kBusy, busy_message);
      }
      SleepMs(poll_ms);
    }
    return std::unique_ptr<FileLock>(std::make_unique<FdLock>(fd));
  }
  ProcessResult Run(const std::vector<std::string>& argv, const std::string& input) override {
    if (auto injected = InjectedRunFailure(argv)) {
      ProcessResult r;
      r.status = 1;
      r.err = *injected;
      return r;
    }
    return RunProcess(argv, input);
  }
  bool HaveProgram(const std::string& name) override { return mw::HaveProgram(name); }
  std::optional<std::string> GetEnv(const std::string& name) override {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  }
  int64_t MonotonicMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  int64_t UnixSeconds() override {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  int64_t UnixMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  void SleepMs(int64_t ms) override { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
  int64_t BootMs() override {
    timespec ts{};
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  }
};

}  // namespace

Env& RealEnv() {
  static PosixEnv* env = new PosixEnv;  // never destroyed: used until exit
  return *env;
}

std::string BootId(Env& env) {
  auto t = env.ReadFile("/proc/sys/kernel/random/boot_id");
  if (!t.ok()) return "";
  std::string s = *t;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Result<std::unique_ptr<FileLock>> Env::LockFile(const std::string& path, double timeout_s, int poll_ms,
                                                LockInherit inherit, const std::string& busy_message) {
  const int64_t deadline = MonotonicMs() + static_cast<int64_t>(timeout_s * 1000);
  for (;;) {
    auto lock = TryLock(path, inherit);
    if (!lock.ok() || *lock) return lock;
    if (MonotonicMs() >= deadline) return Status::Error(Code::kBusy, busy_message);
    SleepMs(poll_ms);
  }
}

}  // namespace mw::sys
