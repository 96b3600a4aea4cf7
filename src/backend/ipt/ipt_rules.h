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

/// The tables mailward has a chain in: filter (INPUT), mangle and nat (PREROUTING).
inline constexpr int kTableCount = 3;
inline constexpr const char* kTables[kTableCount] = {"filter", "mangle", "nat"};
/// The built-in chain holding the jump in table `t` (index into kTables).
const char* JumpBase(int t);
/// The jump rule of table `t`, as iptables-save prints it.
std::string JumpRule(int t);
/// How allowlisted sources are matched: mailward's ipsets, or one `-s` rule per address or
/// prefix (the UFW backend, which owns no ipsets).
enum class SourceMatch { kIpset, kInline };
/// The MAILWARD chain of table `t` (1: mangle, 2: nat; see above) for family `f`; empty when
/// the policy needs no chain there.
std::vector<std::string> PreroutingChainRules(const Ruleset& rs, Family f, int t, SourceMatch m = SourceMatch::kIpset);

/// mailward's objects in one table: its chain (if any), the chain's rules, and the rules of the
/// table's jump base chain that jump to it.
struct OwnTable {
  bool chain = false;
  std::vector<std::string> rules;
  std::vector<std::string> jumps;
  friend bool operator==(const OwnTable&, const OwnTable&) = default;
};
/// mailward's objects in one family, per table (index into kTables).
struct OwnState {
  OwnTable t[kTableCount];
  friend bool operator==(const OwnState&, const OwnState&) = default;
};
struct SavedTable;
OwnTable OwnOf(const SavedTable& table, int t);
/// The iptables-restore --noflush input that turns `from` into `to` ("" when equal), one
/// section per table that differs: a single restore per family (atomic with iptables-nft).
/// `only` limits it to the tables whose bit is set (1 << t).
std::string RestoreScript(const OwnState& from, const OwnState& to, unsigned only = 0x7);
/// The plan's lines for turning `have` into `want` in table `t`; `label` is "iptables" or
/// "ip6tables" (the filter table's changes are named by it alone, the others add the table).
void DescribeOwnChanges(const OwnTable& have, const OwnTable& want, int t, const std::string& label,
                        std::vector<Change>* out);
/// Whether a snapshot's line is one of mailward's own objects of table `t` (a rule of its
/// chain, or a jump to it from the base chain): a restore never writes anything else.
bool IsOwnRuleLine(const std::string& line, int t);
bool IsOwnJumpLine(const std::string& line, int t);

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

/// Every table of iptables-save output, by name.
std::map<std::string, SavedTable> ParseSaveAll(const std::string& text);

/// Splits a rule line into words, honouring iptables-save's double quotes.
std::vector<std::string> Tokenize(const std::string& line);

/// Parses `ipset save NAME` output.
std::optional<IpsetSpec> ParseIpsetSave(const std::string& text);
/// Canonical text of an ipset entry ("10.0.0.0/8", "2001:db8::1"); empty when unparsable.
std::string CanonicalEntry(const std::string& entry);


}  // namespace mw::ipt
