// UFW's user rules files (/etc/ufw/user.rules, user6.rules), without running anything: how
// they are read, how mailward's rules become UFW rules (tuples tagged comment=mailward, with
// the iptables lines UFW itself would generate for them), and how the file is written back.
// mailward's rules go first in the RULES section; the admin's keep their order after them.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/ruleset.h"
#include "util/status.h"

namespace mw::ufw {

/// "mailward" in hex: UFW stores a rule's comment that way in the tuple.
inline constexpr const char* kCommentHex = "6d61696c77617264";

struct UfwRule {
  std::string tuple;               ///< after "### tuple ### "
  std::vector<std::string> lines;  ///< its iptables lines
  bool ours() const;
  friend bool operator==(const UfwRule&, const UfwRule&) = default;
};

struct UserRules {
  std::string head;  ///< up to and including "### RULES ###\n"
  std::vector<UfwRule> rules;
  std::string tail;  ///< from "### END RULES ###"
  /// The package's file, never written by UFW (UFW never enabled, or no rule ever added): it
  /// has no "### END RULES ###" yet. head and tail are completed the way UFW writes them (the
  /// rate-limit chains that its `limit` rules jump to included), so the file loads when UFW
  /// is enabled.
  bool pristine = false;
};

/// Parses a user rules file; fails on a file without UFW's RULES marker, or with rule lines
/// outside tuples.
Result<UserRules> ParseUserRules(const std::string& text, const std::string& path);
std::string RenderUserRules(const UserRules& r);

/// mailward's UFW rules for one family's file, in order. Also returns notes (an open port the
/// admin already allows, a rate limit UFW can only approximate) through `notes`.
std::vector<UfwRule> DesiredRules(const Ruleset& rs, Family f, const std::vector<UfwRule>& admin,
                                  std::vector<std::string>* notes);

/// A tuple for people: "allow 143/tcp from 198.51.100.0/24".
std::string DescribeTuple(const std::string& tuple);

/// Whether the loaded chain (iptables-save lines of ufw-user-input) matches the file's lines:
/// same count, and each loaded rule has every word of the file's (the kernel adds defaults).
bool LoadedMatches(const std::vector<std::string>& file_lines, const std::vector<std::string>& loaded);

}  // namespace mw::ufw
