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

/// `j` with every string (values and keys) made valid UTF-8 (bad bytes become U+FFFD): a
/// probed greeting, a Latin-1 file name or value must not make dump() throw.
nlohmann::json Utf8Safe(nlohmann::json j);
/// The one way mailward prints a JSON document: indented, invalid UTF-8 replaced, never throws.
std::string DumpJson(const nlohmann::json& j);

nlohmann::json ChangeToJson(const Change& c);
nlohmann::json ConflictToJson(const Conflict& c);
nlohmann::json PolicySummaryJson(const Policy& p);

/// Text lines of a plan ("+ rule mailward:143:closed  tcp dport 143 ct state new drop").
std::string PlanText(const std::vector<Change>& changes, bool color, bool verbose);
std::string ConflictsText(const std::vector<Conflict>& conflicts, bool color);

}  // namespace mw
