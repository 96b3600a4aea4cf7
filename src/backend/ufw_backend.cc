// The UFW backend: mailward's rules live in UFW's own user rules files, tagged
// `comment=mailward`, so `ufw status` shows them and UFW's reloads keep them. An apply writes
// both files once (atomically) and runs one `ufw reload`, instead of one slow `ufw` call per
// rule; if the reload fails the previous files are put back and reloaded.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include "backend/backend.h"
#include "backend/ipt_rules.h"
#include "backend/ufw_rules.h"
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

Result<Files> ReadFiles() {
  Files out;
  for (int f = 0; f < 2; ++f) {
    auto text = ReadFile(kFiles[f]);
    if (!text.ok()) return text.status().WithContext("cannot read UFW's rules");
    out.text[f] = std::move(*text);
    struct stat st;
    if (stat(kFiles[f], &st) == 0) out.mode[f] = st.st_mode & 07777;
  }
  return out;
}

bool ConfFlag(const std::string& path, const std::string& key) {
  auto text = ReadFile(path);
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
};

class UfwBackend : public Backend {
 public:
  explicit UfwBackend(const BackendConfig& cfg) : cfg_(cfg) {}
  std::string name() const override { return "ufw"; }

  Result<std::unique_ptr<BackendPlan>> Plan(const Ruleset& desired, const PlanOptions& opts) override {
    Phase phase("plan ufw");
    if (!HaveProgram("ufw")) return Status::Error(Code::kFirewall, "ufw is not installed (backend: ufw)");
    auto plan = std::make_unique<UfwPlan>();
    plan->active = ConfFlag("/etc/ufw/ufw.conf", "ENABLED");
    bool ipv6 = ConfFlag("/etc/default/ufw", "IPV6");
    if (!plan->active)
      plan->notes.push_back("UFW is not active: the rules are written to its files and take effect when UFW is enabled");
    if (!ipv6) plan->notes.push_back("UFW has IPV6=no in /etc/default/ufw: its IPv6 rules (user6.rules) are not loaded");
    auto files = ReadFiles();
    if (!files.ok()) return files.status();
    for (int f = 0; f < 2; ++f) {
      auto parsed = ParseUserRules(files->text[f], kFiles[f]);
      if (!parsed.ok()) return parsed.status();
      plan->live[f].mode = files->mode[f];
      plan->live[f].text = files->text[f];
      plan->live[f].rules = std::move(*parsed);
    }
    plan->generation = files->Generation();

    std::vector<std::string> loaded[2];
    ipt::SavedTable kernel[2];
    for (int f = 0; f < 2; ++f) {
      auto r = RunProcess({f == 0 ? "iptables-save" : "ip6tables-save", "-t", "filter"});
      if (!r.ok()) continue;
      kernel[f] = ipt::ParseSave(r.out);
      if (const auto* c = kernel[f].Find(kInputChain[f])) loaded[f] = c->rules;
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
          plan->changes.push_back({"replace", "rule", label,
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
          plan->changes.push_back({"replace", "rule", label + " loaded rules",
                                   "the rules UFW has loaded differ from its files: reload", 1, {}});
        }
      }
    }
    return std::unique_ptr<BackendPlan>(std::move(plan));
  }

  Status Apply(const BackendPlan& base) override {
    const auto& plan = static_cast<const UfwPlan&>(base);
    if (plan.changes.empty()) return Status::Ok();
    auto now = ReadFiles();
    if (!now.ok()) return now.status();
    if (now->Generation() != plan.generation)
      return Status::Error(Code::kGenerationMoved, "UFW's rules files changed since the plan was made; nothing was applied");
    std::string old[2] = {plan.live[0].text, plan.live[1].text};
    std::string next[2] = {plan.next[0].empty() ? old[0] : plan.next[0], plan.next[1].empty() ? old[1] : plan.next[1]};
    return WriteAndReload(old, next, plan.live[0].mode, plan.live[1].mode, plan.active);
  }

  Result<Snapshot> TakeSnapshot(const BackendPlan& base) override {
    const auto& plan = static_cast<const UfwPlan&>(base);
    std::string out = "MWUFW1\n";
    for (int f = 0; f < 2; ++f) out += std::to_string(plan.live[f].text.size()) + "\n" + plan.live[f].text;
    return Snapshot{out, ""};
  }

