// The iptables backend: mailward's chain MAILWARD in the filter table of iptables and
// ip6tables, one jump to it from INPUT, the same-named chains in mangle and nat jumped to from
// PREROUTING for the DNAT path (ipt_rules.h says why), and its allowlists in ipsets (mw_*).
// Reads with iptables-save and `ipset save`, writes with one `ipset restore` and one
// `iptables-restore --noflush` per family covering every table (one transaction with
// iptables-nft; table by table with legacy); a failure part-way is undone.
// A kill part-way cannot undo itself: before its first change an apply writes a journal (the
// state it started from, every table) and the next run that reads or writes the firewall puts it
// back.
// Every command runs from argv, never through a shell.
#include <errno.h>
#include <fcntl.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "backend/backend.h"
#include "backend/ipt/ipt_rules.h"
#include "backend/nft/nft_netlink.h"
#include "util/fs.h"
#include "util/text.h"
#include "util/hash.h"
#include "sys/test_hooks.h"
#include "util/process.h"
#include "util/timing.h"

namespace mw {
namespace ipt {
namespace {

constexpr size_t kSwapThreshold = 1000;  ///< element edits above this (and half the set): rebuild + swap

/// The programs of one iptables variant.
struct Tools {
  std::string variant;  ///< "nft" | "legacy" | "" (the system's default)
  std::string save[2], restore[2];
  std::string ipset = "ipset";
};

Tools ChooseTools(sys::Env& env) {
  Tools t;
  std::string want = env.GetEnv("MAILWARD_IPTABLES").value_or("");
  auto use = [&](const std::string& suffix) {
    t.variant = suffix;
    std::string mid = suffix.empty() ? "" : "-" + suffix;
    t.save[0] = "iptables" + mid + "-save";
    t.restore[0] = "iptables" + mid + "-restore";
    t.save[1] = "ip6tables" + mid + "-save";
    t.restore[1] = "ip6tables" + mid + "-restore";
  };
  if (want == "legacy" || want == "nft") {
    use(want);
    return t;
  }
  use("");
  // iptables-nft warns when the host's rules live in the legacy tables: follow the host.
  auto probe = env.Run({t.save[0], "-t", "filter"});
  if (probe.ok() && (probe.out + probe.err).find("iptables-legacy tables present") != std::string::npos &&
      env.HaveProgram("iptables-legacy-save"))
    use("legacy");
  return t;
}

struct LiveFamily {
  bool available = false;
  std::string error;   ///< why the family is not available
  std::string stable;  ///< the save output without comments and counters
  SavedTable table;    ///< filter
  SavedTable pre[kTableCount];  ///< mangle (1) and nat (2); [0] unused
  /// iptables-nft: whether nftables holds this family's table of that name (index into kTables;
  /// iptables-save prints the built-in chains of filter either way); unknown for legacy iptables.
  std::optional<bool> nft_table[kTableCount];
  OwnState Own() const {
    OwnState s;
    s.t[0] = OwnOf(table, 0);
    for (int t = 1; t < kTableCount; ++t) s.t[t] = OwnOf(pre[t], t);
    return s;
  }
};

struct Live {
  LiveFamily fam[2];
  std::map<std::string, IpsetSpec> ipsets;  ///< mailward's sets, with entries
  std::vector<std::string> temps;           ///< leftover temporary sets of a crashed run
  std::string ipset_headers;
  bool ipset_missing = false;
  uint32_t generation = 0;
};

struct Target {
  OwnState own[2];
  std::map<std::string, IpsetSpec> ipsets;
};

uint8_t NfProto(int f) { return f == 0 ? NFPROTO_IPV4 : NFPROTO_IPV6; }

/// The built-in chains iptables-nft creates in table `t` (index into kTables).
bool IsBuiltinChain(int t, const std::string& name) {
  static const std::set<std::string> builtin[kTableCount] = {
      {"INPUT", "FORWARD", "OUTPUT"},
      {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
      {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}};
  return builtin[t].count(name) > 0;
}

/// The names of family f's nftables tables (iptables-nft keeps each iptables table in the
/// nftables table of the same name); nullopt when nftables cannot be read.
std::optional<std::set<std::string>> NftTableNames(nft::Transport& sock, int f) {
  std::set<std::string> names;
  Status s = sock.Request(
      [&](char* buf, uint32_t seq) { return nftnl_table_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NfProto(f), NLM_F_DUMP, seq); },
      [&](const nlmsghdr* nlh) {
        nftnl_table* tb = nftnl_table_alloc();
        if (nftnl_table_nlmsg_parse(nlh, tb) == 0 && nftnl_table_get_u32(tb, NFTNL_TABLE_FAMILY) == NfProto(f))
          names.insert(nftnl_table_get_str(tb, NFTNL_TABLE_NAME));
        nftnl_table_free(tb);
        return MNL_CB_OK;
      });
  if (!s.ok()) return std::nullopt;
  return names;
}

/// Deletes family f's nftables table kTables[t] when it holds nothing but iptables-nft's empty
/// built-in chains (policy accept; no rules, no sets, no other chain): the table an apply
/// created on a host that had none. Anything else in it, or anything changing meanwhile (the
/// delete carries the generation it was checked at), leaves it. Returns whether it was deleted.
Result<bool> DeleteEmptyNftTable(const nft::TransportFactory& transport, int f, int t) {
  auto sock = nft::OpenTransport(transport);
  if (!sock.ok()) return sock.status();
  auto gen = (*sock)->GetGeneration();
  if (!gen.ok()) return gen.status();
  auto names = NftTableNames(**sock, f);
  if (!names) return Status::Netlink("cannot list the nftables tables");
  if (!names->count(kTables[t])) return false;
  bool empty = true;
  auto in_table = [&](const char* table) { return table && std::strcmp(table, kTables[t]) == 0; };
  MW_RETURN_IF_ERROR((*sock)->Request(
      [&](char* buf, uint32_t seq) { return nftnl_chain_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, NfProto(f), NLM_F_DUMP, seq); },
      [&](const nlmsghdr* nlh) {
        nftnl_chain* c = nftnl_chain_alloc();
        if (nftnl_chain_nlmsg_parse(nlh, c) == 0 && in_table(nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE))) {
          std::string name = nftnl_chain_get_str(c, NFTNL_CHAIN_NAME);
          bool builtin = IsBuiltinChain(t, name) && nftnl_chain_is_set(c, NFTNL_CHAIN_HOOKNUM) &&
                         nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY) == NF_ACCEPT;
          empty &= builtin;
        } else if (!nftnl_chain_is_set(c, NFTNL_CHAIN_TABLE)) {
          empty = false;  // unreadable: keep the table
        }
        nftnl_chain_free(c);
        return MNL_CB_OK;
      }));
  MW_RETURN_IF_ERROR((*sock)->Request(
      [&](char* buf, uint32_t seq) { return nftnl_rule_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, NfProto(f), NLM_F_DUMP, seq); },
      [&](const nlmsghdr* nlh) {
        nftnl_rule* r = nftnl_rule_alloc();
        nftnl_rule_nlmsg_parse(nlh, r);
        if (!nftnl_rule_is_set(r, NFTNL_RULE_TABLE) || in_table(nftnl_rule_get_str(r, NFTNL_RULE_TABLE))) empty = false;
        nftnl_rule_free(r);
        return MNL_CB_OK;
      }));
  MW_RETURN_IF_ERROR((*sock)->Request(
      [&](char* buf, uint32_t seq) { return nftnl_set_nlmsg_build_hdr(buf, NFT_MSG_GETSET, NfProto(f), NLM_F_DUMP, seq); },
      [&](const nlmsghdr* nlh) {
        nftnl_set* st = nftnl_set_alloc();
        if (nftnl_set_nlmsg_parse(nlh, st) != 0 || in_table(nftnl_set_get_str(st, NFTNL_SET_TABLE))) empty = false;
        nftnl_set_free(st);
        return MNL_CB_OK;
      }));
  if (!empty) return false;
  nft::Batch batch(*gen);
  nlmsghdr* nlh = batch.Add(NFT_MSG_DELTABLE, NfProto(f), 0, 512, std::string("delete the empty table ") + kTables[t]);
  nftnl_table* tb = nftnl_table_alloc();
  nftnl_table_set_str(tb, NFTNL_TABLE_NAME, kTables[t]);
  nftnl_table_nlmsg_build_payload(nlh, tb);
  nftnl_table_free(tb);
  batch.Commit(nlh);
  batch.End();
  Status sent = (*sock)->Send(batch);
  if (sent.code() == Code::kGenerationMoved) return false;  // someone else is at work: leave it
  if (!sent.ok()) return sent;
  return true;
}

