// The iptables backend: mailward's chain MAILWARD in the filter table of iptables and
// ip6tables, one jump to it from INPUT, the same-named chains in mangle and nat jumped to from
// PREROUTING for the DNAT path (ipt_rules.h says why), and its allowlists in ipsets (mw_*).
// Reads with iptables-save and `ipset save`, writes with one `ipset restore` and one
// `iptables-restore --noflush` per family covering every table (one transaction with
// iptables-nft; table by table with legacy); a failure part-way is undone.
// Every command runs from argv, never through a shell.
#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "backend/backend.h"
#include "backend/ipt_rules.h"
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
  SavedTable table;    ///< filter
  SavedTable pre[kTableCount];  ///< mangle (1) and nat (2); [0] unused
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
    if (opts.analyze_conflicts) {
      for (uint16_t port : desired.open_ports)
        for (int f = 0; f < 2; ++f) {
          if (!plan->live.fam[f].available) continue;
          auto c = FindConflicts(plan->live.fam[f].table, port, f == 0 ? Family::kV4 : Family::kV6,
                                 f == 0 ? "iptables" : "ip6tables");
          plan->conflicts.insert(plan->conflicts.end(), c.begin(), c.end());
        }
      AddNativeNftablesConflicts(desired.open_ports, plan.get());
    }
    return std::unique_ptr<BackendPlan>(std::move(plan));
  }

  Status Apply(const BackendPlan& base) override {
    const auto& plan = static_cast<const IptPlan&>(base);
    if (plan.changes.empty()) return Status::Ok();
    {
      Phase p("recheck live state");
      auto now = ReadLive(false);
      if (!now.ok()) return now.status();
      if (now->generation != plan.generation)
        return Status::Error(Code::kGenerationMoved,
                             "the iptables rules or mailward's ipsets changed since the plan was made; nothing was applied");
    }
    if (!plan.ipset_script.empty()) {
      Phase p("ipset restore");
      auto r = RunProcess({tools_.ipset, "-exist", "restore"}, plan.ipset_script);
      if (!r.ok()) {
        RunProcess({tools_.ipset, "-exist", "restore"}, plan.ipset_undo);
        return Status::Error(Code::kFirewall, "ipset restore failed: " + r.Message() + "; nothing was applied");
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
        // With legacy iptables the tables before the failing one are committed already.
        if (auto now = ReadLive(false); now.ok() && now->fam[f].available) {
          std::string back = RestoreScript(now->fam[f].Own(), plan.live.fam[f].Own());
          if (!back.empty()) {
            auto u = RunProcess({tools_.restore[f], "--noflush"}, back);
            if (!u.ok()) undo_errors += "; undoing " + tools_.restore[f] + " failed too: " + u.Message();
          }
        }
        for (int g = f - 1; g >= 0; --g)
          if (!plan.undo[g].empty()) {
            auto u = RunProcess({tools_.restore[g], "--noflush"}, plan.undo[g]);
            if (!u.ok()) undo_errors += "; undoing " + tools_.restore[g] + " failed too: " + u.Message();
          }
        if (!plan.ipset_undo.empty()) {
          auto u = RunProcess({tools_.ipset, "-exist", "restore"}, plan.ipset_undo);
          if (!u.ok()) undo_errors += "; undoing the ipset changes failed too: " + u.Message();
        }
        return Status::Error(Code::kFirewall, tools_.restore[f] + " failed: " + r.Message() +
                                                  (undo_errors.empty() ? "; everything was put back as it was" : undo_errors));
      }
    }
    for (const auto& name : plan.destroy) {
      auto r = RunProcess({tools_.ipset, "destroy", name});
      if (!r.ok()) return Status::Error(Code::kFirewall, "the rules were applied, but the unused ipset " + name +
                                                             " could not be removed: " + r.Message());
    }
    return Status::Ok();
  }

  Result<Snapshot> TakeSnapshot(const BackendPlan& base) override {
    const auto& plan = static_cast<const IptPlan&>(base);
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
    // MWIPT1 (before the mangle and nat chains) records the filter table only: mailward had
    // no chain elsewhere then.
    bool v1 = bytes.rfind("MWIPT1\n", 0) == 0;
    if (!v1 && bytes.rfind("MWIPT2\n", 0) != 0)
      return Status::Invalid("this snapshot was not made by the iptables backend");
    Target t;
    bool seen[2] = {false, false};
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
        cur = &(t.ipsets[s.name] = s);
        continue;
      }
      if (line.size() < 3) continue;
      int f = line.rfind("v6 ", 0) == 0 ? 1 : 0;
      seen[f] = true;
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
      OwnTable& o = t.own[f].t[tb];
      // Only mailward's own objects are ever written back.
      if (rest.rfind("chain ", 0) == 0) {
        o.chain = rest.substr(6) == "1";
      } else if (rest.rfind("rule ", 0) == 0) {
        if (!IsOwnRuleLine(rest.substr(5), tb)) return Status::Invalid("a snapshot rule that is not mailward's: " + rest);
        o.rules.push_back(rest.substr(5));
      } else if (rest.rfind("jump ", 0) == 0) {
        if (!IsOwnJumpLine(rest.substr(5), tb)) return Status::Invalid("a snapshot jump that is not mailward's: " + rest);
        o.jumps.push_back(rest.substr(5));
      }
    }
    auto live = ReadLive(true);
    if (!live.ok()) return live.status();
    for (int f = 0; f < 2; ++f)
      if (!seen[f]) t.own[f] = live->fam[f].Own();  // not recorded: leave as it is
    PlanOptions opts;
    opts.analyze_conflicts = false;
    auto plan = MakePlan(std::move(*live), std::move(t), opts);
    return Apply(*plan);
  }

 private:
  Result<Live> ReadLive(bool with_entries) {
    Phase p("read iptables state");
    Live live;
    for (int f = 0; f < 2; ++f) {
      // Every table at once (mailward's chains are in filter, mangle and nat); tables that
      // were never used are not listed, and reading does not create them.
      auto r = RunProcess({tools_.save[f]});
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
  Tools tools_;
};

}  // namespace
}  // namespace ipt

std::unique_ptr<Backend> MakeIptablesBackend(const BackendConfig& cfg) {
  return std::make_unique<ipt::IptablesBackend>(cfg);
}

}  // namespace mw
