// FakeEnv: the operating system in memory, for unit tests (src/sys/env.h). Files live in a map
// (with their modes), programs answer from a script the test writes, the clock only moves when
// the test (or a SleepMs) moves it, and every run and write is recorded. Faults are injected
// here, leveldb-style: on_write fails a write, on_run fails a program, held_by_others holds a lock.
#pragma once

#include <sys/socket.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "sys/env.h"

namespace mw::testing {

class FakeEnv : public sys::Env {
 public:
  struct File {
    std::string data;
    unsigned mode = 0600;
  };
  struct Ran {
    std::vector<std::string> argv;
    std::string input;
    std::string Line() const {
      std::string s;
      for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
      return s;
    }
  };
  using RunFn = std::function<ProcessResult(const std::vector<std::string>& argv, const std::string& input)>;

  std::map<std::string, File> files;
  std::set<std::string> dirs;
  std::map<std::string, std::string> env_vars;
  std::set<std::string> programs;          ///< what HaveProgram finds
  RunFn on_run;                            ///< answers Run; unset: every program is "not found" (127)
  std::vector<Ran> runs;                   ///< every Run, in order
  std::function<Status(const std::string& path)> on_write;  ///< a non-OK Status fails that write
  std::set<std::string> held_by_others;    ///< locks another process holds
  std::set<std::string> held;              ///< locks this process holds now
  std::set<std::string> untrusted;         ///< paths CheckTrusted refuses
  std::map<std::string, sys::EntryKind> planted;  ///< symlinks, FIFOs... Lstat reports (not readable)
  std::map<std::string, std::string> links;       ///< what ReadLink answers
  int64_t now_ms = 1'000'000;
  int64_t unix_s = 1'700'000'000;

  void Put(const std::string& path, const std::string& data, unsigned mode = 0600) { files[path] = {data, mode}; }
  std::string Get(const std::string& path) const {
    auto it = files.find(path);
    return it == files.end() ? "" : it->second.data;
  }
  bool Has(const std::string& path) const { return files.count(path) > 0; }
  /// The runs whose command line starts with `prefix`.
  std::vector<Ran> RunsOf(const std::string& prefix) const {
    std::vector<Ran> out;
    for (const auto& r : runs)
      if (r.Line().rfind(prefix, 0) == 0) out.push_back(r);
    return out;
  }

  std::vector<std::string> reads;  ///< every path ReadFile was asked for, in order
  Result<std::string> ReadFile(const std::string& path, Follow) override {
    reads.push_back(path);
    auto it = files.find(path);
    if (it == files.end()) return Status::Io(path + ": cannot open: No such file or directory");
    return it->second.data;
  }
  /// The fixture's /proc/net/tcp{,6} files.
  Result<std::string> TcpTable(int family) override {
    return ReadFile(family == AF_INET6 ? "/proc/net/tcp6" : "/proc/net/tcp", Follow::kSymlinks);
  }
  std::optional<unsigned> FileMode(const std::string& path) override {
    auto it = files.find(path);
    if (it == files.end()) return std::nullopt;
    return it->second.mode;
  }
  Status WriteFileAtomic(const std::string& path, const std::string& data, Durability, unsigned mode) override {
    if (on_write) MW_RETURN_IF_ERROR(on_write(path));
    files[path] = {data, mode};
    return Status::Ok();
  }
  bool Exists(const std::string& path) override { return files.count(path) || dirs.count(path); }
  Status RemoveFile(const std::string& path) override {
    files.erase(path);
    return Status::Ok();
  }
  Status Link(const std::string& from, const std::string& to) override {
    auto it = files.find(from);
    if (it == files.end()) return Status::Io(to + ": cannot link " + from + ": No such file or directory");
    files[to] = it->second;
    return Status::Ok();
  }
  Result<std::vector<std::string>> ListFiles(const std::string& dir, const std::string& suffix) override {
    std::vector<std::string> out;
    std::string prefix = dir + "/";
    for (const auto& [p, f] : files)  // std::map: sorted
      if (p.rfind(prefix, 0) == 0 && p.find('/', prefix.size()) == std::string::npos && p.size() >= suffix.size() &&
          p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0)
        out.push_back(p);
    return out;
  }
  std::optional<sys::EntryKind> Lstat(const std::string& path) override {
    if (auto it = planted.find(path); it != planted.end()) return it->second;
    if (files.count(path)) return sys::EntryKind::kRegular;
    if (dirs.count(path)) return sys::EntryKind::kDirectory;
    return std::nullopt;
  }
  std::vector<std::string> ListEntries(const std::string& dir) override {
    std::set<std::string> out;
    const std::string prefix = dir + "/";
    auto add = [&](const std::string& p) {  // a deeper path implies its directory under `dir`
      if (p.rfind(prefix, 0) == 0 && p.size() > prefix.size())
        out.insert(p.substr(prefix.size(), p.find('/', prefix.size()) - prefix.size()));
    };
    for (const auto& [p, f] : files) add(p);
    for (const auto& p : dirs) add(p);
    for (const auto& [p, k] : planted) add(p);
    return {out.begin(), out.end()};
  }
  std::optional<std::string> ReadLink(const std::string& path) override {
    auto it = links.find(path);
    if (it == links.end()) return std::nullopt;
    return it->second;
  }
  void AppendFile(const std::string& path, const std::string& data) override {
    if (planted.count(path)) return;  // O_NOFOLLOW
    files[path].data += data;
  }
  Status MakeDirs(const std::string& path) override {
    if (on_write) MW_RETURN_IF_ERROR(on_write(path));
    dirs.insert(path);
    return Status::Ok();
  }
  Status CheckTrusted(const std::string& path, TrustedKind) override {
    return untrusted.count(path) ? Status::Error(Code::kRefused, path + ": writable by others") : Status::Ok();
  }
  Result<std::unique_ptr<sys::FileLock>> TryLock(const std::string& path, sys::LockInherit) override {
    if (held_by_others.count(path) || held.count(path)) return std::unique_ptr<sys::FileLock>();
    held.insert(path);
    return std::unique_ptr<sys::FileLock>(std::make_unique<Lock>(this, path));
  }
  ProcessResult Run(const std::vector<std::string>& argv, const std::string& input) override {
    runs.push_back({argv, input});
    if (on_run) return on_run(argv, input);
    ProcessResult r;
    r.status = 127;
    return r;
  }
  bool HaveProgram(const std::string& name) override { return programs.count(name) > 0; }
  std::optional<std::string> GetEnv(const std::string& name) override {
    auto it = env_vars.find(name);
    if (it == env_vars.end()) return std::nullopt;
    return it->second;
  }
  int64_t MonotonicMs() override { return now_ms; }
  int64_t UnixSeconds() override { return unix_s + (now_ms - 1'000'000) / 1000; }
  int64_t UnixMs() override { return unix_s * 1000 + (now_ms - 1'000'000); }
  void SleepMs(int64_t ms) override { now_ms += ms; }
  int64_t BootMs() override { return now_ms; }

  static ProcessResult Ok(std::string out = "") {
    ProcessResult r;
    r.status = 0;
    r.out = std::move(out);
    return r;
  }
  static ProcessResult Fail(std::string err, int status = 1) {
    ProcessResult r;
    r.status = status;
    r.err = std::move(err);
    return r;
  }

 private:
  class Lock : public sys::FileLock {
   public:
    Lock(FakeEnv* env, std::string path) : env_(env), path_(std::move(path)) {}
    ~Lock() override { env_->held.erase(path_); }

   private:
    FakeEnv* env_;
    std::string path_;
  };
};

}  // namespace mw::testing
