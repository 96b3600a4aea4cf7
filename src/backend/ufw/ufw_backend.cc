// The UFW backend: mailward's rules live in UFW's own user rules files, tagged
// `comment=mailward`, so `ufw status` shows them and UFW's reloads keep them. An apply writes
// both files once (atomically) and runs one `ufw reload`, instead of one slow `ufw` call per
// rule; if the reload fails the previous files are put back and reloaded.
//
// The DNAT path (a container publishing a mail port): UFW's rules are in the filter table's
// INPUT, which DNATed connections never cross. Like the iptables backend, mailward also owns a
// MAILWARD chain in mangle and in nat, jumped to from PREROUTING (ipt_rules.h says what each
// does), with the allowlists as `-s` rules since this backend owns no ipsets. UFW never touches
// mangle or nat chains it did not write, so its reloads keep them; they go in with one
// iptables-restore per family right after UFW's reload, and are undone with it.
// UFW switched off (ENABLED=no) is reported as a conflict for every closed port: nothing of
// UFW's enforces the policy then; `ufw enable` is the fix.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include "backend/backend.h"
#include "backend/ipt/ipt_rules.h"
#include "backend/ufw/ufw_rules.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/process.h"
#include "util/timing.h"

namespace mw {
namespace ufw {
namespace {

constexpr const char* kFiles[2] = {"/etc/ufw/user.rules", "/etc/ufw/user6.rules"};
constexpr const char* kInputChain[2] = {"ufw-user-input", "ufw6-user-input"};

/// UFW's two rules files as they are now, with their modes (kept when they are rewritten).
struct Files {
  std::string text[2];
  unsigned mode[2] = {0640, 0640};
  /// What identifies their state: a plan is applied only if it has not changed.
  uint32_t Generation() const { return Fnv32(text[1] + '\0', Fnv32(text[0] + '\0')); }
};

Result<Files> ReadFiles(sys::Env& env) {
  Files out;
  for (int f = 0; f < 2; ++f) {
    auto text = env.ReadFile(kFiles[f]);
    if (!text.ok()) return text.status().WithContext("cannot read UFW's rules");
    out.text[f] = std::move(*text);
    if (auto mode = env.FileMode(kFiles[f])) out.mode[f] = *mode;
  }
  return out;
}

bool ConfFlag(sys::Env& env, const std::string& path, const std::string& key) {
  auto text = env.ReadFile(path);
  if (!text.ok()) return false;
  std::istringstream in(*text);
  std::string line;
  bool value = false;
  while (std::getline(in, line)) {
    if (line.rfind(key + "=", 0) != 0) continue;
    std::string v = line.substr(key.size() + 1);
    v.erase(std::remove(v.begin(), v.end(), '"'), v.end());
    value = v == "yes";
  }
  return value;
}

struct LiveFile {
  std::string text;
  UserRules rules;
  unsigned mode = 0640;
};

class UfwPlan : public BackendPlan {
 public:
  LiveFile live[2];
  std::string next[2];  ///< the files to write ("" = unchanged)
  bool reload = false;
  bool active = false;
  bool have_family[2] = {false, false};  ///< iptables-save of the family worked
  ipt::OwnState pre_live[2];             ///< mailward's mangle and nat chains as they are
  std::string pre_restore[2], pre_undo[2];
};

constexpr unsigned kPreTables = (1u << 1) | (1u << 2);  ///< mangle and nat: what this backend owns
constexpr const char* kSave[2] = {"iptables-save", "ip6tables-save"};
constexpr const char* kRestore[2] = {"iptables-restore", "ip6tables-restore"};

/// A stable text of mailward's mangle and nat objects (for the plan's generation).
std::string PreText(const ipt::OwnState& s) {
  std::string out;
  for (int t = 1; t < ipt::kTableCount; ++t) {
    out += std::string(ipt::kTables[t]) + (s.t[t].chain ? " chain\n" : "\n");
    for (const auto& r : s.t[t].rules) out += r + "\n";
    for (const auto& j : s.t[t].jumps) out += j + "\n";
  }
  return out;
}

/// mailward's mangle and nat objects of both families, as they are now.
bool ReadPre(sys::Env& env, ipt::OwnState out[2], bool have[2], ipt::SavedTable filter[2]) {
  for (int f = 0; f < 2; ++f) {
    auto r = env.Run({kSave[f]});
    have[f] = r.ok();
    if (!r.ok()) continue;
    auto tables = ipt::ParseSaveAll(r.out);
    if (filter) filter[f] = tables["filter"];
    for (int t = 1; t < ipt::kTableCount; ++t) out[f].t[t] = ipt::OwnOf(tables[ipt::kTables[t]], t);
  }
  return have[0];
}

class UfwBackend : public Backend {
 public:
  explicit UfwBackend(const BackendConfig& cfg) : cfg_(cfg), env_(*cfg.env) {}
  std::string name() const override { return "ufw"; }

