// Reporters: one JSON document on stdout (stable keys, see README "JSON output"), or aligned
// text for people, coloured only on a terminal.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "policy/policy.h"

namespace mw {

enum class Format { kText, kJson };

/// Whether to colour text output: a terminal, and NO_COLOR unset.
bool UseColor();
/// ANSI colour for a finding severity.
const char* SeverityRankColor(const std::string& severity);

nlohmann::json ChangeToJson(const Change& c);
nlohmann::json ConflictToJson(const Conflict& c);
nlohmann::json PolicySummaryJson(const Policy& p);

/// Text lines of a plan ("+ rule mailward:143:closed  tcp dport 143 ct state new drop").
std::string PlanText(const std::vector<Change>& changes, bool color, bool verbose);
std::string ConflictsText(const std::vector<Conflict>& conflicts, bool color);

}  // namespace mw