/// The exclusive lock on the journal of the iptables backend. Its descriptor is inherited by
/// the programs run while it is held, so the restore programs of an apply that was killed keep
/// it held until they exit: the journal is only ever replayed once nothing of that apply runs.
Result<std::unique_ptr<sys::FileLock>> LockJournal(sys::Env& env, const std::string& path, double timeout_s) {
  auto lock = env.LockFile(path, timeout_s, 20, sys::LockInherit::kByChildren,
                            "an iptables apply is still in progress (" + path + " held for more than " +
                                std::to_string(static_cast<int>(timeout_s)) +
                                " s, by mailward or by the iptables-restore or ipset programs of "
                                "an apply that was killed); try again when they are done");
  if (!lock.ok() && lock.status().code() == Code::kIo)
    return Status::Io(path + ": cannot open the journal lock: " + lock.status().message());
  return lock;
}

/// A snapshot parsed: mailward's objects per family and table, its ipsets, and which of
/// iptables-nft's nftables tables existed.
struct ParsedSnapshot {
  Target target;
  bool seen[2] = {false, false};
  std::optional<bool> nft_table[2][kTableCount];
};

class IptPlan : public BackendPlan {
 public:
  Live live;
  Target target;
  std::string ipset_script, ipset_undo;
  std::string restore[2], undo[2];
  std::vector<std::string> destroy;
};

