#include "util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mw {
namespace {
std::string Errno() { return std::strerror(errno); }
}  // namespace

std::string DirOf(const std::string& path) {
  auto pos = path.rfind('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::vector<std::string> SplitWords(const std::string& s, bool commas) {
  std::vector<std::string> out;
  std::string w;
  for (char c : s) {
    if (c == ' ' || c == '\t' || (commas && c == ',')) {
      if (!w.empty()) out.push_back(w);
      w.clear();
    } else {
      w += c;
    }
  }
  if (!w.empty()) out.push_back(w);
  return out;
}

Result<std::string> ReadFile(const std::string& path, Follow follow) {
  // stat first: a FIFO or a device is refused before open() could block on it or wake it.
  struct stat st;
  int st_rc = follow == Follow::kSymlinks ? stat(path.c_str(), &st) : lstat(path.c_str(), &st);
  if (st_rc == 0 && S_ISLNK(st.st_mode))
    return Status::Io(path + ": is a symlink, refused here (remove it; mailward writes its own files)");
  if (st_rc == 0 && !S_ISREG(st.st_mode))
    return Status::Io(path + (S_ISDIR(st.st_mode) ? ": is a directory" : ": not a regular file (a FIFO, socket or device)"));
  int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (follow == Follow::kNoSymlinks ? O_NOFOLLOW : 0);
  int fd = open(path.c_str(), flags);
  if (fd < 0) {
    if (errno == ELOOP && follow == Follow::kNoSymlinks)
      return Status::Io(path + ": is a symlink, refused here (remove it; mailward writes its own files)");
    return Status::Io(path + ": cannot open: " + Errno());
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    // Swapped since the stat: a directory, a device (/dev/zero would never end), a FIFO.
    bool dir = S_ISDIR(st.st_mode);
    close(fd);
    return Status::Io(path + (dir ? ": is a directory" : ": not a regular file (a FIFO, socket or device)"));
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  constexpr size_t kMaxRead = size_t{1} << 30;
  // Read straight into the string; grow when the file was larger than stat said (or /proc).
  std::string out;
  size_t used = 0;
  out.resize(st.st_size > 0 ? static_cast<size_t>(st.st_size) + 1 : 65536);
  for (;;) {
    if (used == out.size()) {
      if (out.size() >= kMaxRead) {
        close(fd);
        return Status::Io(path + ": larger than 1 GiB");
      }
      out.resize(out.size() * 2);
    }
    ssize_t n = read(fd, out.data() + used, out.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string e = Errno();
      close(fd);
      return Status::Io(path + ": read failed: " + e);
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  out.resize(used);
  close(fd);
  return out;
}

Status WriteFileAtomic(const std::string& path, const std::string& data, Durability durability,
                       unsigned mode) {
  // mkostemp: O_CREAT|O_EXCL under a random name, so nobody can plant a symlink there first.
  std::string tmp = path + ".tmp.XXXXXX";
  int fd = mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return Status::Io(path + ": cannot create a temporary file beside it: " + Errno());
  if (fchmod(fd, mode) != 0) {
    std::string e = Errno();
    close(fd);
    unlink(tmp.c_str());
    return Status::Io(tmp + ": chmod failed: " + e);
  }
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string e = Errno();
      close(fd);
      unlink(tmp.c_str());
      return Status::Io(tmp + ": write failed: " + e);
    }
    off += static_cast<size_t>(n);
  }
  if (durability == Durability::kFsync && fsync(fd) != 0) {
    std::string e = Errno();
    close(fd);
    unlink(tmp.c_str());
    return Status::Io(tmp + ": fsync failed: " + e);
  }
  if (close(fd) != 0) {
    std::string e = Errno();
    unlink(tmp.c_str());
    return Status::Io(tmp + ": close failed: " + e);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    std::string e = Errno();
    unlink(tmp.c_str());
    return Status::Io(path + ": rename failed: " + e);
  }
  if (durability == Durability::kFsync) {
    int dfd = open(DirOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
  }
  return Status::Ok();
}

Status MakeDirs(const std::string& path) {
  if (path.empty()) return Status::Io("empty directory path");
  std::string cur;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    cur = path.substr(0, j);
    if (!cur.empty() && mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST)
      return Status::Io(cur + ": cannot create directory: " + Errno());
    i = j + 1;
  }
  if (!IsDirectory(path)) return Status::Io(path + ": not a directory");
  return Status::Ok();
}

Result<std::vector<std::string>> ListFiles(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    return Status::Io(dir + ": cannot list: " + Errno());
  }
  while (struct dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;
    if (name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    std::string full = dir + "/" + name;
    struct stat st;
    if (stat(full.c_str(), &st) != 0) {
      int err = errno;
      std::string e = std::strerror(err);
      closedir(d);
      return Status::Io(full + ": cannot use it: " + e + (err == ENOENT ? " (a dangling symlink? remove it or fix its target)" : ""));
    }
    if (!S_ISREG(st.st_mode)) {
      closedir(d);
      return Status::Io(full + ": not a regular file (remove it or rename it so it does not end in " + suffix + ")");
    }
    out.push_back(full);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool WorldReadable(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH);
}

int OpenStateFile(const std::string& path, int flags) {
  int fd = open(path.c_str(), flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    errno = EINVAL;
    return -1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

namespace {

std::string Octal(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

/// One path along the way: owned by root, not writable by group/others (a directory above the
/// leaf may be writable by others with the sticky bit).
Status CheckOne(const std::string& subject, const std::string& p, bool leaf, TrustedKind kind) {
  struct stat st;
  if (lstat(p.c_str(), &st) != 0) return Status::Io(p + ": cannot check it: " + Errno());
  if (S_ISLNK(st.st_mode)) return Status::Ok();  // the directory holding it, and its target, are checked
  const char* what = kind == TrustedKind::kStateDir ? "the state directory" : "the policy";
  std::string fix_mode = kind == TrustedKind::kStateDir && leaf ? "chmod 700 " : "chmod go-w ";
  std::string head = "refusing to trust " + std::string(what) + " " + subject + " as root: " +
                     (p == subject ? std::string("it") : p);
  if (st.st_uid != 0)
    return Status::Error(Code::kRefused, head + " is owned by uid " + std::to_string(st.st_uid) +
                                             ", not root, so that user could change what root does; fix: chown root:root " +
                                             p + "; " + fix_mode + p);
  bool writable = st.st_mode & (S_IWGRP | S_IWOTH);
  bool sticky_dir = !leaf && S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
  if (writable && !sticky_dir)
    return Status::Error(Code::kRefused, head + " is writable by group or others (mode " + Octal(st.st_mode) +
                                             "), so they could change what root does; fix: chown root:root " + p + "; " +
                                             fix_mode + p);
  return Status::Ok();
}

/// Every prefix of an absolute path, "/" first.
std::vector<std::string> Prefixes(const std::string& abs) {
  std::vector<std::string> out{"/"};
  for (size_t i = 1; i <= abs.size(); ++i)
    if (i == abs.size() || abs[i] == '/')
      if (abs[i - 1] != '/') out.push_back(abs.substr(0, i));
  return out;
}

}  // namespace

Status CheckTrusted(const std::string& path, TrustedKind kind) {
  if (geteuid() != 0) return Status::Ok();
  std::string abs = path;
  if (abs.empty() || abs[0] != '/') {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return Status::Io("cannot get the working directory: " + Errno());
    abs = std::string(cwd) + "/" + path;
  }
  // The names as written (the directories holding each symlink along the way)...
  auto lexical = Prefixes(abs);
  for (size_t i = 0; i < lexical.size(); ++i) {
    const std::string& p = lexical[i];
    std::string base = p.substr(p.rfind('/') + 1);
    if (base == "." || base == "..") continue;
    MW_RETURN_IF_ERROR(CheckOne(path, p, i + 1 == lexical.size(), kind));
  }
  // ...and the real path they lead to.
  char buf[PATH_MAX];
  if (!realpath(abs.c_str(), buf)) return Status::Io(path + ": cannot resolve: " + Errno());
  auto real = Prefixes(buf);
  for (size_t i = 0; i < real.size(); ++i) MW_RETURN_IF_ERROR(CheckOne(path, real[i], i + 1 == real.size(), kind));
  return Status::Ok();
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

}  // namespace mw