  Result<std::unique_ptr<BackendPlan>> Plan(const Ruleset& desired, const PlanOptions& opts) override {
    Phase phase("plan ufw");
    if (!env_.HaveProgram("ufw")) return Status::Error(Code::kFirewall, "ufw is not installed (backend: ufw)");
    auto plan = std::make_unique<UfwPlan>();
    plan->active = ConfFlag(env_, "/etc/ufw/ufw.conf", "ENABLED");
    bool ipv6 = ConfFlag(env_, "/etc/default/ufw", "IPV6");
    if (!plan->active)
      plan->notes.push_back("UFW is not active: the rules are written to its files and take effect when UFW is enabled "
                            "(`ufw enable`); mailward's mangle and nat chains act at once");
    if (!ipv6) plan->notes.push_back("UFW has IPV6=no in /etc/default/ufw: its IPv6 rules (user6.rules) are not loaded");
    auto files = ReadFiles(env_);
    if (!files.ok()) return files.status();
    for (int f = 0; f < 2; ++f) {
      auto parsed = ParseUserRules(files->text[f], kFiles[f]);
      if (!parsed.ok()) return parsed.status();
      plan->live[f].mode = files->mode[f];
      plan->live[f].text = files->text[f];
      plan->live[f].rules = std::move(*parsed);
      if (plan->live[f].rules.pristine && f == 0)
        plan->notes.push_back("UFW's rules files are still the package's (UFW was never enabled or never given a "
                              "rule): mailward completes them as UFW writes them; they take effect when UFW is enabled");
    }

    std::vector<std::string> loaded[2];
    ipt::SavedTable kernel[2];
    ReadPre(env_, plan->pre_live, plan->have_family, kernel);
    for (int f = 0; f < 2; ++f)
      if (const auto* c = kernel[f].Find(kInputChain[f])) loaded[f] = c->rules;
    plan->generation = Fnv32(PreText(plan->pre_live[0]) + PreText(plan->pre_live[1]), files->Generation());

    // The DNAT path: mailward's mangle and nat chains (IPv6 only when UFW handles IPv6; with
    // IPV6=no, IPv6 ones left from before are removed).
    for (int f = 0; f < 2; ++f) {
      if (!plan->have_family[f]) continue;
      Family fam = f == 0 ? Family::kV4 : Family::kV6;
      ipt::OwnState want = plan->pre_live[f];
      for (int t = 1; t < ipt::kTableCount; ++t) {
        ipt::OwnTable& o = want.t[t];
        o.rules = f == 1 && !ipv6 ? std::vector<std::string>{}
                                  : ipt::PreroutingChainRules(desired, fam, t, ipt::SourceMatch::kInline);
        o.chain = !o.rules.empty();
        o.jumps.clear();
        if (o.chain) o.jumps = {ipt::JumpRule(t)};
      }
      plan->pre_restore[f] = ipt::RestoreScript(plan->pre_live[f], want, kPreTables);
      plan->pre_undo[f] = ipt::RestoreScript(want, plan->pre_live[f], kPreTables);
      for (int t = 1; t < ipt::kTableCount; ++t)
        ipt::DescribeOwnChanges(plan->pre_live[f].t[t], want.t[t], t, f == 0 ? "iptables" : "ip6tables", &plan->changes);
    }
    // UFW off: its rules enforce nothing, whatever the files say.
    if (!plan->active)
      for (const auto& r : desired.rules)
        if (r.port && r.key.size() > 7 && r.key.compare(r.key.size() - 7, 7, ":closed") == 0)
          for (int f = 0; f < (ipv6 ? 2 : 1); ++f) {
            Conflict c;
            c.port = r.port;
            c.family = f == 0 ? "ipv4" : "ipv6";
            c.where = "ufw";
            c.kind = analysis::ConflictKind::kClosedPortReachable;
            c.owner = "UFW";
            c.destination = "this host";
            c.reason = "UFW is disabled (ENABLED=no in /etc/ufw/ufw.conf): its rules are not loaded, so the policy is "
                       "not enforced and closed port " + std::to_string(r.port) + " is not closed by UFW";
            c.fix = "ufw enable";
            plan->conflicts.push_back(c);
          }

    for (int f = 0; f < 2; ++f) {
      Family fam = f == 0 ? Family::kV4 : Family::kV6;
      const std::string label = f == 0 ? "ufw" : "ufw (v6)";
      UserRules& live = plan->live[f].rules;
      std::vector<UfwRule> ours, admin;
      for (const auto& r : live.rules) (r.ours() ? ours : admin).push_back(r);
      auto want = DesiredRules(desired, fam, admin, &plan->notes);
      UserRules next = live;
      next.rules = want;
      next.rules.insert(next.rules.end(), admin.begin(), admin.end());
      if (next.rules != live.rules) {
        plan->next[f] = RenderUserRules(next);
        size_t before = plan->changes.size();
        DescribeChanges(ours, want, label, opts, plan.get());
        if (plan->changes.size() == before)  // same rules, but edited by hand or out of place
          plan->changes.push_back({ChangeOp::kReplace, ChangeObject::kRule, label,
                                   ours == want ? "mailward's rules are moved back before the admin's"
                                                : "mailward's rules were edited by hand: rewritten",
                                   1, {}});
      }
      // The rules UFW has loaded must be its files' (someone may have flushed or edited them).
      if (plan->active && (f == 0 || ipv6)) {
        std::vector<std::string> file_lines;
        for (const auto& r : live.rules)
          for (const auto& l : r.lines)
            if (l.rfind(std::string("-A ") + kInputChain[f] + " ", 0) == 0) file_lines.push_back(l);
        if (!kernel[f].Find(kInputChain[f]) || !LoadedMatches(file_lines, loaded[f])) {
          plan->reload = true;
          plan->changes.push_back({ChangeOp::kReplace, ChangeObject::kRule, label + " loaded rules",
                                   "the rules UFW has loaded differ from its files: reload", 1, {}});
        }
      }
    }
    return std::unique_ptr<BackendPlan>(std::move(plan));
  }

