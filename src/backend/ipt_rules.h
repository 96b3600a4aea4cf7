// The iptables side of mailward, without running anything: how the model becomes
// iptables-restore lines and ipsets, how iptables-save output is read back, and what else in
// the filter table would still block a port the policy keeps open. Pure, so unit tests cover it.
//
// In iptables an ACCEPT ends the INPUT chain, so mailward's chain never accepts: it drops or
// rejects what the policy closes and RETURNs everything else to the host's own INPUT rules
// (a fail2ban ban on an open port keeps working). This is the nftables backend's meaning too,
// where an accept in mailward's table does not overrule another table's drop.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/ruleset.h"

namespace mw::ipt {

inline constexpr const char* kChain = "MAILWARD";
inline constexpr const char* kJumpComment = "mailward:jump";

/// The ipset that holds mailward's set `set_name` ("mw_" prefix; at most 31 characters).
std::string IpsetName(const std::string& set_name);
/// A temporary ipset name used to replace `ipset_name` atomically (swap).
std::string TempIpsetName(const std::string& ipset_name);
inline bool IsOwnIpset(const std::string& name) { return name.rfind("mw_", 0) == 0 || name.rfind("mwt_", 0) == 0; }

/// What an ipset should be.
struct IpsetSpec {
  std::string name;
  std::string type;  ///< "hash:ip" | "hash:net"
  Family family = Family::kV4;
  uint32_t maxelem = 65536;
  std::vector<std::string> entries;  ///< canonical text (FormatCidr), sorted
};
IpsetSpec MakeIpset(const AddrSet& set);

/// The rule as iptables-save prints it ("-A MAILWARD ... -j DROP").
std::string RenderRule(const RuleSpec& r, Family f);
/// The MAILWARD chain of one family, in order.
std::vector<std::string> ChainRules(const Ruleset& rs, Family f);
/// The jump rule, as iptables-save prints it.
std::string JumpRule();

/// One table of iptables-save output.
struct SavedChain {
  std::string name;
  std::string policy;  ///< "ACCEPT"/"DROP" for built-in chains, "-" for user chains
  std::vector<std::string> rules;  ///< "-A NAME ..." lines, in order
};
struct SavedTable {
  std::vector<SavedChain> chains;
  const SavedChain* Find(const std::string& name) const;
};
/// Parses the `table` section of iptables-save output (empty when it is absent).
SavedTable ParseSave(const std::string& text, const std::string& table = "filter");
/// The output without comments and counters: what identifies the state.
std::string StableText(const std::string& save_output);

/// Splits a rule line into words, honouring iptables-save's double quotes.
std::vector<std::string> Tokenize(const std::string& line);

/// Parses `ipset save NAME` output.
std::optional<IpsetSpec> ParseIpsetSave(const std::string& text);
/// Canonical text of an ipset entry ("10.0.0.0/8", "2001:db8::1"); empty when unparsable.
std::string CanonicalEntry(const std::string& entry);


}  // namespace mw::ipt