class IptablesBackend : public Backend {
 public:
  explicit IptablesBackend(const BackendConfig& cfg) : cfg_(cfg), env_(*cfg.env), tools_(ChooseTools(env_)) {}
  std::string name() const override { return "iptables"; }

  Result<std::unique_ptr<BackendPlan>> Plan(const Ruleset& desired, const PlanOptions& opts) override {
    MW_RETURN_IF_ERROR(Recover());
    auto live = ReadLive(true);
    if (!live.ok()) return live.status();
    Target t;
    for (int f = 0; f < 2; ++f) {
      Family fam = f == 0 ? Family::kV4 : Family::kV6;
      t.own[f].t[0].chain = true;
      t.own[f].t[0].rules = ChainRules(desired, fam);
      t.own[f].t[0].jumps = {JumpRule()};
      for (int tb = 1; tb < kTableCount; ++tb) {
        OwnTable& o = t.own[f].t[tb];
        o.rules = PreroutingChainRules(desired, fam, tb);
        o.chain = !o.rules.empty();
        if (o.chain) o.jumps = {JumpRule(tb)};
      }
    }
    for (const auto& s : desired.sets)
      if (s.spec.is_allow()) {
        IpsetSpec spec = MakeIpset(s);
        t.ipsets[spec.name] = std::move(spec);
      }
    if (live->ipset_missing && !t.ipsets.empty())
      return Status::Error(Code::kFirewall, "the policy's allowlists need ipset, which is not installed (apt install ipset)");
    auto plan = MakePlan(std::move(*live), std::move(t), opts);
    if (recovered_)
      plan->notes.push_back("an earlier apply was interrupted part-way (killed): iptables, ip6tables and mailward's "
                            "ipsets were put back to the state before it, as its journal recorded");
    return std::unique_ptr<BackendPlan>(std::move(plan));
  }

  Status Apply(const BackendPlan& base) override {
    const auto& plan = PlanAs<IptPlan>(base, "iptables");
    if (plan.changes.empty()) return Status::Ok();
    if (cfg_.state_dir.empty()) return ApplyLocked(plan, nullptr);
    auto lock = LockJournal(env_, JournalLockPath(), kJournalWait);
    if (!lock.ok()) return lock.status();
    // An interrupted apply found now moves the generation, so the caller plans again.
    MW_RETURN_IF_ERROR(RecoverLocked());
    auto journal = TakeSnapshot(plan);
    if (!journal.ok()) return journal.status();
    MW_RETURN_IF_ERROR(ApplyLocked(plan, &journal->bytes));
    // What this commit made, so a failed read-back can tell it from someone else's later one.
    auto after = ReadLive(false);
    committed_generation_ = after.ok() ? std::optional<uint32_t>(after->generation) : std::nullopt;
    sys::AfterCommitHook(cfg_.state_dir);
    return Status::Ok();
  }

  Status RestoreOwnCommit(const BackendPlan& applied, const std::string& bytes, const std::string& attachment) override {
    (void)applied;
    // No generation counter in iptables: the state this apply's commit left, hashed, stands in.
    auto now = ReadLive(false);
    if (!now.ok()) return now.status();
    if (!committed_generation_ || now->generation != *committed_generation_)
      return Status::Error(Code::kGenerationMoved,
                           "another process changed iptables or mailward's ipsets after this apply, so the read-back "
                           "may show its change; not rolled back, to leave that change alone: run 'mailward check' "
                           "(and 'mailward rollback' if this apply must go)");
    return Restore(bytes, attachment);
  }