  Status Apply(const BackendPlan& base) override {
    const auto& plan = PlanAs<UfwPlan>(base, "ufw");
    if (plan.changes.empty()) return Status::Ok();
    auto now = ReadFiles(env_);
    if (!now.ok()) return now.status();
    ipt::OwnState pre_now[2];
    bool have[2];
    ReadPre(env_, pre_now, have, nullptr);
    if (Fnv32(PreText(pre_now[0]) + PreText(pre_now[1]), now->Generation()) != plan.generation)
      return Status::Error(Code::kGenerationMoved,
                           "UFW's rules files or mailward's mangle and nat chains changed since the plan was made; "
                           "nothing was applied");
    std::string old[2] = {plan.live[0].text, plan.live[1].text};
    std::string next[2] = {plan.next[0].empty() ? old[0] : plan.next[0], plan.next[1].empty() ? old[1] : plan.next[1]};
    // UFW reloads only when its files change or its loaded rules differ from them.
    bool reload = plan.active && (next[0] != old[0] || next[1] != old[1] || plan.reload);
    Status s = WriteAndReload(old, next, plan.live[0].mode, plan.live[1].mode, reload);
    if (!s.ok()) return s;
    s = RestorePre(plan.pre_restore, plan.pre_undo);
    if (s.ok()) return s;
    // Put UFW's files back as well: all of it or none of it.
    Status back = WriteAndReload(next, old, plan.live[0].mode, plan.live[1].mode, reload);
    return Status::Error(Code::kFirewall, s.message() + (back.ok() ? "; UFW's previous rules were put back"
                                                                   : "; putting UFW's previous rules back failed too: " +
                                                                         back.message()));
  }

  Result<Snapshot> TakeSnapshot(const BackendPlan& base) override {
    const auto& plan = PlanAs<UfwPlan>(base, "ufw");
    std::string out = "MWUFW2\n";
    for (int f = 0; f < 2; ++f) out += std::to_string(plan.live[f].text.size()) + "\n" + plan.live[f].text;
    // Then mailward's mangle and nat objects, as the iptables backend records them.
    for (int f = 0; f < 2; ++f) {
      if (!plan.have_family[f]) continue;
      for (int t = 1; t < ipt::kTableCount; ++t) {
        std::string tag = std::string(f == 0 ? "v4 " : "v6 ") + ipt::kTables[t];
        const auto& o = plan.pre_live[f].t[t];
        out += tag + " chain " + (o.chain ? "1" : "0") + "\n";
        for (const auto& r : o.rules) out += tag + " rule " + r + "\n";
        for (const auto& j : o.jumps) out += tag + " jump " + j + "\n";
      }
    }
    return Snapshot{out, ""};
  }

