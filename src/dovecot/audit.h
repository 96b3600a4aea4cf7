// The Dovecot audit: judges the EFFECTIVE value of each risky setting (what `doveconf -h`
// prints), for Dovecot 2.3 and 2.4 names, and the permissions of config and key files.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dovecot/config.h"

namespace mw::dovecot {

struct Finding {
  std::string id;        ///< stable: "auth-debug", "cleartext-auth", ...
  std::string severity;  ///< critical | high | medium | low | info
  std::optional<std::string> setting;  ///< nullopt for a finding about a file itself
  std::string value;
  std::string file;
  int line = 0;
  std::string message;   ///< why it is risky
  std::string fix;
  /// The filter contexts where it holds ("" the global one, "protocol=pop3", "remote=10.0.0.0/8
  /// protocol=imap", "listener imap-login/imap"), in the order they were judged.
  std::vector<std::string> contexts;
};

/// Ownership and mode of a file, for the permission checks.
struct FileMode {
  uid_t uid = 0;
  gid_t gid = 0;
  mode_t mode = 0;
};

class FileStat {
 public:
  virtual ~FileStat() = default;
  virtual std::optional<FileMode> Stat(const std::string& path) = 0;
};
std::unique_ptr<FileStat> MakeDiskFileStat();

/// An effective value and where it was set (file empty: Dovecot's default).
struct Effective {
  std::string value;
  std::string file;
  int line = 0;
};

/// One filter context the audit judged (besides the global one) and the values it met there.
struct ContextValues {
  Context context;
  std::map<std::string, Effective> settings;
};

/// Where the values come from. The builtin parser always gives file:line; an oracle (doveconf)
/// may give the value itself: `Get(key, ctx)` returns nullopt to keep the parser's value.
class ValueOracle {
 public:
  virtual ~ValueOracle() = default;
  virtual std::optional<std::string> Get(const std::string& key, const Context& ctx) = 0;
  /// A hint: these keys will be asked for in `ctx` (one doveconf run instead of one per key).
  virtual void Prefetch(const std::vector<std::string>& keys, const Context& ctx) { (void)keys, (void)ctx; }
};

struct AuditResult {
  std::string version;  ///< "2.3" or "2.4"
  std::vector<std::string> files;
  std::vector<Finding> findings;       ///< sorted by severity, then file and line
  std::vector<std::string> ignored;    ///< ids silenced by the policy
  std::map<std::string, Effective> effective;  ///< the settings the audit judged (global context)
  std::vector<ContextValues> contexts;         ///< every other context judged, with its values
  std::string engine = "builtin";              ///< which engine judged the values
  std::vector<std::string> warnings;
};

/// The keys the audit judges in every context (the JSON `settings` map).
const std::vector<std::string>& JudgedKeys(bool is_24);

/// Audits a parsed configuration. `ignore` lists finding ids to leave out.
/// `oracle` (optional) supplies the effective values (doveconf); `files` reads `key = <file`
/// contents (auth_mechanisms = <file).
AuditResult Audit(const Config& cfg, FileStat& stat, const std::vector<std::string>& ignore,
                  ValueOracle* oracle = nullptr, FileSource* files = nullptr);

/// Severity rank: critical 0 ... info 4.
int SeverityRank(const std::string& s);

}  // namespace mw::dovecot
