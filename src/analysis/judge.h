// What `check` and `plan` claim about a host, judged with the reachability engine: for each port
// of the policy and each family, an open port reaches from an ordinary source, a closed port does
// not (by any path, containers included), and each allowlist's sources do reach a closed port.
// Every violation names its owner (firewalld zone, UFW, Docker, fail2ban, a table) and the command
// that would resolve it. Pure.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "analysis/reach.h"

namespace mw::analysis {

struct PortClaim {
  uint16_t port = 0;
  std::string service;  ///< "imaps" when the policy named it so, else ""
  bool open = false;
  struct List {
    std::string name;
    std::vector<Cidr> entries;
  };
  std::vector<List> allowlists;  ///< closed ports: who must still get through
};

enum class ConflictKind : uint8_t { kOpenPortBlocked, kClosedPortReachable, kAllowlistBlocked };
const char* ConflictKindName(ConflictKind k);

struct Violation {
  ConflictKind kind = ConflictKind::kOpenPortBlocked;
  uint16_t port = 0;
  Family family = Family::kV4;
  Tri certainty = Tri::kYes;  ///< kMaybe: only on some branches (undecidable matches)
  std::string owner;          ///< "firewalld zone public", "UFW", "Docker", "table inet filter"...
  std::string where;          ///< table and chain of the deciding rule
  std::string reason;         ///< the rule (its text) or the policy that decides, and the path
  std::string fix;            ///< the command that resolves it
  std::string source;         ///< allowlist-blocked: "office (198.51.100.3)"; else ""
  std::string destination;    ///< closed-port-reachable: "this host" or "172.17.0.2:143"
};

struct SourceRestriction {
  uint16_t port = 0;
  Family family = Family::kV4;
  std::string owner, where, rule;
};

struct Judgement {
  std::vector<Violation> violations;
  std::vector<SourceRestriction> restrictions;
};

/// The flows an ordinary connection from the network can take: one per non-loopback,
/// non-container interface (with its first address of the family as destination); one
/// unspecified flow when the host has none.
std::vector<Flow> CandidateFlows(const std::vector<Interface>& interfaces, Family f, uint16_t port,
                                 bool forwarding = true);

/// Judges every claim for IPv4 and IPv6.
/// `forwarding[0|1]`: whether the kernel forwards IPv4 / IPv6.
Judgement Judge(const Topology& topo, const std::vector<Interface>& interfaces, const std::vector<PortClaim>& claims,
                const bool forwarding[2] = nullptr);

/// Who owns the rule of a step (for messages): "firewalld zone public", "UFW", "Docker",
/// "fail2ban jail dovecot", "mailward", else the table.
std::string OwnerOf(const Step& step, const std::vector<Step>& path);

}  // namespace mw::analysis