  Result<std::unique_ptr<BackendPlan>> PlanRemove(const PlanOptions& opts) override {
    MW_RETURN_IF_ERROR(Recover());
    auto live = ReadLive(true);
    if (!live.ok()) return live.status();
    // The target is nothing: no chains, no jumps, no ipsets of mailward's.
    return std::unique_ptr<BackendPlan>(MakePlan(std::move(*live), Target{}, opts));
  }

  Result<std::vector<Change>> PlanRestore(const std::string& bytes, const std::string&, const PlanOptions& opts) override {
    if (!IsSnapshot(bytes)) return Status::Invalid("this snapshot was not made by the iptables backend");
    auto ps = ParseSnapshot(bytes);
    if (!ps.ok()) return ps.status();
    MW_RETURN_IF_ERROR(Recover());
    auto live = ReadLive(true);
    if (!live.ok()) return live.status();
    Target t = std::move(ps->target);
    for (int f = 0; f < 2; ++f)
      if (!ps->seen[f]) t.own[f] = live->fam[f].Own();  // not recorded: a restore leaves it as it is
    return MakePlan(std::move(*live), std::move(t), opts)->changes;
  }

  Result<Snapshot> TakeSnapshot(const BackendPlan& base) override {
    const auto& plan = PlanAs<IptPlan>(base, "iptables");
    std::string out = "MWIPT2\n";
    for (int f = 0; f < 2; ++f) {
      const auto& fam = plan.live.fam[f];
      if (!fam.available) continue;
      OwnState s = fam.Own();
      for (int tb = 0; tb < kTableCount; ++tb) {
        std::string tag = std::string(f == 0 ? "v4 " : "v6 ") + kTables[tb];
        out += tag + " chain " + (s.t[tb].chain ? "1" : "0") + "\n";
        for (const auto& r : s.t[tb].rules) out += tag + " rule " + r + "\n";
        for (const auto& j : s.t[tb].jumps) out += tag + " jump " + j + "\n";
        if (fam.nft_table[tb]) out += tag + " table " + (*fam.nft_table[tb] ? "1" : "0") + "\n";
      }
    }
    for (const auto& [name, set] : plan.live.ipsets) {
      out += "set " + set.name + " " + set.type + " " + (set.family == Family::kV4 ? "inet" : "inet6") + " " +
             std::to_string(set.maxelem) + "\n";
      for (const auto& e : set.entries) out += "entry " + e + "\n";
    }
    return Snapshot{out, ""};
  }

  Status Restore(const std::string& bytes, const std::string&) override {
    if (!IsSnapshot(bytes)) return Status::Invalid("this snapshot was not made by the iptables backend");
    if (cfg_.state_dir.empty()) return RestoreLocked(bytes, true);
    auto lock = LockJournal(env_, JournalLockPath(), kJournalWait);
    if (!lock.ok()) return lock.status();
    MW_RETURN_IF_ERROR(RecoverLocked());
    return RestoreLocked(bytes, true);
  }

 private:
  static constexpr double kJournalWait = 60;  ///< seconds to wait for another apply's journal lock

  /// MWIPT2 records every table; MWIPT1 (before the mangle and nat chains) the filter table
  /// only: mailward had no chain elsewhere then. Both are read.
  static bool IsSnapshot(const std::string& bytes) {
    return bytes.rfind("MWIPT1\n", 0) == 0 || bytes.rfind("MWIPT2\n", 0) == 0;
  }

  std::string JournalPath() const { return cfg_.state_dir + "/iptables.journal"; }
  std::string JournalLockPath() const { return cfg_.state_dir + "/iptables.journal.lock"; }

  /// Before a read: an apply killed part-way (its journal still there, and nothing of it
  /// running any more) is put back to the state it started from, so the firewall is never left
  /// with IPv4 on one policy and IPv6 on another, nor with half-filled ipsets.
  Status Recover() {
    if (cfg_.state_dir.empty() || !env_.Exists(JournalPath())) return Status::Ok();
    auto lock = LockJournal(env_, JournalLockPath(), kJournalWait);
    if (!lock.ok()) return lock.status();
    return RecoverLocked();
  }

