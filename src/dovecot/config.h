// A parser for the Dovecot configuration language (2.3 and 2.4) that follows Dovecot's own
// config-parser.c line by line: `key = value`, quoted values, comments, line continuations,
// nested sections, filters (`protocol`, `remote`, `local`, `local_name`), `!include` /
// `!include_try` with relative paths and brace globs, `key = <file`, `$key` references, later
// settings overriding earlier ones. Every setting keeps the file and line that set it.
// Iterative (no recursion), so hostile nesting cannot exhaust the stack.
//
// Values are what `doveconf -h` prints (no -x): `<file` stays `<file`, `$key` expands only for
// the key's own earlier value, booleans print as yes/no. Effective values per filter context
// follow config-filter.c: the most specific matching filter that set the key wins.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/address.h"
#include "util/status.h"

namespace mw::dovecot {

/// The files the parser reads. Real: the filesystem. Tests: an in-memory map.
class FileSource {
 public:
  virtual ~FileSource() = default;
  /// The file's content, or an error naming the path.
  virtual Result<std::string> Read(const std::string& path) = 0;
  /// Paths matching a glob pattern with braces (glob(3) with GLOB_BRACE: each brace alternative
  /// in order, each one's matches sorted); an empty list when none match.
  virtual std::vector<std::string> Glob(const std::string& pattern) = 0;
  /// Whether others than root cannot read the file (it may hold secrets): errors then quote
  /// nothing of it.
  virtual bool Private(const std::string& path) { (void)path; return false; }
  /// A canonical name for cycle detection (realpath on disk).
  virtual std::string Canonical(const std::string& path) = 0;
  /// The first address of a host name, as Dovecot's `remote NAME { }` resolves it (getaddrinfo
  /// on disk); nullopt when it does not resolve.
  virtual std::optional<std::string> Resolve(const std::string& host) {
    if (host == "localhost") return "127.0.0.1";
    return std::nullopt;
  }
};

std::unique_ptr<FileSource> MakeDiskFileSource();

/// A network as Dovecot's net_parse_range reads it: host bits below the prefix are allowed.
/// bits == 0 matches every address.
struct Net {
  Cidr cidr;
  int bits = 0;
  std::string text;  ///< as written
};
/// Parses "10.1.2.3", "10.0.0.0/8", "::/0", "localhost"; false for anything else.
bool ParseNet(const std::string& text, Net* out);
/// Dovecot's net_is_in_network.
bool NetContains(const Net& net, const Cidr& addr);

/// A filter: the settings of `protocol imap { }`, `remote 10.0.0.0/8 { protocol pop3 { } }`...
/// Filter 0 is the global one.
struct Filter {
  std::string service;     ///< protocol name, may start with '!' (not that protocol); empty: any
  std::optional<Net> remote, local;
  std::string local_name;  ///< empty: any
  std::string file;        ///< where it was first opened
  int line = 0;
  /// "protocol=pop3 remote=10.0.0.0/8", empty for the global filter.
  std::string Text() const;
};

/// The context a connection meets: `doveconf -f protocol=X -f remote=Y -f local=Z`.
struct Context {
  std::string protocol;  ///< empty: none
  std::optional<Net> remote, local;
  std::string local_name;
  /// doveconf's -f arguments joined: "protocol=imap remote=10.0.0.0/8", "lname=mail.example.org";
  /// "" for none.
  std::string Text() const;
};

/// One section around a setting: `protocol imap {` is {"protocol", "imap"}.
struct Section {
  std::string type;
  std::string name;
  std::string file;
  int line = 0;
  int parent = -1;   ///< index into Config::sections, -1 at the top
  int filter = 0;    ///< the filter in effect inside (index into Config::filters)
  bool is_filter = false;
};

struct Setting {
  std::string key;
  /// The key under its non-filter sections, as doveconf names it:
  /// "service/imap-login/inet_listener/imap/port"; equal to key outside such sections.
  std::string path;
  std::string value;   ///< as `doveconf -h` prints it (`<path` kept, own `$key` expanded)
  std::string file;
  int line = 0;
  int section = -1;  ///< innermost enclosing section (index into Config::sections); -1: global
  int filter = 0;    ///< index into Config::filters
  std::string keyfile;  ///< for `key = <file`: the file's path resolved like Dovecot does
  /// The value Dovecot runs with (`doveconf -x`): `<file` replaced by the file's content, own
  /// `$key` references by the runtime value so far. Other keys' `$refs` stay as written.
  std::string runtime;
};

struct Config {
  std::vector<Setting> settings;  ///< in the order they were read
  std::vector<Section> sections;  ///< every section, each pointing at its parent
  std::vector<Filter> filters;    ///< [0] is the global filter
  std::vector<std::string> files; ///< every file read, in order
  std::vector<std::string> warnings;  ///< accepted by Dovecot but suspicious (an unclosed section)
  bool is_24 = false;             ///< dovecot_config_version is the first setting
  std::map<std::string, std::vector<size_t>> by_path;  ///< setting indices per path, in order
  /// The effective value of a top-level key (not inside a non-filter section) without filters,
  /// the one `doveconf -h KEY` prints, or nullptr for Dovecot's default.
  const Setting* Global(const std::string& key) const;
  /// The effective value of `path` for a connection in `ctx`, or nullptr for the default.
  /// `conflict` (optional) is set when two filters that are not nested set it differently: Dovecot
  /// then refuses the connection's configuration ("Conflict in setting").
  const Setting* Lookup(const std::string& path, const Context& ctx, bool* conflict = nullptr) const;
  /// The sections around a setting, outermost first.
  std::vector<const Section*> ScopeOf(const Setting& s) const;
};

/// Dovecot's default (2.3.19 as Debian builds it, or 2.4) for the settings mailward knows.
std::string DefaultValue(const std::string& key, bool is_24);
/// Boolean settings mailward knows (their values print as yes/no).
bool IsBoolSetting(const std::string& path);

/// Parses the configuration starting at `path`. Errors carry "file:line: message".
Result<Config> Parse(const std::string& path, FileSource& files);

}  // namespace mw::dovecot
