// `mailward probe [HOST]`: the policy's ports as a client sees them, judged against the policy.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "policy/policy.h"
#include "probe/probe.h"

namespace mw {

struct ProbeOptions {
  std::vector<std::string> hosts;  ///< empty: this host's addresses
  double timeout_s = 3;
  double deadline_s = 15;
  std::string source;
};

/// One probe result with the policy's verdict.
struct JudgedProbe {
  probe::Result result;
  std::string expected;          ///< "open" | "closed"
  std::optional<bool> as_policy; ///< nullopt: a local probe cannot tell
  std::string reason;
};

std::vector<JudgedProbe> JudgeProbes(const Policy& policy, const std::vector<probe::Result>& results,
                                     const std::string& source);
nlohmann::json ProbeJson(const JudgedProbe& p);
std::string ProbeText(const std::vector<JudgedProbe>& probes, bool color);

/// Exit 0 as the policy says, 2 not, 1 error.
int CmdProbe(const GlobalOptions& g, const ProbeOptions& o);

}  // namespace mw