  Result<std::unique_ptr<BackendPlan>> PlanRemove(const PlanOptions& opts) override {
    // Planned as a policy that asks for nothing: mailward's rules leave UFW's files (the admin's
    // stay), its mangle and nat chains and jumps go.
    static const Ruleset kNothing;
    PlanOptions o = opts;
    o.analyze_conflicts = false;
    return Plan(kNothing, o);
  }

  Result<std::vector<Change>> PlanRestore(const std::string& bytes, const std::string&, const PlanOptions& opts) override {
    std::string files[2];
    ipt::OwnState want[2];
    MW_RETURN_IF_ERROR(ParseSnapshot(bytes, files, want));
    auto now = ReadFiles(env_);
    if (!now.ok()) return now.status();
    BackendPlan out;
    for (int f = 0; f < 2; ++f) {
      auto have = ParseUserRules(now->text[f], kFiles[f]);
      if (!have.ok()) return have.status();
      auto then = ParseUserRules(files[f], kFiles[f]);
      if (!then.ok()) return then.status().WithContext("the snapshot's copy");
      size_t before = out.changes.size();
      DescribeChanges(have->rules, then->rules, f == 0 ? "ufw" : "ufw (v6)", opts, &out);
      if (have->rules != then->rules && out.changes.size() == before)
        out.changes.push_back({ChangeOp::kReplace, ChangeObject::kRule, f == 0 ? "ufw" : "ufw (v6)", "the same rules, back in the snapshot's order", 1, {}});
    }
    ipt::OwnState pre_now[2];
    bool have[2];
    ReadPre(env_, pre_now, have, nullptr);
    for (int f = 0; f < 2; ++f) {
      if (!have[f]) continue;
      for (int t = 1; t < ipt::kTableCount; ++t)
        ipt::DescribeOwnChanges(pre_now[f].t[t], want[f].t[t], t, f == 0 ? "iptables" : "ip6tables", &out.changes);
    }
    return out.changes;
  }

  /// A snapshot's two rules files and mailward's mangle and nat objects.
  static Status ParseSnapshot(const std::string& bytes, std::string files[2], ipt::OwnState want[2]) {
    // MWUFW1 (before the mangle and nat chains) has no lines after the files: mailward had none.
    if (bytes.rfind("MWUFW1\n", 0) != 0 && bytes.rfind("MWUFW2\n", 0) != 0)
      return Status::Invalid("this snapshot was not made by the UFW backend");
    size_t pos = 7;
    for (int f = 0; f < 2; ++f) {
      size_t nl = bytes.find('\n', pos);
      if (nl == std::string::npos) return Status::Io("a damaged UFW snapshot");
      char* end = nullptr;
      size_t len = std::strtoull(bytes.c_str() + pos, &end, 10);
      if (end == bytes.c_str() + pos || end != bytes.c_str() + nl || len > bytes.size() || nl + 1 + len > bytes.size())
        return Status::Io("a damaged UFW snapshot");
      files[f] = bytes.substr(nl + 1, len);
      pos = nl + 1 + len;
    }
    std::istringstream in(bytes.substr(pos));
    std::string line;
    while (std::getline(in, line)) {
      if (line.size() < 3) continue;
      int f = line.rfind("v6 ", 0) == 0 ? 1 : 0;
      std::string rest = line.substr(3);
      size_t sp = rest.find(' ');
      int t = -1;
      for (int i = 1; i < ipt::kTableCount; ++i)
        if (rest.substr(0, sp) == ipt::kTables[i]) t = i;
      if (t < 0 || sp == std::string::npos) return Status::Io("a damaged UFW snapshot: " + line);
      rest = rest.substr(sp + 1);
      ipt::OwnTable& o = want[f].t[t];
      // Only mailward's own objects are ever written back.
      if (rest.rfind("chain ", 0) == 0) {
        o.chain = rest.substr(6) == "1";
      } else if (rest.rfind("rule ", 0) == 0 && ipt::IsOwnRuleLine(rest.substr(5), t)) {
        o.rules.push_back(rest.substr(5));
      } else if (rest.rfind("jump ", 0) == 0 && ipt::IsOwnJumpLine(rest.substr(5), t)) {
        o.jumps.push_back(rest.substr(5));
      } else {
        return Status::Invalid("a UFW snapshot line that is not mailward's: " + line);
      }
    }
    return Status::Ok();
  }

