// A parser for the Dovecot configuration language (2.3 and 2.4): `key = value`, quoted values,
// comments, line continuations, nested sections, `!include` / `!include_try` with relative paths
// and globs, `key = <file`, `$setting` expansion, later settings overriding earlier ones. Every
// setting keeps the file and line that set it. Iterative (no recursion), so hostile nesting
// cannot exhaust the stack.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "util/status.h"

namespace mw::dovecot {

/// The files the parser reads. Real: the filesystem. Tests: an in-memory map.
class FileSource {
 public:
  virtual ~FileSource() = default;
  /// The file's content, or an error naming the path.
  virtual Result<std::string> Read(const std::string& path) = 0;
  /// Paths matching a glob pattern, sorted; an empty list when none match.
  virtual std::vector<std::string> Glob(const std::string& pattern) = 0;
  /// Whether others than root cannot read the file (it may hold secrets): errors then quote
  /// nothing of it.
  virtual bool Private(const std::string& path) { (void)path; return false; }
  /// A canonical name for cycle detection (realpath on disk).
  virtual std::string Canonical(const std::string& path) = 0;
};

std::unique_ptr<FileSource> MakeDiskFileSource();

/// One section around a setting: `protocol imap {` is {"protocol", "imap"}.
struct Section {
  std::string type;
  std::string name;
  std::string file;
  int line = 0;
  int parent = -1;  ///< index into Config::sections, -1 at the top
};

struct Setting {
  std::string key;
  std::string value;   ///< unquoted, `$var` expanded; `<path` kept as written (as doveconf prints it)
  std::string file;
  int line = 0;
  int section = -1;  ///< innermost enclosing section (index into Config::sections); -1: global
};

struct Config {
  std::vector<Setting> settings;  ///< in the order they were read
  std::vector<Section> sections;  ///< every section, each pointing at its parent
  std::vector<std::string> files; ///< every file read, in order
  bool is_24 = false;             ///< dovecot_config_version is the first setting
  /// The effective global value (the last global assignment), or nullptr.
  const Setting* Global(const std::string& key) const;
  /// The sections around a setting, outermost first.
  std::vector<const Section*> ScopeOf(const Setting& s) const;
};

/// Parses the configuration starting at `path`. Errors carry "file:line: message".
Result<Config> Parse(const std::string& path, FileSource& files);

}  // namespace mw::dovecot
