// The iptables backend: mailward's chain MAILWARD in the filter table of iptables and
// ip6tables, one jump to it from INPUT, and its allowlists in ipsets (mw_*). Reads with
// iptables-save and `ipset save`, writes with one `ipset restore` and one
// `iptables-restore --noflush` per family (atomic per table); a failure part-way is undone.
// A kill part-way cannot undo itself: before its first change an apply writes a journal (the
// state it started from) and the next run that reads or writes the firewall puts it back.
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
#include "backend/ipt_rules.h"
#include "backend/nft_netlink.h"
#include "util/fs.h"
#include "util/hash.h"
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

Tools ChooseTools() {
  Tools t;
  const char* env = std::getenv("MAILWARD_IPTABLES");
  std::string want = env ? env : "";
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
  auto probe = RunProcess({t.save[0], "-t", "filter"});
  if (probe.ok() && (probe.out + probe.err).find("iptables-legacy tables present") != std::string::npos &&
      HaveProgram("iptables-legacy-save"))
    use("legacy");
  return t;
}

struct LiveFamily {
  bool available = false;
  std::string error;   ///< why the family is not available
  std::string stable;  ///< the save output without comments and counters
  SavedTable table;
  /// iptables-nft: whether nftables holds this family's `filter` table (iptables-save prints
  /// the built-in chains either way); unknown for legacy iptables.
  std::optional<bool> nft_table;
};

/// The state of mailward's own objects in one family.
struct OwnState {
  bool chain = false;
  std::vector<std::string> rules;
  std::vector<std::string> jumps;  ///< INPUT rules that jump to MAILWARD
  friend bool operator==(const OwnState&, const OwnState&) = default;
};

OwnState OwnOf(const SavedTable& t) {
  OwnState s;
  if (const SavedChain* c = t.Find(kChain)) {
    s.chain = true;
    s.rules = c->rules;
  }
  if (const SavedChain* in = t.Find("INPUT"))
    for (const auto& line : in->rules) {
      auto w = Tokenize(line);
      for (size_t i = 0; i + 1 < w.size(); ++i)
        if ((w[i] == "-j" || w[i] == "-g") && w[i + 1] == kChain) s.jumps.push_back(line);
    }
  return s;
}

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

std::string Join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

/// The comment of a rule line ("mailward:143:closed"), or the line itself.
std::string RuleKey(const std::string& line) {
  auto w = Tokenize(line);
  for (size_t i = 0; i + 1 < w.size(); ++i)
    if (w[i] == "--comment") return w[i + 1];
  return line;
}

/// Test-only (MAILWARD_TEST_FAULT=pause-after-commit): after the commit, creates
/// STATE_DIR/paused-after-commit and waits (at most 60 s) until the test removes it.
void PauseAfterCommitForTests(const std::string& state_dir) {
  const char* fault = std::getenv("MAILWARD_TEST_FAULT");
  if (!fault || std::string(fault) != "pause-after-commit" || state_dir.empty()) return;
  std::string flag = state_dir + "/paused-after-commit";
  if (!WriteFileAtomic(flag, "", Durability::kNoFsync).ok()) return;
  for (int i = 0; i < 3000 && Exists(flag); ++i) usleep(20000);
}

uint8_t NfProto(int f) { return f == 0 ? NFPROTO_IPV4 : NFPROTO_IPV6; }

/// Whether nftables holds table `filter` of family f (where iptables-nft keeps its rules);
/// nullopt when nftables cannot be read.
std::optional<bool> NftFilterTableExists(nft::Socket& sock, int f) {
  bool found = false;
  Status s = sock.Request(
      [&](char* buf, uint32_t seq) { return nftnl_table_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NfProto(f), NLM_F_DUMP, seq); },
      [&](const nlmsghdr* nlh) {
        nftnl_table* t = nftnl_table_alloc();
        if (nftnl_table_nlmsg_parse(nlh, t) == 0 && nftnl_table_get_u32(t, NFTNL_TABLE_FAMILY) == NfProto(f) &&
            std::strcmp(nftnl_table_get_str(t, NFTNL_TABLE_NAME), "filter") == 0)
          found = true;
        nftnl_table_free(t);
        return MNL_CB_OK;
      });
  if (!s.ok()) return std::nullopt;
  return found;
}

