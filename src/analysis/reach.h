// The reachability engine: one new TCP connection (a "flow") walked through every table of the
// live ruleset in the kernel's order, nftables and iptables alike:
//
//   ingress (netdev/inet, per device) -> prerouting (raw -300, mangle -150, dstnat -100, ...)
//     -> route: DNATed to an address that is not this host's -> forward, else -> input
//
// Each hook runs its base chains by priority; a drop or reject anywhere ends the flow, an accept
// only ends that base chain (as in the kernel). A rule whose match cannot be decided forks the walk
// (one branch where it matched, one where it did not), so the answer is exact three-valued:
// reaches on every branch, blocked on every branch, or "may be blocked".
//
// Matches on the SOURCE address are decided for the flow's source when it has one; for "an
// ordinary source" (no address given) a positive source match (a ban set, a spoofing filter, a
// partner list) does not hit and a negated one does: such rules are returned as source
// restrictions, not as the verdict. Pure: rules arrive as objects implementing Rule (nft_eval.h,
// ipt_eval.h); nothing here reads the kernel.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "analysis/lattice.h"
#include "policy/address.h"

namespace mw::analysis {

enum class Hook : uint8_t { kIngress, kPrerouting, kInput, kForward };
const char* HookName(Hook h);

/// A network interface of the host, for the flow's ingress and for routing a DNATed flow.
struct Interface {
  std::string name;
  std::vector<Cidr> addresses;  ///< with their prefix length (the connected route)
  bool loopback = false;
  bool container = false;  ///< a container bridge or one of its ports (docker0, br-*, veth*)
};

/// The connection being judged: TCP SYN of a new connection, arriving on a non-loopback
/// interface, to one of this host's addresses.
struct Flow {
  Family family = Family::kV4;
  uint16_t dport = 0;
  std::optional<Addr> saddr;   ///< nullopt: an ordinary source (in no list any rule names)
  std::optional<Addr> daddr;   ///< the host address it is sent to; nullopt: some local address
  std::optional<std::string> iif;  ///< ingress interface; nullopt: some non-loopback interface
  std::vector<Interface> interfaces;  ///< the host's, to tell local addresses and routes
  bool forwarding = true;  ///< the kernel forwards this family (net.ipv4.ip_forward / ipv6 forwarding)
  bool IsLocal(const Addr& a) const;
  /// The interface a packet to `a` leaves by (longest connected prefix), or "".
  std::string RouteOut(const Addr& a) const;
};

/// What a flow looks like at one point of the walk (rules read it, some statements change it).
struct FlowState {
  const Flow* flow = nullptr;
  Hook hook = Hook::kPrerouting;
  uint16_t dport = 0;              ///< current (after DNAT: the translated port)
  std::optional<Addr> daddr;       ///< current destination (after DNAT: the translated one)
  bool dest_local = true;          ///< the current destination is this host
  bool dnat = false;               ///< a DNAT happened (ct status dnat)
  std::optional<std::string> oif;  ///< forward hook: the outgoing interface
  uint32_t mark = 0;               ///< meta mark (set by earlier rules on the path)
  uint32_t ct_mark = 0;
  bool mark_known = true;
};

/// What a rule does when evaluated on a state.
struct RuleResult {
  enum class Action : uint8_t {
    kContinue,  ///< no verdict: on to the next rule (also non-terminal statements)
    kAccept, kDrop, kReject, kReturn, kJump, kGoto,
    kDnat,      ///< nat: translate the destination, then accept (ends the nat chain)
    kQueue,     ///< handed to user space: may drop
  };
  Tri match = Tri::kYes;          ///< kNo: the rule does not apply
  bool source_dependent = false;  ///< the match was decided by the ordinary-source assumption
  Action action = Action::kContinue;
  std::string target;             ///< kJump / kGoto: chain name
  std::optional<Addr> dnat_addr;  ///< kDnat: new destination (nullopt: unchanged address)
  std::optional<uint16_t> dnat_port;
  std::optional<uint32_t> set_mark, set_ct_mark;  ///< statements that changed marks
  bool mark_unknown = false;      ///< a statement set the mark to something undecidable
  std::optional<Addr> set_daddr;  ///< stateless NAT: the destination address rewritten
  std::optional<uint16_t> set_dport;
  bool rewrite_unknown = false;   ///< the destination was rewritten to something undecidable
};

/// One rule of some chain.
class Rule {
 public:
  virtual ~Rule() = default;
  /// Decides the rule for `st`. REQUIRES: st.flow set.
  virtual RuleResult Evaluate(const FlowState& st) const = 0;
  /// The rule in its tool's syntax ("tcp dport 993 reject", "-A INPUT -p tcp ... -j DROP").
  virtual std::string Text() const = 0;
};

struct Chain {
  std::string name;
  std::vector<std::unique_ptr<Rule>> rules;
};

/// A chain attached to a hook.
struct BaseChain {
  std::string chain;
  Hook hook = Hook::kInput;
  int32_t priority = 0;
  bool nat = false;            ///< type nat: only the first packet of a connection, may DNAT
  bool policy_drop = false;
  std::vector<std::string> devices;  ///< ingress: the devices it is bound to
};

/// Which tool's syntax a table speaks (for messages and fixes).
enum class Dialect : uint8_t { kNft, kIptables };

struct Table {
  Dialect dialect = Dialect::kNft;
  std::string family;  ///< nft: "ip" | "ip6" | "inet" | "netdev"; iptables: "iptables" | "ip6tables"
  std::string name;    ///< nft table name; iptables: "filter" | "nat" | "mangle" | "raw" | "security"
  bool legacy = false; ///< iptables-legacy (not iptables-nft)
  std::map<std::string, Chain> chains;
  std::vector<BaseChain> bases;
  /// "table inet filter", "iptables filter" (legacy: "iptables-legacy filter")
  std::string Label() const;
  bool Applies(Family f) const;
};

struct Topology {
  std::deque<Table> tables;  ///< a deque: rules keep pointers to their table
};

/// One step of a walk, like a line of `nft monitor trace`.
struct Step {
  std::string table;   ///< Table::Label()
  std::string chain;
  std::string rule;    ///< the rule's text, or "policy drop"/"policy accept"
  std::string action;  ///< "accept" | "drop" | "reject" | "jump X" | "dnat to A" | "return" | "policy ..."
  Tri certainty = Tri::kYes;  ///< kMaybe: the rule's match was undecided on this branch
};

/// A rule that blocks some sources only (a ban list, a spoofing filter, a per-source limit).
struct Restriction {
  std::string table, chain, rule;
};

enum class Reach : uint8_t { kReaches, kBlocked, kMaybeBlocked };
const char* ReachName(Reach r);

struct Verdict {
  Reach reach = Reach::kReaches;
  std::string destination;     ///< "this host" or the DNAT target ("172.17.0.2:143")
  std::vector<Step> path;      ///< of the deciding branch (a blocking one when any blocks)
  std::optional<Step> decided_by;
  /// With WalkOptions::all_blockers: every rule or policy on the deciding branch that drops it
  /// (the first is decided_by), so each owner can be told.
  std::vector<Step> blockers;
  std::vector<Restriction> restrictions;
};

struct WalkOptions {
  size_t max_branches = 256;  ///< undecided forks explored; beyond that: kMaybeBlocked
  bool all_blockers = false;  ///< go on past a drop to find every other one on the path
};

/// Walks `flow` through `topo`. At most `max_branches` undecided forks are explored; beyond
/// that the verdict is kMaybeBlocked.
Verdict Walk(const Topology& topo, const Flow& flow, const WalkOptions& opts = {});

}  // namespace mw::analysis