  Status Restore(const std::string& bytes, const std::string&) override {
    if (bytes.rfind("MWUFW1\n", 0) != 0) return Status::Invalid("this snapshot was not made by the UFW backend");
    std::string files[2];
    size_t pos = 7;
    for (int f = 0; f < 2; ++f) {
      size_t nl = bytes.find('\n', pos);
      if (nl == std::string::npos) return Status::Io("a damaged UFW snapshot");
      size_t len = std::strtoull(bytes.c_str() + pos, nullptr, 10);
      if (nl + 1 + len > bytes.size()) return Status::Io("a damaged UFW snapshot");
      files[f] = bytes.substr(nl + 1, len);
      pos = nl + 1 + len;
    }
    auto now = ReadFiles();
    if (!now.ok()) return now.status();
    return WriteAndReload(now->text, files, now->mode[0], now->mode[1], ConfFlag("/etc/ufw/ufw.conf", "ENABLED"));
  }

 private:
  static void DescribeChanges(const std::vector<UfwRule>& have, const std::vector<UfwRule>& want, const std::string& label,
                              const PlanOptions& opts, BackendPlan* plan) {
    std::set<std::string> h, w;
    for (const auto& r : have) h.insert(r.tuple);
    for (const auto& r : want) w.insert(r.tuple);
    // Allowlisted sources are grouped per port, like set elements.
    std::map<std::pair<std::string, std::string>, std::vector<std::string>> grouped;
    auto emit = [&](const std::string& op, const std::string& tuple) {
      auto words = SplitWords(tuple);
      bool any_src = words.size() > 5 && (words[5] == "0.0.0.0/0" || words[5] == "::/0");
      if (words.size() > 5 && words[0] == "allow" && !any_src) {
        grouped[{op, "allow " + words[2] + "/" + words[1] + " from"}].push_back(words[5]);
        return;
      }
      plan->changes.push_back({op, "rule", label, DescribeTuple(tuple), 1, {}});
    };
    for (const auto& r : want)
      if (!h.count(r.tuple)) emit("add", r.tuple);
    for (const auto& r : have)
      if (!w.count(r.tuple)) emit("delete", r.tuple);
    for (auto& [k, items] : grouped) {
      size_t n = items.size();
      if (opts.max_items && items.size() > opts.max_items) items.resize(opts.max_items);
      plan->changes.push_back({k.first, "elements", label + " " + k.second, "", n, items});
    }
  }

  Status WriteAndReload(const std::string old[2], const std::string next[2], unsigned mode4, unsigned mode6, bool active) {
    unsigned modes[2] = {mode4, mode6};
    {
      Phase p("write ufw files");
      for (int f = 0; f < 2; ++f) {
        if (next[f] == old[f]) continue;
        Status s = WriteFileAtomic(kFiles[f], next[f], Durability::kFsync, modes[f]);
        if (!s.ok()) {
          for (int g = 0; g < f; ++g) WriteFileAtomic(kFiles[g], old[g], Durability::kFsync, modes[g]);
          return s.WithContext("cannot write UFW's rules; nothing was applied");
        }
      }
    }
    if (!active) return Status::Ok();
    Phase p("ufw reload");
    const char* fault = std::getenv("MAILWARD_TEST_FAULT");
    ProcessResult r;
    if (fault && std::string(fault) == "ufw-reload") r.err = "injected failure (MAILWARD_TEST_FAULT=ufw-reload)";
    else r = RunProcess({"ufw", "reload"});
    if (r.ok()) return Status::Ok();
    for (int f = 0; f < 2; ++f) WriteFileAtomic(kFiles[f], old[f], Durability::kFsync, modes[f]);
    auto again = RunProcess({"ufw", "reload"});
    return Status::Error(Code::kFirewall, "ufw reload failed: " + r.Message() +
                                              (again.ok() ? "; UFW's previous rules were put back and reloaded"
                                                          : "; putting the previous rules back failed too: " + again.Message()));
  }

  BackendConfig cfg_;
};

}  // namespace
}  // namespace ufw

std::unique_ptr<Backend> MakeUfwBackend(const BackendConfig& cfg) { return std::make_unique<ufw::UfwBackend>(cfg); }

}  // namespace mw
