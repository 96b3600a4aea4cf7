#include "backend/nft/restore_diff.h"

#include <algorithm>
#include <map>

#include "util/text.h"

namespace mw {
namespace {

/// Lines of `a` not matched in `b`, counting repeats.
std::vector<std::string> Minus(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::map<std::string, int> have;
  for (const auto& x : b) ++have[x];
  std::vector<std::string> out;
  for (const auto& x : a) {
    auto it = have.find(x);
    if (it != have.end() && it->second > 0) {
      --it->second;
      continue;
    }
    out.push_back(x);
  }
  return out;
}

void ElementLines(ChangeOp op, const LiveSet& s, const std::vector<Interval>& ivs, const PlanOptions& opts,
                  std::vector<Change>* out) {
  if (ivs.empty()) return;
  Change c{op, ChangeObject::kElements, s.spec.name, Plural(ivs.size(), "entry", "entries"), ivs.size(), {}};
  size_t n = opts.max_items == 0 ? ivs.size() : std::min(ivs.size(), opts.max_items);
  for (size_t i = 0; i < n; ++i) c.items.push_back(FormatInterval(s.spec.family, ivs[i]));
  out->push_back(std::move(c));
}

}  // namespace

void DescribeLineRestore(const std::vector<std::string>& now, const std::vector<std::string>& then,
                         ChangeObject object, const std::string& name, std::vector<Change>* out) {
  auto gone = Minus(now, then), back = Minus(then, now);
  for (const auto& l : gone) out->push_back({ChangeOp::kDelete, object, name, l, 1, {}});
  for (const auto& l : back) out->push_back({ChangeOp::kAdd, object, name, l, 1, {}});
  if (gone.empty() && back.empty() && now != then)
    out->push_back({ChangeOp::kReplace, object, name,
                    std::string("the same ") + ChangeObjectName(object) + "s, back in the snapshot's order", 1, {}});
}

std::vector<Change> DescribeTableRestore(const LiveTable& now, const LiveTable& then, const PlanOptions& opts) {
  std::vector<Change> out;
  if (!then.exists) {
    if (now.exists)
      out.push_back({ChangeOp::kDelete, ChangeObject::kTable, "inet mailward",
                     "the snapshot was taken before mailward had a table: " + Plural(now.rules.size(), "rule") + " and " +
                         Plural(now.sets.size(), "set") + " go with it",
                     1, {}});
    return out;
  }
  if (!now.exists) out.push_back({ChangeOp::kAdd, ChangeObject::kTable, "inet mailward", "", 1, {}});
  if (then.chain_exists && !now.chain_exists) out.push_back({ChangeOp::kAdd, ChangeObject::kChain, "prerouting", "", 1, {}});
  if (!then.chain_exists && now.chain_exists) out.push_back({ChangeOp::kDelete, ChangeObject::kChain, "prerouting", "", 1, {}});
  auto text = [](const LiveRule& r) { return r.text.empty() ? r.body : r.text; };
  std::vector<std::string> rn, rt;
  for (const auto& r : now.rules) rn.push_back(text(r));
  for (const auto& r : then.rules) rt.push_back(text(r));
  DescribeLineRestore(rn, rt, ChangeObject::kRule, "prerouting", &out);
  // Name each rule line by its mailward key where it has one.
  for (auto& c : out)
    if (c.object == ChangeObject::kRule && c.op != ChangeOp::kReplace)
      for (const auto& r : c.op == ChangeOp::kDelete ? now.rules : then.rules)
        if (text(r) == c.detail && !r.key.empty()) c.name = r.key;
  for (const auto& s : now.sets) {
    bool kept = std::any_of(then.sets.begin(), then.sets.end(), [&](const LiveSet& t) { return t.spec.name == s.spec.name; });
    if (!kept) out.push_back({ChangeOp::kDelete, ChangeObject::kSet, s.spec.name, Plural(s.intervals.size(), "entry", "entries"), 1, {}});
  }
  for (const auto& t : then.sets) {
    const LiveSet* s = nullptr;
    for (const auto& x : now.sets)
      if (x.spec.name == t.spec.name) s = &x;
    if (!s) {
      out.push_back({ChangeOp::kAdd, ChangeObject::kSet, t.spec.name, "", 1, {}});
      ElementLines(ChangeOp::kAdd, t, t.intervals, opts, &out);
      continue;
    }
    if (!t.spec.is_allow()) continue;  // meters: filled by the kernel, never compared
    std::vector<Interval> add, remove;
    DiffIntervals(t.intervals, s->intervals, &add, &remove);
    ElementLines(ChangeOp::kDelete, t, remove, opts, &out);
    ElementLines(ChangeOp::kAdd, t, add, opts, &out);
  }
  return out;
}

}  // namespace mw