  Status RecoverLocked() {
    std::string path = JournalPath();
    if (!env_.Exists(path)) return Status::Ok();
    auto j = env_.ReadFile(path);
    if (!j.ok()) return j.status().WithContext("the journal of an interrupted iptables apply");
    if (!IsSnapshot(*j))
      return Status::Error(Code::kFirewall, path + " is not a journal of mailward's iptables backend; move it away to go on");
    // The journal stays until the state it records is back, so a kill now is recovered too.
    Status s = RestoreLocked(*j, false);
    if (!s.ok())
      return Status::Error(s.code(), "an apply was interrupted part-way and putting back the state before it failed: " +
                                         s.message() + " (journal " + path + "; the next run tries again)");
    if (Status rm = env_.RemoveFile(path); !rm.ok()) return rm.WithContext("cannot remove the journal");
    recovered_ = true;
    return Status::Ok();
  }

  /// Parses a snapshot or journal; only mailward's own objects are ever written back, so a
  /// rule or jump line that is not one of them makes it damaged.
  static Result<ParsedSnapshot> ParseSnapshot(const std::string& bytes) {
    bool v1 = bytes.rfind("MWIPT1\n", 0) == 0;
    ParsedSnapshot ps;
    std::istringstream in(bytes.substr(7));
    std::string line;
    IpsetSpec* cur = nullptr;
    while (std::getline(in, line)) {
      if (line.rfind("entry ", 0) == 0 && cur) {
        cur->entries.push_back(line.substr(6));
        continue;
      }
      if (line.rfind("set ", 0) == 0) {
        std::istringstream ws(line.substr(4));
        IpsetSpec s;
        std::string fam;
        ws >> s.name >> s.type >> fam >> s.maxelem;
        s.family = fam == "inet6" ? Family::kV6 : Family::kV4;
        cur = &(ps.target.ipsets[s.name] = s);
        continue;
      }
      if (line.size() < 3) continue;
      int f = line.rfind("v6 ", 0) == 0 ? 1 : 0;
      ps.seen[f] = true;
      std::string rest = line.substr(3);
      int tb = 0;
      if (!v1) {
        size_t sp = rest.find(' ');
        std::string table = rest.substr(0, sp);
        tb = -1;
        for (int i = 0; i < kTableCount; ++i)
          if (table == kTables[i]) tb = i;
        if (tb < 0 || sp == std::string::npos) return Status::Invalid("a damaged iptables snapshot: " + line);
        rest = rest.substr(sp + 1);
      }
      OwnTable& o = ps.target.own[f].t[tb];
      if (rest.rfind("chain ", 0) == 0) {
        o.chain = rest.substr(6) == "1";
      } else if (rest.rfind("rule ", 0) == 0) {
        if (!IsOwnRuleLine(rest.substr(5), tb)) return Status::Invalid("a snapshot rule that is not mailward's: " + rest);
        o.rules.push_back(rest.substr(5));
      } else if (rest.rfind("jump ", 0) == 0) {
        if (!IsOwnJumpLine(rest.substr(5), tb)) return Status::Invalid("a snapshot jump that is not mailward's: " + rest);
        o.jumps.push_back(rest.substr(5));
      } else if (rest.rfind("table ", 0) == 0) {
        ps.nft_table[f][tb] = rest.substr(6) == "1";
      }
    }
    return ps;
  }

  /// Puts the state of a snapshot back (the journal lock held). With `journal`, what is there
  /// now is journaled first; without, the caller's journal stays in place.
  Status RestoreLocked(const std::string& bytes, bool journal) {
    auto ps = ParseSnapshot(bytes);
    if (!ps.ok()) return ps.status();
    auto live = ReadLive(true);
    if (!live.ok()) return live.status();
    Target t = std::move(ps->target);
    for (int f = 0; f < 2; ++f)
      if (!ps->seen[f]) t.own[f] = live->fam[f].Own();  // not recorded: leave as it is
    PlanOptions opts;
    opts.analyze_conflicts = false;
    auto plan = MakePlan(std::move(*live), std::move(t), opts);
    std::string before;
    if (journal && !plan->changes.empty()) {
      auto snap = TakeSnapshot(*plan);
      if (!snap.ok()) return snap.status();
      before = std::move(snap->bytes);
    }
    MW_RETURN_IF_ERROR(ApplyLocked(*plan, journal && !cfg_.state_dir.empty() ? &before : nullptr));
    RemoveCreatedTables(ps->nft_table);
    return Status::Ok();
  }

