// The Backend interface: one per firewall manager (nftables now; iptables and UFW behind the
// same seam). Commands only see plans, changes and conflicts; how a backend reads and writes
// the kernel is its own business.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/ruleset.h"
#include "sys/env.h"
#include "util/status.h"

namespace mw {
namespace nft {
class Transport;
}

/// One line of a plan, for people and for JSON.
struct Change {
  std::string op;      ///< "add" | "delete" | "replace"
  std::string object;  ///< "table" | "chain" | "set" | "elements" | "rule"
  std::string name;    ///< table/chain/set name or rule key
  std::string detail;  ///< nft-like text of the rule or set, or the reason
  size_t count = 1;    ///< elements: how many intervals
  std::vector<std::string> items;  ///< elements: the addresses (may be truncated to a sample)
};

/// Where the live firewall does not do what the policy says, judged by the reachability engine
/// (analysis/judge.h) over every path: an open port blocked, a closed port reachable (a DNAT to a
/// container, mailward's rules missing), an allowlisted source blocked.
struct Conflict {
  uint16_t port = 0;
  std::string family;    ///< "ipv4" | "ipv6"
  std::string where;     ///< e.g. "table inet filter chain input"
  std::string certainty; ///< "blocks" | "may block" (closed-port-reachable: "reaches" | "may reach")
  std::string reason;    ///< the rule or policy that does it
  std::string kind;      ///< "open-port-blocked" | "closed-port-reachable" | "allowlist-blocked"
  std::string owner;     ///< "firewalld zone public", "UFW", "Docker", "fail2ban jail X", "table inet filter"
  std::string fix;       ///< the command that resolves it
  std::string source;    ///< allowlist-blocked: the allowlist and the address tried
  std::string destination;  ///< closed-port-reachable: "this host" or the DNAT target
};

/// A rule that blocks only some sources (a ban list, an anti-spoofing filter, a per-source rate
/// limit): reported for information, never a conflict.
struct SourceRestriction {
  uint16_t port = 0;
  std::string family, owner, where, rule;
};

/// A backend's plan: what it would change, against which live state.
class BackendPlan {
 public:
  virtual ~BackendPlan() = default;
  std::vector<Change> changes;
  std::vector<Conflict> conflicts;
  std::vector<SourceRestriction> restrictions;
  std::vector<std::string> notes;
  uint32_t generation = 0;  ///< the live state's version the plan was made against
  bool in_sync() const { return changes.empty(); }
};

/// A rollback point: opaque bytes, plus optionally an existing file that holds the bulk of it
/// (large address sets) and is hard-linked beside the snapshot instead of being copied.
struct Snapshot {
  std::string bytes;
  std::string attachment_path;
};

struct PlanOptions {
  bool analyze_conflicts = true;
  size_t max_items = 20;  ///< addresses listed per element change; 0 = all
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  /// Reads the live state and diffs it against `desired`. Changes nothing.
  virtual Result<std::unique_ptr<BackendPlan>> Plan(const Ruleset& desired, const PlanOptions& opts) = 0;

  /// Applies a plan made by this backend, atomically: all of it or none of it. Fails with
  /// Code::kGenerationMoved when the live state changed since the plan was made.
  virtual Status Apply(const BackendPlan& plan) = 0;

  /// Serialises mailward's own objects as they were when `plan` was made, for rollback.
  virtual Result<Snapshot> TakeSnapshot(const BackendPlan& plan) = 0;
  /// Restores a snapshot exactly, atomically. `attachment` is the content of the snapshot's
  /// attachment file, if it had one.
  virtual Status Restore(const std::string& bytes, const std::string& attachment) = 0;

  /// A plan that takes away everything mailward owns on this backend (`mailward remove`): its
  /// table, chains and jumps, ipsets, rules in UFW's files. Apply and TakeSnapshot accept it like
  /// any plan; an empty plan: nothing of mailward's is there.
  virtual Result<std::unique_ptr<BackendPlan>> PlanRemove(const PlanOptions& opts) = 0;

  /// What Restore(bytes, attachment) would change now, as plan lines (`rollback --dry-run`).
  /// Reads, changes nothing.
  virtual Result<std::vector<Change>> PlanRestore(const std::string& bytes, const std::string& attachment,
                                                  const PlanOptions& opts) = 0;

  /// Undoes this process's own Apply(applied) after its verification failed, by restoring the
  /// snapshot taken for it, but only while nobody else has committed since: with several state
  /// directories (several mailwards) on one host, a read-back that differs may show another
  /// process's later commit, which a restore would silently undo. Fails with
  /// Code::kGenerationMoved, restoring nothing, when that is so. Backends without a ruleset
  /// generation counter restore as Restore does.
  virtual Status RestoreOwnCommit(const BackendPlan& applied, const std::string& bytes, const std::string& attachment) {
    (void)applied;
    return Restore(bytes, attachment);
  }
};

struct BackendConfig {
  std::string state_dir;
  sys::Env* env = &sys::RealEnv();  ///< files, programs, clock (tests: a FakeEnv)
  /// The iptables backend may read and delete iptables-nft's own nftables tables over netlink
  /// (unit tests turn it off: they never touch a kernel).
  bool netlink = true;
  /// Opens the netlink transport to nf_tables (backend/nft/nft_netlink.h); empty: a real netlink
  /// socket. Unit tests give a fake (tests/fakes/fake_nft_transport.h).
  std::function<Result<std::unique_ptr<nft::Transport>>()> nft_transport;
};

/// The nftables backend (netlink, libnftnl).
std::unique_ptr<Backend> MakeNftablesBackend(const BackendConfig& cfg);
/// The iptables backend (iptables-save/-restore, ipset).
std::unique_ptr<Backend> MakeIptablesBackend(const BackendConfig& cfg);
/// The UFW backend (UFW's rules files, one `ufw reload`).
std::unique_ptr<Backend> MakeUfwBackend(const BackendConfig& cfg);
/// The backend that made a snapshot (each marks its own), for rollback; nftables when unknown.
std::unique_ptr<Backend> BackendForSnapshot(const std::string& bytes, const BackendConfig& cfg);

}  // namespace mw
