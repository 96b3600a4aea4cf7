// The Dovecot audit: judges the EFFECTIVE value of each risky setting (what `doveconf -h`
// prints), for Dovecot 2.3 and 2.4 names, and the permissions of config and key files.
#pragma once

#include <sys/types.h>

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

struct AuditResult {
  std::string version;  ///< "2.3" or "2.4"
  std::vector<std::string> files;
  std::vector<Finding> findings;       ///< sorted by severity, then file and line
  std::vector<std::string> ignored;    ///< ids silenced by the policy
  std::map<std::string, Effective> effective;  ///< the settings the audit judged
};

/// Audits a parsed configuration. `ignore` lists finding ids to leave out.
AuditResult Audit(const Config& cfg, FileStat& stat, const std::vector<std::string>& ignore);

/// Severity rank: critical 0 ... info 4.
int SeverityRank(const std::string& s);

}  // namespace mw::dovecot
