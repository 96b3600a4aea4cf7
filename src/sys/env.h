// sys/: the seams to the outside world. Env is everything mailward asks of the operating system
// besides netlink and sockets: files, locks, processes, environment variables and the clock.
// RealEnv() is the POSIX implementation; tests/fakes/fake_env.h is the in-memory one (files in a
// map, scripted process results, a clock the test moves), so backends, the state directory and
// the apply transaction are unit-tested without a kernel, root or the real tools.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "util/fs.h"
#include "util/process.h"
#include "util/status.h"

namespace mw::sys {

/// An exclusive lock on a file (flock), held until the handle is destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

/// What a path is, without following a symlink there (lstat).
enum class EntryKind { kRegular, kDirectory, kSymlink, kOther };

/// Whether the programs run while a lock is held inherit (and so keep holding) it.
enum class LockInherit { kNo, kByChildren };

/// The operating system, as mailward uses it. Every call is a seam a test can script; none
/// throws. Paths are absolute or relative to the working directory, as POSIX takes them.
class Env {
 public:
  virtual ~Env() = default;

  // --- Files ---
  /// Reads a whole regular file (util/fs.h ReadFile: FIFOs and devices refused at once).
  virtual Result<std::string> ReadFile(const std::string& path, Follow follow = Follow::kSymlinks) = 0;
  /// The permission bits (mode & 07777) of a file; nullopt when it cannot be stat'ed.
  virtual std::optional<unsigned> FileMode(const std::string& path) = 0;
  /// Writes atomically (a temporary file then rename; fsynced with Durability::kFsync).
  virtual Status WriteFileAtomic(const std::string& path, const std::string& data, Durability durability,
                                 unsigned mode = 0600) = 0;
  virtual bool Exists(const std::string& path) = 0;
  /// Removes a file; a missing one is OK.
  virtual Status RemoveFile(const std::string& path) = 0;
  /// Creates a hard link `to` for the existing file `from`.
  virtual Status Link(const std::string& from, const std::string& to) = 0;
  /// The regular files in `dir` ending with `suffix`, sorted (util/fs.h ListFiles).
  virtual Result<std::vector<std::string>> ListFiles(const std::string& dir, const std::string& suffix) = 0;
  /// What `path` itself is (a symlink is not followed); nullopt when it does not exist.
  virtual std::optional<EntryKind> Lstat(const std::string& path) = 0;
  /// The names of every entry in `dir` (files, directories, symlinks...; no "." or ".."),
  /// sorted; empty when it cannot be read.
  virtual std::vector<std::string> ListEntries(const std::string& dir) = 0;
  /// The target of a symlink (readlink); nullopt when `path` is not one or cannot be read.
  virtual std::optional<std::string> ReadLink(const std::string& path) = 0;
  /// Appends `data` to a log file (created 0600, never through a symlink); best effort.
  virtual void AppendFile(const std::string& path, const std::string& data) = 0;
  /// Creates a directory and its parents (mode 0700 for new ones).
  virtual Status MakeDirs(const std::string& path) = 0;
  /// util/fs.h CheckTrusted: as root, whether `path` and the directories above it are root's
  /// and not writable by others.
  virtual Status CheckTrusted(const std::string& path, TrustedKind kind) = 0;
  /// Takes the exclusive lock on `path` (created 0600, never through a symlink) if it is free:
  /// a handle; nullptr when another holds it; an error (Code::kIo) when it cannot be opened.
  virtual Result<std::unique_ptr<FileLock>> TryLock(const std::string& path, LockInherit inherit) = 0;

  /// Takes the exclusive lock on `path`, waiting (polling every `poll_ms`) up to `timeout_s`
  /// seconds (0: one try). Code::kBusy with `busy_message` when it stays held; Code::kIo when
  /// it cannot be opened. The default polls TryLock; RealEnv keeps one descriptor for the wait.
  virtual Result<std::unique_ptr<FileLock>> LockFile(const std::string& path, double timeout_s, int poll_ms,
                                                     LockInherit inherit, const std::string& busy_message);

  // --- Processes ---
  /// Runs argv[0] (looked up in PATH) with `input` on stdin; never through a shell.
  virtual ProcessResult Run(const std::vector<std::string>& argv, const std::string& input = "") = 0;
  /// Whether `name` is an executable in PATH.
  virtual bool HaveProgram(const std::string& name) = 0;
  /// An environment variable; nullopt when unset.
  virtual std::optional<std::string> GetEnv(const std::string& name) = 0;

  // --- Network ---
  /// The ESTABLISHED and LISTEN TCP sockets of `family` (AF_INET, AF_INET6) in this network
  /// namespace, in /proc/net/tcp{,6}'s text format (sys/tcp_table.h).
  virtual Result<std::string> TcpTable(int family) = 0;

  // --- Clock ---
  /// A monotonic clock in milliseconds (for timeouts; unrelated to the time of day).
  virtual int64_t MonotonicMs() = 0;
  /// Seconds since the epoch (for records people read).
  virtual int64_t UnixSeconds() = 0;
  /// Milliseconds since the epoch (for log lines people read).
  virtual int64_t UnixMs() = 0;
  virtual void SleepMs(int64_t ms) = 0;
  /// CLOCK_BOOTTIME in milliseconds: counts suspend too, shared by every process of this boot
  /// (commit-confirm deadlines are kept in it).
  virtual int64_t BootMs() = 0;
};

/// The process's real operating system. Lives as long as the program.
Env& RealEnv();

/// This boot's id (/proc/sys/kernel/random/boot_id, trimmed); "" when it cannot be read.
std::string BootId(Env& env);

}  // namespace mw::sys
