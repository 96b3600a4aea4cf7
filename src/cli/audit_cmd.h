// `mailward audit dovecot`: the Dovecot audit as a command, and as a part of `check`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "dovecot/audit.h"

namespace mw {

/// Parses and audits the configuration at `config`. `engine`: "auto" (doveconf when installed),
/// "doveconf" (doveconf's values, the builtin parser's file:line) or "builtin".
Result<dovecot::AuditResult> RunDovecotAudit(const std::string& config, const std::vector<std::string>& ignore,
                                             const std::string& engine = "auto");

nlohmann::json AuditJson(const std::string& config, const dovecot::AuditResult& r);
std::string AuditText(const dovecot::AuditResult& r, bool color);

struct AuditOptions {
  std::string config;  ///< empty: the policy's dovecot.config, else /etc/dovecot/dovecot.conf
  bool fix = false;
  std::string engine = "auto";
};

/// Exit 0 clean, 2 findings, 1 error.
int CmdAuditDovecot(const GlobalOptions& g, const AuditOptions& o);

}  // namespace mw