  Status Restore(const std::string& bytes, const std::string&) override {
    std::string files[2];
    ipt::OwnState want[2];
    MW_RETURN_IF_ERROR(ParseSnapshot(bytes, files, want));
    auto now = ReadFiles(env_);
    if (!now.ok()) return now.status();
    ipt::OwnState pre_now[2];
    bool have[2];
    ReadPre(env_, pre_now, have, nullptr);
    std::string fwd[2], back[2];
    for (int f = 0; f < 2; ++f) {
      if (!have[f]) continue;
      fwd[f] = ipt::RestoreScript(pre_now[f], want[f], kPreTables);
      back[f] = ipt::RestoreScript(want[f], pre_now[f], kPreTables);
    }
    bool active = ConfFlag(env_, "/etc/ufw/ufw.conf", "ENABLED");
    Status s = WriteAndReload(now->text, files, now->mode[0], now->mode[1], active);
    if (!s.ok()) return s;
    s = RestorePre(fwd, back);
    if (!s.ok()) (void)WriteAndReload(files, now->text, now->mode[0], now->mode[1], active);
    return s;
  }

 private:
  static void DescribeChanges(const std::vector<UfwRule>& have, const std::vector<UfwRule>& want, const std::string& label,
                              const PlanOptions& opts, BackendPlan* plan) {
    std::set<std::string> h, w;
    for (const auto& r : have) h.insert(r.tuple);
    for (const auto& r : want) w.insert(r.tuple);
    // Allowlisted sources are grouped per port, like set elements.
    std::map<std::pair<ChangeOp, std::string>, std::vector<std::string>> grouped;
    auto emit = [&](ChangeOp op, const std::string& tuple) {
      auto words = SplitWords(tuple);
      bool any_src = words.size() > 5 && (words[5] == "0.0.0.0/0" || words[5] == "::/0");
      if (words.size() > 5 && words[0] == "allow" && !any_src) {
        grouped[{op, "allow " + words[2] + "/" + words[1] + " from"}].push_back(words[5]);
        return;
      }
      plan->changes.push_back({op, ChangeObject::kRule, label, DescribeTuple(tuple), 1, {}});
    };
    for (const auto& r : want)
      if (!h.count(r.tuple)) emit(ChangeOp::kAdd, r.tuple);
    for (const auto& r : have)
      if (!w.count(r.tuple)) emit(ChangeOp::kDelete, r.tuple);
    for (auto& [k, items] : grouped) {
      size_t n = items.size();
      if (opts.max_items && items.size() > opts.max_items) items.resize(opts.max_items);
      plan->changes.push_back({k.first, ChangeObject::kElements, label + " " + k.second, "", n, items});
    }
  }

  /// Runs one iptables-restore --noflush per family; on a failure, the families done are undone.
  Status RestorePre(const std::string script[2], const std::string undo[2]) {
    Phase p("iptables-restore (mangle, nat)");
    for (int f = 0; f < 2; ++f) {
      if (script[f].empty()) continue;
      ProcessResult r = env_.Run({kRestore[f], "--noflush"}, script[f]);
      if (r.ok()) continue;
      for (int g = f - 1; g >= 0; --g)
        if (!undo[g].empty()) env_.Run({kRestore[g], "--noflush"}, undo[g]);
      return Status::Error(Code::kFirewall, std::string(kRestore[f]) + " failed for mailward's mangle and nat chains: " + r.Message());
    }
    return Status::Ok();
  }

  Status WriteAndReload(const std::string old[2], const std::string next[2], unsigned mode4, unsigned mode6, bool active) {
    unsigned modes[2] = {mode4, mode6};
    {
      Phase p("write ufw files");
      for (int f = 0; f < 2; ++f) {
        if (next[f] == old[f]) continue;
        Status s = env_.WriteFileAtomic(kFiles[f], next[f], Durability::kFsync, modes[f]);
        if (!s.ok()) {
          for (int g = 0; g < f; ++g) (void)env_.WriteFileAtomic(kFiles[g], old[g], Durability::kFsync, modes[g]);
          return s.WithContext("cannot write UFW's rules; nothing was applied");
        }
      }
    }
    if (!active) return Status::Ok();
    Phase p("ufw reload");
    ProcessResult r = env_.Run({"ufw", "reload"});
    if (r.ok()) return Status::Ok();
    for (int f = 0; f < 2; ++f) (void)env_.WriteFileAtomic(kFiles[f], old[f], Durability::kFsync, modes[f]);
    auto again = env_.Run({"ufw", "reload"});
    return Status::Error(Code::kFirewall, "ufw reload failed: " + r.Message() +
                                              (again.ok() ? "; UFW's previous rules were put back and reloaded"
                                                          : "; putting the previous rules back failed too: " + again.Message()));
  }

  BackendConfig cfg_;
  sys::Env& env_;
};

}  // namespace
}  // namespace ufw

std::unique_ptr<Backend> MakeUfwBackend(const BackendConfig& cfg) { return std::make_unique<ufw::UfwBackend>(cfg); }

}  // namespace mw