  /// iptables-nft creates its `filter`, `mangle` and `nat` tables on first use; where the
  /// snapshot had none, the (now empty) table goes too, so the host is exactly as it was.
  void RemoveCreatedTables(const std::optional<bool> (&had)[2][kTableCount]) {
    if (tools_.variant == "legacy" || !cfg_.netlink) return;
    for (int f = 0; f < 2; ++f)
      for (int tb = 0; tb < kTableCount; ++tb)
        if (had[f][tb] && !*had[f][tb]) (void)DeleteEmptyNftTable(cfg_.nft_transport, f, tb);
  }

  /// Applies a plan (the journal lock held, when there is a state directory). With `journal`,
  /// writes it durably before the first change and removes it once all went in, or once a
  /// failure was fully undone.
  Status ApplyLocked(const IptPlan& plan, const std::string* journal) {
    if (plan.changes.empty()) return Status::Ok();
    {
      Phase p("recheck live state");
      auto now = ReadLive(false);
      if (!now.ok()) return now.status();
      if (now->generation != plan.generation)
        return Status::Error(Code::kGenerationMoved,
                             "the iptables rules or mailward's ipsets changed since the plan was made; nothing was applied");
    }
    if (journal) {
      Phase p("write journal");
      MW_RETURN_IF_ERROR(env_.WriteFileAtomic(JournalPath(), *journal, Durability::kFsync)
                             .WithContext("cannot write the apply journal, nothing was applied"));
    }
    auto done = [&] {
      if (journal) (void)env_.RemoveFile(JournalPath());
    };
    if (!plan.ipset_script.empty()) {
      Phase p("ipset restore");
      auto r = env_.Run({tools_.ipset, "-exist", "restore"}, plan.ipset_script);
      if (!r.ok()) {
        auto u = env_.Run({tools_.ipset, "-exist", "restore"}, plan.ipset_undo);
        if (u.ok()) done();
        return Status::Error(Code::kFirewall, "ipset restore failed: " + r.Message() +
                                                  (u.ok() ? "; nothing was applied" : "; undoing it failed too: " + u.Message()));
      }
    }
    for (int f = 0; f < 2; ++f) {
      if (plan.restore[f].empty()) continue;
      Phase p(f == 0 ? "iptables-restore" : "ip6tables-restore");
      ProcessResult r = env_.Run({tools_.restore[f], "--noflush"}, plan.restore[f]);
      if (!r.ok()) {
        // Undo what went in: the families already restored, then the ipsets.
        std::string undo_errors;
        // With legacy iptables the tables before the failing one are committed already.
        if (auto now = ReadLive(false); now.ok() && now->fam[f].available) {
          std::string back = RestoreScript(now->fam[f].Own(), plan.live.fam[f].Own());
          if (!back.empty()) {
            auto u = env_.Run({tools_.restore[f], "--noflush"}, back);
            if (!u.ok()) undo_errors += "; undoing " + tools_.restore[f] + " failed too: " + u.Message();
          }
        }
        for (int g = f - 1; g >= 0; --g)
          if (!plan.undo[g].empty()) {
            auto u = env_.Run({tools_.restore[g], "--noflush"}, plan.undo[g]);
            if (!u.ok()) undo_errors += "; undoing " + tools_.restore[g] + " failed too: " + u.Message();
          }
        if (!plan.ipset_undo.empty()) {
          auto u = env_.Run({tools_.ipset, "-exist", "restore"}, plan.ipset_undo);
          if (!u.ok()) undo_errors += "; undoing the ipset changes failed too: " + u.Message();
        }
        if (undo_errors.empty()) {
          std::optional<bool> had[2][kTableCount];
          for (int g = 0; g < 2; ++g)
            for (int tb = 0; tb < kTableCount; ++tb) had[g][tb] = plan.live.fam[g].nft_table[tb];
          RemoveCreatedTables(had);
          done();
        }
        return Status::Error(Code::kFirewall, tools_.restore[f] + " failed: " + r.Message() +
                                                  (undo_errors.empty() ? "; everything was put back as it was" : undo_errors));
      }
    }
    for (const auto& name : plan.destroy) {
      auto r = env_.Run({tools_.ipset, "destroy", name});
      if (!r.ok()) {
        done();  // the rules are all in: a set left over is drift the next apply removes
        return Status::Error(Code::kFirewall, "the rules were applied, but the unused ipset " + name +
                                                  " could not be removed: " + r.Message());
      }
    }
    done();
    return Status::Ok();
  }

