// In-memory files for the Dovecot parser and auditor: a map of path -> content (and mode), that
// also records which files were read.
#pragma once

#include <fnmatch.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "dovecot/audit.h"
#include "dovecot/config.h"

namespace mw::testing {

class MemoryFiles : public dovecot::FileSource, public dovecot::FileStat {
 public:
  void Add(const std::string& path, const std::string& text, mode_t mode = 0644, uid_t uid = 0) {
    files_[path] = {text, dovecot::FileMode{uid, 0, static_cast<mode_t>(S_IFREG | mode)}};
  }
  Result<std::string> Read(const std::string& path) override {
    reads.push_back(path);
    auto it = files_.find(Canonical(path));
    if (it == files_.end()) return Status::Io(path + ": cannot open: No such file or directory");
    return it->second.first;
  }
  /// Like glob(3) with GLOB_BRACE: each brace alternative in order, its matches sorted.
  std::vector<std::string> Glob(const std::string& pattern) override {
    std::vector<std::string> out;
    for (const auto& alt : ExpandBraces(pattern)) {
      if (alt.find_first_of("*?[") == std::string::npos) {  // a plain name: glob returns it as written
        if (files_.count(Canonical(alt))) out.push_back(alt);
        continue;
      }
      for (const auto& [p, f] : files_)  // std::map: sorted
        if (fnmatch(alt.c_str(), p.c_str(), FNM_PATHNAME) == 0) out.push_back(p);
    }
    return out;
  }
  static std::vector<std::string> ExpandBraces(const std::string& s) {
    size_t open = s.find('{');
    if (open == std::string::npos) return {s};
    int depth = 0;
    size_t close = std::string::npos;
    std::vector<size_t> commas;
    for (size_t i = open; i < s.size(); ++i) {
      if (s[i] == '{') ++depth;
      else if (s[i] == '}' && --depth == 0) { close = i; break; }
      else if (s[i] == ',' && depth == 1) commas.push_back(i);
    }
    if (close == std::string::npos) return {s};
    std::vector<std::string> out;
    size_t start = open + 1;
    commas.push_back(close);
    for (size_t c : commas) {
      for (const auto& e : ExpandBraces(s.substr(0, open) + s.substr(start, c - start) + s.substr(close + 1)))
        out.push_back(e);
      start = c + 1;
    }
    return out;
  }
  std::string Canonical(const std::string& path) override {
    // Collapse "/./" and "dir/../" so that cycles through relative paths are found.
    std::vector<std::string> parts;
    size_t i = 0;
    while (i <= path.size()) {
      size_t j = path.find('/', i);
      if (j == std::string::npos) j = path.size();
      std::string part = path.substr(i, j - i);
      if (part == "..") {
        if (!parts.empty()) parts.pop_back();
      } else if (!part.empty() && part != ".") {
        parts.push_back(part);
      }
      i = j + 1;
    }
    std::string out;
    for (const auto& p : parts) out += "/" + p;
    return out;
  }
  bool Private(const std::string& path) override {
    auto it = files_.find(Canonical(path));
    return it != files_.end() && !(it->second.second.mode & S_IROTH);
  }
  std::optional<dovecot::FileMode> Stat(const std::string& path) override {
    auto it = files_.find(Canonical(path));
    if (it == files_.end()) return std::nullopt;
    return it->second.second;
  }
  std::vector<std::string> reads;

 private:
  std::map<std::string, std::pair<std::string, dovecot::FileMode>> files_;
};

}  // namespace mw::testing
