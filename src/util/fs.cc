#include "util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

Result<std::string> ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Io(path + ": cannot open: " + Errno());
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    // A directory, a device (/dev/zero would never end), a FIFO (would block): not a file.
    bool dir = S_ISDIR(st.st_mode);
    close(fd);
    return Status::Io(path + (dir ? ": is a directory" : ": not a regular file"));
  }
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
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Status::Io(tmp + ": cannot create: " + Errno());
  // The mode asked for, whatever the umask (a unit's UMask=0077 must not hide a 0644 file).
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
    if (stat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode)) out.push_back(full);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
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