/// Deletes family f's nftables `filter` table when it holds nothing but iptables-nft's empty
/// built-in chains (INPUT, FORWARD, OUTPUT; policy accept; no rules, no sets, no other chain):
/// the table an apply created on a host that had none. Anything else in it, or anything
/// changing meanwhile (the delete carries the generation it was checked at), leaves it.
/// Returns whether it was deleted.
Result<bool> DeleteEmptyNftFilterTable(int f) {
  auto sock = nft::Socket::Open();
  if (!sock.ok()) return sock.status();
  auto gen = (*sock)->GetGeneration();
  if (!gen.ok()) return gen.status();
  auto exists = NftFilterTableExists(**sock, f);
  if (!exists) return Status::Netlink("cannot list the nftables tables");
  if (!*exists) return false;
  bool empty = true;
  auto in_filter = [&](const char* table) { return table && std::strcmp(table, "filter") == 0; };
  MW_RETURN_IF_ERROR((*sock)->Request(
      [&](char* buf, uint32_t seq) { return nftnl_chain_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, NfProto(f), NLM_F_DUMP, seq); },
      [&](const nlmsghdr* nlh) {
        nftnl_chain* c = nftnl_chain_alloc();
        if (nftnl_chain_nlmsg_parse(nlh, c) == 0 && in_filter(nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE))) {
          std::string name = nftnl_chain_get_str(c, NFTNL_CHAIN_NAME);
          bool builtin = (name == "INPUT" || name == "FORWARD" || name == "OUTPUT") &&
                         nftnl_chain_is_set(c, NFTNL_CHAIN_HOOKNUM) &&
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
        if (!nftnl_rule_is_set(r, NFTNL_RULE_TABLE) || in_filter(nftnl_rule_get_str(r, NFTNL_RULE_TABLE))) empty = false;
        nftnl_rule_free(r);
        return MNL_CB_OK;
      }));
  MW_RETURN_IF_ERROR((*sock)->Request(
      [&](char* buf, uint32_t seq) { return nftnl_set_nlmsg_build_hdr(buf, NFT_MSG_GETSET, NfProto(f), NLM_F_DUMP, seq); },
      [&](const nlmsghdr* nlh) {
        nftnl_set* st = nftnl_set_alloc();
        if (nftnl_set_nlmsg_parse(nlh, st) != 0 || in_filter(nftnl_set_get_str(st, NFTNL_SET_TABLE))) empty = false;
        nftnl_set_free(st);
        return MNL_CB_OK;
      }));
  if (!empty) return false;
  nft::Batch batch(*gen);
  nlmsghdr* nlh = batch.Add(NFT_MSG_DELTABLE, NfProto(f), 0, 512, "delete the empty table filter");
  nftnl_table* t = nftnl_table_alloc();
  nftnl_table_set_str(t, NFTNL_TABLE_NAME, "filter");
  nftnl_table_nlmsg_build_payload(nlh, t);
  nftnl_table_free(t);
  batch.Commit(nlh);
  batch.End();
  Status sent = (*sock)->Send(batch);
  if (sent.code() == Code::kGenerationMoved) return false;  // someone else is at work: leave it
  if (!sent.ok()) return sent;
  return true;
}

/// An exclusive lock on the journal of the iptables backend. Its descriptor is inherited by
/// the programs run while it is held, so the restore programs of an apply that was killed keep
/// it held until they exit: the journal is only ever replayed once nothing of that apply runs.
class JournalLock {
 public:
  ~JournalLock() {
    if (fd_ >= 0) close(fd_);
  }
  Status Acquire(const std::string& path, double timeout_s) {
    fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW, 0600);  // no O_CLOEXEC: see above
    if (fd_ < 0) return Status::Io(path + ": cannot open the journal lock: " + std::strerror(errno));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (std::chrono::steady_clock::now() >= deadline)
        return Status::Error(Code::kBusy, "an iptables apply is still in progress (" + path + " held for more than " +
                                              std::to_string(static_cast<int>(timeout_s)) +
                                              " s, by mailward or by the iptables-restore or ipset programs of "
                                              "an apply that was killed); try again when they are done");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return Status::Ok();
  }

 private:
  int fd_ = -1;
};