  Result<Live> ReadLive(bool with_entries) {
    Phase p("read iptables state");
    Live live;
    for (int f = 0; f < 2; ++f) {
      // Every table at once (mailward's chains are in filter, mangle and nat); tables that
      // were never used are not listed, and reading does not create them.
      auto r = env_.Run({tools_.save[f]});
      LiveFamily& fam = live.fam[f];
      if (!r.ok()) {
        if (f == 0)
          return Status::Error(Code::kFirewall, tools_.save[f] + " failed: " + r.Message() +
                                                    " (is the iptables package installed?)");
        fam.error = r.Message();
        continue;
      }
      fam.available = true;
      fam.stable = StableText(r.out);
      auto tables = ParseSaveAll(r.out);
      fam.table = tables["filter"];
      for (int tb = 1; tb < kTableCount; ++tb) fam.pre[tb] = tables[kTables[tb]];
      if (fam.table.chains.empty()) {
        // An empty filter table prints nothing: it has the built-in chains, accepting.
        for (const char* c : {"INPUT", "FORWARD", "OUTPUT"}) fam.table.chains.push_back(SavedChain{c, "ACCEPT", {}});
      }
    }
    if (with_entries && tools_.variant != "legacy" && cfg_.netlink) {
      auto sock = nft::OpenTransport(cfg_.nft_transport);
      if (sock.ok())
        for (int f = 0; f < 2; ++f)
          if (live.fam[f].available)
            if (auto names = NftTableNames(**sock, f))
              for (int tb = 0; tb < kTableCount; ++tb) live.fam[f].nft_table[tb] = names->count(kTables[tb]) > 0;
    }
    auto names = env_.Run({tools_.ipset, "list", "-t"});
    if (names.status == 127) {  // no ipset: fine as long as no allowlist needs one
      live.ipset_missing = true;
      names.status = 0;
    }
    if (!names.ok())
      return Status::Error(Code::kFirewall, "ipset list failed: " + names.Message() + " (is the ipset package installed?)");
    std::istringstream in(names.out);
    std::string line, current;
    while (std::getline(in, line)) {
      if (line.rfind("Name: ", 0) == 0) {
        current = line.substr(6);
        if (IsOwnIpset(current)) {
          if (current.rfind("mwt_", 0) == 0) live.temps.push_back(current);
          else live.ipsets[current].name = current;
        }
      }
      if (!IsOwnIpset(current) || line.rfind("Size in memory", 0) == 0) continue;
      live.ipset_headers += line + "\n";
    }
    if (with_entries)
      for (auto& [name, spec] : live.ipsets) {
        auto r = env_.Run({tools_.ipset, "save", name});
        if (!r.ok()) return Status::Error(Code::kFirewall, "ipset save " + name + " failed: " + r.Message());
        auto parsed = ParseIpsetSave(r.out);
        if (parsed) spec = std::move(*parsed);
      }
    live.generation = Fnv32(live.ipset_headers, Fnv32(live.fam[1].stable, Fnv32(live.fam[0].stable)));
    return live;
  }

