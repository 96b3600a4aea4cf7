// The whole live firewall of this host as the reachability engine sees it: every nftables table
// (over netlink), the iptables tables of iptables-nft and iptables-legacy (their save output),
// the ipsets they use, and the network interfaces. Read-only.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "analysis/judge.h"
#include "analysis/reach.h"
#include "backend/backend.h"
#include "model/ruleset.h"
#include "policy/policy.h"
#include "util/status.h"

namespace mw {

struct HostView {
  analysis::Topology topo;
  std::vector<analysis::Interface> interfaces;
  bool forwarding[2] = {true, true};  ///< IPv4, IPv6: the kernel forwards (read from /proc/sys)
  std::vector<std::string> notes;             ///< what could not be read
  std::vector<std::shared_ptr<void>> keep;    ///< owners of the rule objects topo points at
};

struct HostViewOptions {
  /// nftables: judge mailward's table as `desired` would make it (plan), not as it is (check).
  const Ruleset* desired_nft = nullptr;
  /// The chosen backend's plan: the nftables backend's holds the live ruleset already, read once.
  /// It must outlive the HostView.
  const BackendPlan* plan = nullptr;
  /// Without such a plan: read mailward's own nftables allow sets too (explain needs them to
  /// judge an allowlisted source; another backend's check does not).
  bool read_own_elements = true;
  /// mailward's ipsets (mw_*) are taken from this desired ruleset instead of `ipset save` (at a
  /// million entries the dump costs seconds; a difference is drift, which the plan reports).
  const Ruleset* desired_ipsets = nullptr;
  /// Files and programs (env) and the nftables transport; null: the real ones. Tests: fakes.
  const BackendConfig* backend = nullptr;
};

/// Reads everything. An unreadable part (no iptables installed, no permission) is a note, not an
/// error, unless nothing at all can be read.
Result<HostView> ReadHostView(const HostViewOptions& opts);

/// The host's interfaces (getifaddrs), container bridges and bridge ports marked.
std::vector<analysis::Interface> ReadInterfaces();

/// What the policy claims, for the judge.
std::vector<analysis::PortClaim> ClaimsOf(const Policy& policy);

/// Turns the judge's violations into plan conflicts (mailward's own drift is the plan's business
/// and is left out, except a closed port that is reachable).
std::vector<Conflict> ToConflicts(const analysis::Judgement& j);

/// Implemented by the nftables backend: adds every active nftables table (except `skip`, the
/// tables iptables-nft manages) to `topo`, read through cfg's transport. REQUIRES: `desired` and `plan` outlive `topo`
/// (mailward's own set contents are looked up in place, not copied).
Status AddNftablesToTopology(const BackendConfig& cfg, const BackendPlan* plan, const Ruleset* desired, bool read_own_elements, const std::set<std::pair<uint32_t, std::string>>& skip,
                             analysis::Topology* topo, std::vector<std::shared_ptr<void>>* keep);

}  // namespace mw