/// A snapshot parsed: mailward's objects per family and its ipsets.
struct ParsedSnapshot {
  Target target;
  bool seen[2] = {false, false};
  std::optional<bool> nft_table[2];
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
  explicit IptablesBackend(const BackendConfig& cfg) : cfg_(cfg), tools_(ChooseTools()) {}
  std::string name() const override { return "iptables"; }

  Result<std::unique_ptr<BackendPlan>> Plan(const Ruleset& desired, const PlanOptions& opts) override {
    MW_RETURN_IF_ERROR(Recover());
    auto live = ReadLive(true);
    if (!live.ok()) return live.status();
    Target t;
    for (int f = 0; f < 2; ++f) {
      Family fam = f == 0 ? Family::kV4 : Family::kV6;
      t.own[f].chain = true;
      t.own[f].rules = ChainRules(desired, fam);
      t.own[f].jumps = {JumpRule()};
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
    const auto& plan = static_cast<const IptPlan&>(base);
    if (plan.changes.empty()) return Status::Ok();
    if (cfg_.state_dir.empty()) return ApplyLocked(plan, nullptr);
    JournalLock lock;
    MW_RETURN_IF_ERROR(lock.Acquire(JournalLockPath(), kJournalWait));
    // An interrupted apply found now moves the generation, so the caller plans again.
    MW_RETURN_IF_ERROR(RecoverLocked());
    auto journal = TakeSnapshot(plan);
    if (!journal.ok()) return journal.status();
    MW_RETURN_IF_ERROR(ApplyLocked(plan, &journal->bytes));
    // What this commit made, so a failed read-back can tell it from someone else's later one.
    auto after = ReadLive(false);
    committed_generation_ = after.ok() ? std::optional<uint32_t>(after->generation) : std::nullopt;
    PauseAfterCommitForTests(cfg_.state_dir);
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

  Result<Snapshot> TakeSnapshot(const BackendPlan& base) override {
    const auto& plan = static_cast<const IptPlan&>(base);
    std::string out = "MWIPT1\n";
    for (int f = 0; f < 2; ++f) {
      const auto& fam = plan.live.fam[f];
      if (!fam.available) continue;
      OwnState s = OwnOf(fam.table);
      std::string tag = f == 0 ? "v4" : "v6";
      out += tag + " chain " + (s.chain ? "1" : "0") + "\n";
      for (const auto& r : s.rules) out += tag + " rule " + r + "\n";
      for (const auto& j : s.jumps) out += tag + " jump " + j + "\n";
      if (fam.nft_table) out += tag + " table " + (*fam.nft_table ? "1" : "0") + "\n";
    }
    for (const auto& [name, set] : plan.live.ipsets) {
      out += "set " + set.name + " " + set.type + " " + (set.family == Family::kV4 ? "inet" : "inet6") + " " +
             std::to_string(set.maxelem) + "\n";
      for (const auto& e : set.entries) out += "entry " + e + "\n";
    }
    return Snapshot{out, ""};
  }

  Status Restore(const std::string& bytes, const std::string&) override {
    if (bytes.rfind("MWIPT1\n", 0) != 0)
      return Status::Invalid("this snapshot was not made by the iptables backend");
    if (cfg_.state_dir.empty()) return RestoreLocked(bytes, true);
    JournalLock lock;
    MW_RETURN_IF_ERROR(lock.Acquire(JournalLockPath(), kJournalWait));
    MW_RETURN_IF_ERROR(RecoverLocked());
    return RestoreLocked(bytes, true);
  }

 private:
  static constexpr double kJournalWait = 60;  ///< seconds to wait for another apply's journal lock

  std::string JournalPath() const { return cfg_.state_dir + "/iptables.journal"; }
  std::string JournalLockPath() const { return cfg_.state_dir + "/iptables.journal.lock"; }

  /// Before a read: an apply killed part-way (its journal still there, and nothing of it
  /// running any more) is put back to the state it started from, so the firewall is never left
  /// with IPv4 on one policy and IPv6 on another, nor with half-filled ipsets.
  Status Recover() {
    if (cfg_.state_dir.empty() || !Exists(JournalPath())) return Status::Ok();
    JournalLock lock;
    MW_RETURN_IF_ERROR(lock.Acquire(JournalLockPath(), kJournalWait));
    return RecoverLocked();
  }

  Status RecoverLocked() {
    std::string path = JournalPath();
    if (!Exists(path)) return Status::Ok();
    auto j = ReadFile(path);
    if (!j.ok()) return j.status().WithContext("the journal of an interrupted iptables apply");
    if (j->rfind("MWIPT1\n", 0) != 0)
      return Status::Error(Code::kFirewall, path + " is not a journal of mailward's iptables backend; move it away to go on");
    // The journal stays until the state it records is back, so a kill now is recovered too.
    Status s = RestoreLocked(*j, false);
    if (!s.ok())
      return Status::Error(s.code(), "an apply was interrupted part-way and putting back the state before it failed: " +
                                         s.message() + " (journal " + path + "; the next run tries again)");
    if (unlink(path.c_str()) != 0 && errno != ENOENT)
      return Status::Io(path + ": cannot remove the journal: " + std::strerror(errno));
    recovered_ = true;
    return Status::Ok();
  }

  static Result<ParsedSnapshot> ParseSnapshot(const std::string& bytes) {
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
      if (rest.rfind("chain ", 0) == 0) ps.target.own[f].chain = rest.substr(6) == "1";
      else if (rest.rfind("rule ", 0) == 0) ps.target.own[f].rules.push_back(rest.substr(5));
      else if (rest.rfind("jump ", 0) == 0) ps.target.own[f].jumps.push_back(rest.substr(5));
      else if (rest.rfind("table ", 0) == 0) ps.nft_table[f] = rest.substr(6) == "1";
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
      if (!ps->seen[f]) t.own[f] = OwnOf(live->fam[f].table);  // not recorded: leave as it is
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

  /// iptables-nft creates its `filter` table on first use; where the snapshot had none, the
  /// (now empty) table goes too, so the host is exactly as it was.
  void RemoveCreatedTables(const std::optional<bool> (&had)[2]) {
    if (tools_.variant == "legacy") return;
    for (int f = 0; f < 2; ++f)
      if (had[f] && !*had[f]) (void)DeleteEmptyNftFilterTable(f);
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
      MW_RETURN_IF_ERROR(WriteFileAtomic(JournalPath(), *journal, Durability::kFsync)
                             .WithContext("cannot write the apply journal, nothing was applied"));
    }
    auto done = [&] {
      if (journal) unlink(JournalPath().c_str());
    };
    if (!plan.ipset_script.empty()) {
      Phase p("ipset restore");
      auto r = RunProcess({tools_.ipset, "-exist", "restore"}, plan.ipset_script);
      if (!r.ok()) {
        auto u = RunProcess({tools_.ipset, "-exist", "restore"}, plan.ipset_undo);
        if (u.ok()) done();
        return Status::Error(Code::kFirewall, "ipset restore failed: " + r.Message() +
                                                  (u.ok() ? "; nothing was applied" : "; undoing it failed too: " + u.Message()));
      }
    }
    const char* fault = std::getenv("MAILWARD_TEST_FAULT");
    for (int f = 0; f < 2; ++f) {
      if (plan.restore[f].empty()) continue;
      Phase p(f == 0 ? "iptables-restore" : "ip6tables-restore");
      ProcessResult r;
      if (f == 1 && fault && std::string(fault) == "ip6tables-restore") {
        r.status = 1;
        r.err = "injected failure (MAILWARD_TEST_FAULT=ip6tables-restore)";
      } else {
        r = RunProcess({tools_.restore[f], "--noflush"}, plan.restore[f]);
      }
      if (!r.ok()) {
        // Undo what went in: the families already restored, then the ipsets.
        std::string undo_errors;
        for (int g = f - 1; g >= 0; --g)
          if (!plan.undo[g].empty()) {
            auto u = RunProcess({tools_.restore[g], "--noflush"}, plan.undo[g]);
            if (!u.ok()) undo_errors += "; undoing " + tools_.restore[g] + " failed too: " + u.Message();
          }
        if (!plan.ipset_undo.empty()) {
          auto u = RunProcess({tools_.ipset, "-exist", "restore"}, plan.ipset_undo);
          if (!u.ok()) undo_errors += "; undoing the ipset changes failed too: " + u.Message();
        }
        if (undo_errors.empty()) {
          std::optional<bool> had[2] = {plan.live.fam[0].nft_table, plan.live.fam[1].nft_table};
          RemoveCreatedTables(had);
          done();
        }
        return Status::Error(Code::kFirewall, tools_.restore[f] + " failed: " + r.Message() +
                                                  (undo_errors.empty() ? "; everything was put back as it was" : undo_errors));
      }
    }
    for (const auto& name : plan.destroy) {
      auto r = RunProcess({tools_.ipset, "destroy", name});
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
      auto r = RunProcess({tools_.save[f], "-t", "filter"});
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
      fam.table = ParseSave(r.out);
      if (fam.table.chains.empty()) {
        // An empty filter table prints nothing: it has the built-in chains, accepting.
        for (const char* c : {"INPUT", "FORWARD", "OUTPUT"}) fam.table.chains.push_back(SavedChain{c, "ACCEPT", {}});
      }
    }
    if (with_entries && tools_.variant != "legacy") {
      auto sock = nft::Socket::Open();
      if (sock.ok())
        for (int f = 0; f < 2; ++f)
          if (live.fam[f].available) live.fam[f].nft_table = NftFilterTableExists(**sock, f);
    }
    auto names = RunProcess({tools_.ipset, "list", "-t"});
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
        auto r = RunProcess({tools_.ipset, "save", name});
        if (!r.ok()) return Status::Error(Code::kFirewall, "ipset save " + name + " failed: " + r.Message());
        auto parsed = ParseIpsetSave(r.out);
        if (parsed) spec = std::move(*parsed);
      }
    live.generation = Fnv32(live.ipset_headers, Fnv32(live.fam[1].stable, Fnv32(live.fam[0].stable)));
    return live;
  }

  /// The iptables-restore input that turns `from` into `to` in one family ("" when equal).
  static std::string Script(const OwnState& from, const OwnState& to) {
    if (from == to) return "";
    std::string out = "*filter\n";
    bool rewrite = to.chain && (!from.chain || from.rules != to.rules);
    if (rewrite) out += std::string(":") + kChain + " - [0:0]\n" + Join(to.rules);
    // Jumps: remove the ones `to` does not have, add the missing ones at the top of INPUT.
    std::multiset<std::string> want(to.jumps.begin(), to.jumps.end());
    std::multiset<std::string> have(from.jumps.begin(), from.jumps.end());
    for (const auto& j : from.jumps) {
      auto it = want.find(j);
      if (it != want.end()) want.erase(it);
      else out += "-D" + j.substr(2) + "\n";
    }
    for (const auto& j : to.jumps) {
      auto it = have.find(j);
      if (it != have.end()) have.erase(it);
      else out += "-I INPUT 1" + j.substr(8) + "\n";  // "-A INPUT" -> "-I INPUT 1"
    }
    if (!to.chain && from.chain) out += std::string("-F ") + kChain + "\n-X " + kChain + "\n";
    out += "COMMIT\n";
    return out;
  }

  std::unique_ptr<IptPlan> MakePlan(Live live, Target t, const PlanOptions& opts) {
    auto plan = std::make_unique<IptPlan>();
    plan->generation = live.generation;
    if (!tools_.variant.empty()) plan->notes.push_back("iptables variant: " + tools_.variant);
    // Sets first: rules refer to them.
    std::string script, undo;
    for (const auto& tmp : live.temps) {
      script += "destroy " + tmp + "\n";
      plan->changes.push_back({"delete", "set", tmp, "a temporary set left by an interrupted run", 1, {}});
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
        plan->changes.push_back({"add", "set", name, want.type + " family " + FamilyName(want.family) + ", " +
                                                         std::to_string(want.entries.size()) + " entries", 1, {}});
        if (!want.entries.empty())
          plan->changes.push_back({"add", "elements", name, "", want.entries.size(), sample(want.entries)});
        script += create(want, name) + fill(want, name, want.entries);
        undo += "destroy " + name + "\n";
        continue;
      }
      const IpsetSpec& have = it->second;
      if (have.type != want.type || have.family != want.family || have.maxelem < want.entries.size()) {
        plan->changes.push_back({"replace", "set", name,
                                 "was " + have.type + " family " + FamilyName(have.family) + " maxelem " +
                                     std::to_string(have.maxelem) + "; now " + want.type + " maxelem " +
                                     std::to_string(want.maxelem) + ", " + std::to_string(want.entries.size()) + " entries",
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
      if (!add.empty()) plan->changes.push_back({"add", "elements", name, "", add.size(), sample(add)});
      if (!del.empty()) plan->changes.push_back({"delete", "elements", name, "", del.size(), sample(del)});
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
        plan->changes.push_back({"delete", "set", name, have.type + ", " + std::to_string(have.entries.size()) + " entries", 1, {}});
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
      OwnState have = OwnOf(fam.table);
      const OwnState& want = t.own[f];
      plan->restore[f] = Script(have, want);
      plan->undo[f] = Script(want, have);
      std::string where = label + " filter";
      if (want.chain && !have.chain) plan->changes.push_back({"add", "chain", where + " " + kChain, "", 1, {}});
      if (!want.chain && have.chain) plan->changes.push_back({"delete", "chain", where + " " + kChain, "", 1, {}});
      if (want.chain && have.chain && want.rules != have.rules) {
        std::set<std::string> w(want.rules.begin(), want.rules.end()), h(have.rules.begin(), have.rules.end());
        bool any = false;
        for (const auto& r : want.rules)
          if (!h.count(r)) plan->changes.push_back({"add", "rule", label + " " + RuleKey(r), r.substr(3), 1, {}}), any = true;
        for (const auto& r : have.rules)
          if (!w.count(r)) plan->changes.push_back({"delete", "rule", label + " " + RuleKey(r), r.substr(3), 1, {}}), any = true;
        if (!any) plan->changes.push_back({"replace", "chain", where + " " + kChain, "rules out of order", 1, {}});
      } else if (want.chain && !have.chain) {
        for (const auto& r : want.rules) plan->changes.push_back({"add", "rule", label + " " + RuleKey(r), r.substr(3), 1, {}});
      }
      if (want.jumps != have.jumps) {
        if (!want.jumps.empty() && have.jumps.empty())
          plan->changes.push_back({"add", "rule", label + " " + kJumpComment, "INPUT position 1: jump to " + std::string(kChain), 1, {}});
        else if (want.jumps.empty())
          plan->changes.push_back({"delete", "rule", label + " " + kJumpComment, "INPUT: jump to " + std::string(kChain), 1, {}});
        else
          plan->changes.push_back({"replace", "rule", label + " " + kJumpComment,
                                   std::to_string(have.jumps.size()) + " jump(s) to " + kChain + " in INPUT, not mailward's one", 1, {}});
      }
      // Rules above the jump are evaluated first: say so (they are the host's, left alone).
      if (const SavedChain* in = fam.table.Find("INPUT"); in && !have.jumps.empty() && !in->rules.empty() &&
                                                         in->rules.front() != have.jumps.front())
        plan->notes.push_back(label + ": rules above mailward's jump in INPUT are evaluated first (for example: " +
                              in->rules.front().substr(3) + ")");
    }
    plan->live = std::move(live);
    plan->target = std::move(t);
    return plan;
  }

  BackendConfig cfg_;
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