  std::unique_ptr<IptPlan> MakePlan(Live live, Target t, const PlanOptions& opts) {
    auto plan = std::make_unique<IptPlan>();
    plan->generation = live.generation;
    if (!tools_.variant.empty()) plan->notes.push_back("iptables variant: " + tools_.variant);
    // Sets first: rules refer to them.
    std::string script, undo;
    for (const auto& tmp : live.temps) {
      script += "destroy " + tmp + "\n";
      plan->changes.push_back({ChangeOp::kDelete, ChangeObject::kSet, tmp, "a temporary set left by an interrupted run", 1, {}});
    }
    auto create = [](const IpsetSpec& s, const std::string& name) {
      size_t hashsize = 1024;
      while (hashsize < s.entries.size() / 2 && hashsize < (1u << 24)) hashsize *= 2;
      return "create " + name + " " + s.type + " family " + (s.family == Family::kV4 ? "inet" : "inet6") +
             " hashsize " + std::to_string(hashsize) + " maxelem " + std::to_string(s.maxelem) + "\n";
    };
    auto fill = [](const IpsetSpec&, const std::string& name, const std::vector<std::string>& entries) {
      std::string out;
      out.reserve(entries.size() * (name.size() + 24));
      for (const auto& e : entries) out += "add " + name + " " + e + "\n";
      return out;
    };
    auto rebuild = [&](const IpsetSpec& s) {  // fill a temporary set, then swap it in: atomic
      std::string tmp = TempIpsetName(s.name);
      return create(s, tmp) + fill(s, tmp, s.entries) + "swap " + tmp + " " + s.name + "\ndestroy " + tmp + "\n";
    };
    auto sample = [&](const std::vector<std::string>& v) {
      size_t n = opts.max_items == 0 ? v.size() : std::min(v.size(), opts.max_items);
      return std::vector<std::string>(v.begin(), v.begin() + static_cast<long>(n));
    };
    for (const auto& [name, want] : t.ipsets) {
      auto it = live.ipsets.find(name);
      if (it == live.ipsets.end()) {
        plan->changes.push_back({ChangeOp::kAdd, ChangeObject::kSet, name, want.type + " family " + FamilyName(want.family) + ", " +
                                                         Plural(want.entries.size(), "entry", "entries"), 1, {}});
        if (!want.entries.empty())
          plan->changes.push_back({ChangeOp::kAdd, ChangeObject::kElements, name, "", want.entries.size(), sample(want.entries)});
        script += create(want, name) + fill(want, name, want.entries);
        undo += "destroy " + name + "\n";
        continue;
      }
      const IpsetSpec& have = it->second;
      if (have.type != want.type || have.family != want.family || have.maxelem < want.entries.size()) {
        plan->changes.push_back({ChangeOp::kReplace, ChangeObject::kSet, name,
                                 "was " + have.type + " family " + FamilyName(have.family) + " maxelem " +
                                     std::to_string(have.maxelem) + "; now " + want.type + " maxelem " +
                                     std::to_string(want.maxelem) + ", " + Plural(want.entries.size(), "entry", "entries"),
                                 1, {}});
        script += rebuild(want);
        undo += rebuild(have);
        continue;
      }
      std::vector<std::string> add, del;
      std::set_difference(want.entries.begin(), want.entries.end(), have.entries.begin(), have.entries.end(),
                          std::back_inserter(add));
      std::set_difference(have.entries.begin(), have.entries.end(), want.entries.begin(), want.entries.end(),
                          std::back_inserter(del));
      if (!add.empty()) plan->changes.push_back({ChangeOp::kAdd, ChangeObject::kElements, name, "", add.size(), sample(add)});
      if (!del.empty()) plan->changes.push_back({ChangeOp::kDelete, ChangeObject::kElements, name, "", del.size(), sample(del)});
      if (add.size() + del.size() > kSwapThreshold && add.size() + del.size() > have.entries.size() / 2) {
        script += rebuild(want);
        undo += rebuild(have);
      } else {
        script += fill(want, name, add);
        for (const auto& e : del) script += "del " + name + " " + e + "\n";
        undo += fill(have, name, del);
        for (const auto& e : add) undo += "del " + name + " " + e + "\n";
      }
    }
    for (const auto& [name, have] : live.ipsets)
      if (!t.ipsets.count(name)) {
        plan->changes.push_back({ChangeOp::kDelete, ChangeObject::kSet, name, have.type + ", " + Plural(have.entries.size(), "entry", "entries"), 1, {}});
        plan->destroy.push_back(name);
      }
    plan->ipset_script = std::move(script);
    plan->ipset_undo = std::move(undo);

    for (int f = 0; f < 2; ++f) {
      const LiveFamily& fam = live.fam[f];
      std::string label = f == 0 ? "iptables" : "ip6tables";
      if (!fam.available) {
        plan->notes.push_back(label + " is not usable here (" + fam.error + "): IPv6 is left alone");
        continue;
      }
      OwnState have = fam.Own();
      const OwnState& want = t.own[f];
      plan->restore[f] = RestoreScript(have, want);
      plan->undo[f] = RestoreScript(want, have);
      for (int tb = 0; tb < kTableCount; ++tb) DescribeOwnChanges(have.t[tb], want.t[tb], tb, label, &plan->changes);
      // Rules above the jump are evaluated first: say so (they are the host's, left alone).
      if (const SavedChain* in = fam.table.Find("INPUT"); in && !have.t[0].jumps.empty() && !in->rules.empty() &&
                                                         in->rules.front() != have.t[0].jumps.front())
        plan->notes.push_back(label + ": rules above mailward's jump in INPUT are evaluated first (for example: " +
                              in->rules.front().substr(3) + ")");
    }
    plan->live = std::move(live);
    plan->target = std::move(t);
    return plan;
  }

  BackendConfig cfg_;
  sys::Env& env_;
  Tools tools_;
  bool recovered_ = false;  ///< this run put back an interrupted apply
  std::optional<uint32_t> committed_generation_;  ///< the state hash right after this run's Apply
};

}  // namespace
}  // namespace ipt

std::unique_ptr<Backend> MakeIptablesBackend(const BackendConfig& cfg) {
  return std::make_unique<ipt::IptablesBackend>(cfg);
}

}  // namespace mw
