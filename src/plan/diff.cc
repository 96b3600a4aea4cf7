#include "plan/diff.h"

#include <algorithm>
#include <map>

namespace mw {

void DiffIntervals(const std::vector<Interval>& desired, const std::vector<Interval>& live,
                   std::vector<Interval>* add, std::vector<Interval>* remove) {
  size_t i = 0, j = 0;
  while (i < desired.size() || j < live.size()) {
    if (j == live.size() || (i < desired.size() && desired[i] < live[j])) {
      add->push_back(desired[i++]);
    } else if (i == desired.size() || live[j] < desired[i]) {
      remove->push_back(live[j++]);
    } else {
      ++i;
      ++j;
    }
  }
}

namespace {

Plan FullCreate(const Ruleset& desired, const std::vector<std::string>& bodies) {
  Plan p;
  p.create_table = true;
  p.create_chain = true;
  for (const auto& s : desired.sets) {
    p.create_sets.push_back(s.spec);
    if (!s.intervals.empty()) p.elements.push_back({s.spec.name, s.spec.family, s.spec.kind, s.intervals, {}});
  }
  for (size_t i = 0; i < desired.rules.size(); ++i)
    p.add_rules.push_back({desired.rules[i], bodies[i], std::nullopt});
  return p;
}

}  // namespace

Plan Diff(const Ruleset& desired, const std::vector<std::string>& bodies, const LiveTable& live) {
  if (!live.exists) return FullCreate(desired, bodies);

  // Shapes mailward never makes: start from a clean table, in the same atomic batch.
  std::string reason;
  if (!live.foreign.empty()) reason = "unexpected objects in table inet mailward: " + live.foreign.front();
  else if (live.chain_exists && !live.chain_ok) reason = "chain 'prerouting' has the wrong hook, priority or policy";
  for (const auto& ls : live.sets) {
    if (!reason.empty()) break;
    const AddrSet* want = desired.FindSet(ls.spec.name);
    if (!ls.spec_known) reason = "set '" + ls.spec.name + "' has a type mailward never makes";
    else if (want && !SetCompatible(want->spec, ls.spec, want->intervals.size()))
      reason = "set '" + ls.spec.name + "' has the wrong type, flags or size";
  }
  if (!reason.empty()) {
    Plan p = FullCreate(desired, bodies);
    p.recreate_reason = reason;
    return p;
  }

  Plan p;
  p.create_chain = !live.chain_exists;

  // Rules: keep the longest run of live rules that matches the desired order (an LCS on
  // key+body; chains are short), delete the others, insert the missing ones in place.
  const auto& L = live.rules;
  const auto& D = desired.rules;
  size_t n = L.size(), m = D.size();
  auto same = [&](size_t li, size_t di) { return L[li].key == D[di].key && L[li].body == bodies[di]; };
  std::vector<std::vector<uint16_t>> lcs(n + 1, std::vector<uint16_t>(m + 1, 0));
  for (size_t a = n; a-- > 0;)
    for (size_t b = m; b-- > 0;)
      lcs[a][b] = same(a, b) ? lcs[a + 1][b + 1] + 1 : std::max(lcs[a + 1][b], lcs[a][b + 1]);
  std::vector<int> kept_for_desired(m, -1);
  std::vector<bool> keep_live(n, false);
  for (size_t a = 0, b = 0; a < n && b < m;) {
    if (same(a, b)) {
      keep_live[a] = true;
      kept_for_desired[b] = static_cast<int>(a);
      ++a;
      ++b;
    } else if (lcs[a + 1][b] >= lcs[a][b + 1]) {
      ++a;
    } else {
      ++b;
    }
  }
  for (size_t a = 0; a < n; ++a)
    if (!keep_live[a]) p.delete_rules.push_back(L[a]);
  for (size_t b = 0; b < m; ++b) {
    if (kept_for_desired[b] >= 0) continue;
    RuleAdd add{D[b], bodies[b], std::nullopt};
    for (size_t nb = b + 1; nb < m; ++nb) {
      if (kept_for_desired[nb] >= 0) {
        add.before_handle = L[kept_for_desired[nb]].handle;
        break;
      }
    }
    p.add_rules.push_back(add);
  }

  // Sets.
  std::map<std::string, const LiveSet*> live_sets;
  for (const auto& ls : live.sets) live_sets[ls.spec.name] = &ls;
  for (const auto& ds : desired.sets) {
    auto it = live_sets.find(ds.spec.name);
    if (it == live_sets.end()) {
      p.create_sets.push_back(ds.spec);
      if (!ds.intervals.empty()) p.elements.push_back({ds.spec.name, ds.spec.family, ds.spec.kind, ds.intervals, {}});
      continue;
    }
    if (ds.spec.is_allow()) {
      ElementChange ec{ds.spec.name, ds.spec.family, ds.spec.kind, {}, {}};
      if (!it->second->elements_as_desired) DiffIntervals(ds.intervals, it->second->intervals, &ec.add, &ec.remove);
      if (!ec.add.empty() || !ec.remove.empty()) p.elements.push_back(std::move(ec));
    }
    live_sets.erase(it);
  }
  for (const auto& [name, ls] : live_sets) {
    (void)ls;
    p.delete_sets.push_back(name);
  }
  return p;
}

}  // namespace mw
