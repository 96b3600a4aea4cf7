// The Backend interface: one per firewall manager (nftables, iptables, UFW behind one seam).
// Commands only see plans, changes and conflicts; how a backend reads and writes the kernel is
// its own business.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "analysis/judge.h"
#include "model/ruleset.h"
#include "sys/env.h"
#include "util/status.h"

namespace mw {
namespace nft {
class Transport;
}

/// What a plan line does, and to what (JSON: ChangeOpName / ChangeObjectName).
enum class ChangeOp : uint8_t { kAdd, kDelete, kReplace };
enum class ChangeObject : uint8_t { kTable, kChain, kSet, kElements, kRule };
/// "add" | "delete" | "replace"
const char* ChangeOpName(ChangeOp op);
/// "table" | "chain" | "set" | "elements" | "rule"
const char* ChangeObjectName(ChangeObject object);

/// One line of a plan, for people and for JSON.
struct Change {
  ChangeOp op = ChangeOp::kAdd;
  ChangeObject object = ChangeObject::kRule;
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
  /// Certain, or only on some paths mailward cannot decide (JSON: CertaintyName).
  bool maybe = false;
  std::string reason;    ///< the rule or policy that does it
  /// JSON: analysis::ConflictKindName ("open-port-blocked" | "closed-port-reachable" | "allowlist-blocked").
  analysis::ConflictKind kind = analysis::ConflictKind::kOpenPortBlocked;
  std::string owner;     ///< "firewalld zone public", "UFW", "Docker", "fail2ban jail X", "table inet filter"
  std::string fix;       ///< the command that resolves it
  std::string source;    ///< allowlist-blocked: the allowlist and the address tried
  std::string destination;  ///< closed-port-reachable: "this host" or the DNAT target
};

/// "blocks" | "may block"; for a closed port that reaches, "reaches" | "may reach" ("blocks" would
/// read backwards for a port that is open when it should not be).
const char* CertaintyName(const Conflict& c);

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

/// The plan a backend made, as its own type: each backend's Apply, TakeSnapshot and
/// RestoreOwnCommit accept only the plans it made itself. A plan of another backend is a bug in
/// the caller, never an input error: it aborts with a message naming both, instead of reading
/// a foreign object (what an unchecked static_cast would do).
template <class P>
const P& PlanAs(const BackendPlan& plan, const char* backend) {
  const P* p = dynamic_cast<const P*>(&plan);
  if (!p) {
    std::fprintf(stderr, "mailward: internal error: the %s backend was given a plan it did not make\n", backend);
    std::abort();
  }
  return *p;
}

/// A rollback point: opaque bytes, plus optionally an existing file that holds the bulk of it
/// (large address sets) and is hard-linked beside the snapshot instead of being copied.
struct Snapshot {
  std::string bytes;
  std::string attachment_path;
};

struct PlanOptions {
  bool analyze_conflicts = true;
  size_t max_items = 20;  ///< addresses listed per element change; 0 = all
  /// The read-back right after this backend's own Apply of the same ruleset (ops::Apply's
  /// verification). A backend may then take the contents it just wrote as read, where nobody
  /// has committed since, rather than compare them with a copy of themselves.
  bool verify_read_back = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  /// Reads the live state and diffs it against `desired`. Changes nothing. The plan may refer to
  /// `desired` (not copy it: it can hold a million addresses): keep it alive as long as the plan.
  virtual Result<std::unique_ptr<BackendPlan>> Plan(const Ruleset& desired, const PlanOptions& opts) = 0;

  /// Applies a plan made by this backend. Fails with Code::kGenerationMoved, changing nothing,
  /// when the live state changed since the plan was made. What "all or nothing" means differs
  /// per backend (the kernel interfaces differ):
  ///  - nftables: one netlink batch; the kernel commits all of it or none of it.
  ///  - iptables: one `ipset restore` and one `iptables-restore --noflush` per family covering
  ///    every table (one transaction with iptables-nft, table by table with legacy; never one
  ///    across the two families and the ipsets). A journal written first records the state
  ///    before it; a failure part-way undoes the steps already done, and an apply killed
  ///    part-way is put back from the journal by the next run that reads or writes the firewall.
  ///  - UFW: writes user.rules and user6.rules (each atomically, by rename), runs one
  ///    `ufw reload` and restores mailward's mangle/nat chains; a failure puts the files and
  ///    chains back as they were. Between the steps, another reader may see a half-written pair.
  virtual Status Apply(const BackendPlan& plan) = 0;

  /// Serialises mailward's own objects as they were when `plan` was made, for rollback.
  virtual Result<Snapshot> TakeSnapshot(const BackendPlan& plan) = 0;
  /// Restores a snapshot exactly, with the same guarantee as Apply on this backend (nftables:
  /// one batch; iptables: per family, journaled; UFW: the files, a reload, undone on failure).
  /// `attachment` is the content of the snapshot's attachment file, if it had one.
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
