#include "analysis/reach.h"

#include <algorithm>
#include <deque>

namespace mw::analysis {

const char* HookName(Hook h) {
  switch (h) {
    case Hook::kIngress: return "ingress";
    case Hook::kPrerouting: return "prerouting";
    case Hook::kInput: return "input";
    case Hook::kForward: return "forward";
  }
  return "?";
}

const char* ReachName(Reach r) {
  switch (r) {
    case Reach::kReaches: return "reaches";
    case Reach::kBlocked: return "blocked";
    case Reach::kMaybeBlocked: return "may be blocked";
  }
  return "?";
}

namespace {


bool IsLoopbackAddr(Family f, const Addr& a) {
  if (f == Family::kV4) return a.b[0] == 127;
  Addr one{};
  one.b[15] = 1;
  return a == one;
}

}  // namespace

bool Flow::IsLocal(const Addr& a) const {
  if (IsLoopbackAddr(family, a)) return true;
  for (const auto& i : interfaces)
    for (const auto& c : i.addresses)
      if (c.family == family && c.addr == a) return true;
  return false;
}

std::string Flow::RouteOut(const Addr& a) const {
  std::string best;
  int best_len = -1;
  Cidr host{family, a, static_cast<uint8_t>(family == Family::kV4 ? 32 : 128)};
  for (const auto& i : interfaces)
    for (const auto& c : i.addresses) {
      if (c.family != family || c.prefix <= best_len) continue;
      Cidr net = c;
      // The connected route: the interface address with its host bits cleared.
      for (int bit = c.prefix; bit < (family == Family::kV4 ? 32 : 128); ++bit)
        net.addr.b[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
      if (CidrContains(net, host)) {
        best = i.name;
        best_len = c.prefix;
      }
    }
  return best;
}

std::string Table::Label() const {
  if (dialect == Dialect::kNft) return "table " + family + " " + name;
  return family + (legacy ? "-legacy " : " ") + name;
}

bool Table::Applies(Family f) const {
  if (family == "inet" || family == "netdev" || family == "bridge") return family != "bridge";
  if (family == "ip" || family == "iptables") return f == Family::kV4;
  if (family == "ip6" || family == "ip6tables") return f == Family::kV6;
  return false;
}

namespace {

struct Base {
  const Table* table;
  const BaseChain* base;
};

struct Frame {
  const Table* table;
  const Chain* chain;
  size_t next = 0;
};

/// A path longer than this is not shown in full (a loop in hand-made input).
constexpr size_t kMaxPath = 256;

struct Branch {
  FlowState st;
  Hook hook = Hook::kIngress;
  size_t base_idx = 0;
  std::vector<Frame> stack;
  std::vector<Step> path;
  std::vector<Restriction> restrictions;
  bool maybe = false;
};

struct Ended {
  bool blocked = false;
  std::vector<Step> blockers;
  std::string destination;
  std::vector<Step> path;
  std::optional<Step> decided_by;
};

std::string ActionText(const RuleResult& r, Family f) {
  using A = RuleResult::Action;
  switch (r.action) {
    case A::kContinue: return "continue";
    case A::kAccept: return "accept";
    case A::kDrop: return "drop";
    case A::kReject: return "reject";
    case A::kReturn: return "return";
    case A::kJump: return "jump " + r.target;
    case A::kGoto: return "goto " + r.target;
    case A::kQueue: return "queue";
    case A::kDnat: {
      std::string to = r.dnat_addr ? FormatAddr(f, *r.dnat_addr) : std::string();
      if (r.dnat_addr && f == Family::kV6 && r.dnat_port) to = "[" + to + "]";
      if (r.dnat_port) to += ":" + std::to_string(*r.dnat_port);
      return "dnat to " + to;
    }
  }
  return "?";
}

class Walker {
 public:
  Walker(const Topology& topo, const Flow& flow, bool all_blockers) : flow_(flow), all_blockers_(all_blockers) {
    for (Hook h : {Hook::kIngress, Hook::kPrerouting, Hook::kInput, Hook::kForward}) {
      auto& v = bases_[static_cast<int>(h)];
      for (const auto& t : topo.tables) {
        if (!t.Applies(flow.family)) continue;
        for (const auto& b : t.bases)
          if (b.hook == h) v.push_back({&t, &b});
      }
      std::stable_sort(v.begin(), v.end(),
                       [](const Base& a, const Base& b) { return a.base->priority < b.base->priority; });
    }
  }

  Verdict Run(size_t max_branches) {
    Branch first;
    first.st.flow = &flow_;
    first.st.dport = flow_.dport;
    first.st.daddr = flow_.daddr;
    first.st.dest_local = true;
    std::deque<Branch> work;
    work.push_back(std::move(first));
    std::vector<Ended> ends;
    std::vector<Restriction> restrictions;
    size_t forks = 0;
    bool overflow = false;
    while (!work.empty()) {
      Branch b = std::move(work.front());
      work.pop_front();
      Ended e = RunBranch(b, &work, &forks, max_branches, &overflow);
      for (auto& r : b.restrictions) {
        bool dup = false;
        for (const auto& x : restrictions) dup |= x.table == r.table && x.chain == r.chain && x.rule == r.rule;
        if (!dup) restrictions.push_back(r);
      }
      ends.push_back(std::move(e));
    }
    Verdict v;
    v.restrictions = std::move(restrictions);
    size_t blocked = 0;
    for (const auto& e : ends) blocked += e.blocked;
    const Ended* shown = &ends.front();
    for (const auto& e : ends)
      if (e.blocked) {
        shown = &e;
        break;
      }
    if (blocked == 0 && !overflow) v.reach = Reach::kReaches;
    else if (blocked == ends.size() && !overflow) v.reach = Reach::kBlocked;
    else v.reach = Reach::kMaybeBlocked;
    v.destination = shown->destination;
    v.path = shown->path;
    v.decided_by = shown->decided_by;
    v.blockers = shown->blockers;
    return v;
  }

 private:
  std::string Destination(const FlowState& st) const {
    if (!st.dnat) return "this host";
    std::string a = st.daddr ? FormatAddr(flow_.family, *st.daddr) : "this host";
    if (flow_.family == Family::kV6 && st.daddr) a = "[" + a + "]";
    return a + ":" + std::to_string(st.dport);
  }

  /// Runs one branch to its end; undecided rules push the not-matched alternative to `work`.
  Ended RunBranch(Branch& b, std::deque<Branch>* work, size_t* forks, size_t max_forks, bool* overflow) {
    using A = RuleResult::Action;
    Ended e;
    auto end_blocked = [&](Step s) {
      b.path.push_back(s);
      e.blocked = true;
      if (!e.decided_by) e.decided_by = s;
      e.blockers.push_back(s);
      e.path = b.path;
      e.destination = Destination(b.st);
      return e;
    };
    // With all_blockers, a drop is recorded and the walk goes on with the next base chain.
    auto blocked_go_on = [&](Step s) -> bool {
      if (!all_blockers_) return false;
      end_blocked(s);
      b.stack.clear();
      ++b.base_idx;
      return true;
    };
    // A loop (the kernel refuses one, a hand-edited save file may hold one) or a fork storm must
    // not hang the check: the whole walk gets a bounded number of steps.
    while (++steps_ < kMaxSteps) {
      if (b.stack.empty()) {
        const auto& v = bases_[static_cast<int>(b.hook)];
        if (b.base_idx >= v.size()) {
          b.base_idx = 0;
          if (b.hook == Hook::kIngress) {
            b.hook = Hook::kPrerouting;
          } else if (b.hook == Hook::kPrerouting) {
            if (b.st.dest_local) {
              b.hook = Hook::kInput;
            } else if (!flow_.forwarding) {
              return end_blocked({"routing", "", "forwarding is off for this family", "drop", Tri::kYes});
            } else {
              b.hook = Hook::kForward;
              if (b.st.daddr) b.st.oif = flow_.RouteOut(*b.st.daddr);
            }
          } else {
            if (!e.blocked) e.path = b.path;
            e.destination = Destination(b.st);
            return e;
          }
          b.st.hook = b.hook;
          continue;
        }
        const Base& base = v[b.base_idx];
        if (b.hook == Hook::kIngress && !base.base->devices.empty()) {
          if (flow_.iif) {
            if (std::find(base.base->devices.begin(), base.base->devices.end(), *flow_.iif) ==
                base.base->devices.end()) {
              ++b.base_idx;
              continue;
            }
          }
        }
        auto it = base.table->chains.find(base.base->chain);
        if (it == base.table->chains.end()) {
          ++b.base_idx;
          continue;
        }
        b.stack.push_back({base.table, &it->second, 0});
        continue;
      }
      Frame& f = b.stack.back();
      if (f.next >= f.chain->rules.size()) {
        b.stack.pop_back();
        if (b.stack.empty()) {
          const Base& base = bases_[static_cast<int>(b.hook)][b.base_idx];
          if (base.base->policy_drop) {
            Step s{base.table->Label(), base.base->chain, "policy drop", "drop", Tri::kYes};
            if (blocked_go_on(s)) continue;
            return end_blocked(s);
          }
          ++b.base_idx;
        }
        continue;
      }
      const Rule& rule = *f.chain->rules[f.next++];
      RuleResult r = rule.Evaluate(b.st);
      if (r.source_dependent && r.match == Tri::kNo &&
          (r.action == A::kDrop || r.action == A::kReject || r.action == A::kQueue || r.action == A::kJump ||
           r.action == A::kGoto))
        b.restrictions.push_back({f.table->Label(), f.chain->name, rule.Text()});
      if (r.match == Tri::kNo) continue;
      Tri certainty = Tri::kYes;
      if (r.match == Tri::kMaybe) {
        if (*forks >= max_forks) {
          *overflow = true;
        } else {
          ++*forks;
          Branch alt = b;  // the rule did not match: on to the next rule
          alt.maybe = true;
          work->push_back(std::move(alt));
        }
        b.maybe = true;
        certainty = Tri::kMaybe;
      }
      if (r.set_mark) b.st.mark = *r.set_mark;
      if (r.set_ct_mark) b.st.ct_mark = *r.set_ct_mark;
      if (r.mark_unknown) b.st.mark_known = false;
      if (r.set_daddr) {
        b.st.daddr = r.set_daddr;
        b.st.dest_local = flow_.IsLocal(*r.set_daddr);
        b.st.dnat = true;
      }
      if (r.set_dport) {
        b.st.dport = *r.set_dport;
        b.st.dnat = true;
      }
      if (r.rewrite_unknown) {
        // Sent somewhere mailward cannot tell: it may reach this host or not.
        Step rs{f.table->Label(), f.chain->name, rule.Text(), "rewrites the destination", Tri::kMaybe};
        if (*forks < max_forks) {
          ++*forks;
          Branch alt = b;
          alt.path.push_back(rs);
          work->push_back(std::move(alt));
        } else {
          *overflow = true;
        }
        return end_blocked(rs);
      }
      Step s{f.table->Label(), f.chain->name, rule.Text(), ActionText(r, flow_.family), certainty};
      if (b.path.size() >= kMaxPath) b.path.pop_back();
      switch (r.action) {
        case A::kContinue:
          if (r.set_mark || r.set_ct_mark) b.path.push_back(s);
          break;
        case A::kAccept:
          b.path.push_back(s);
          b.stack.clear();
          ++b.base_idx;
          break;
        case A::kDrop:
        case A::kReject:
          if (blocked_go_on(s)) break;
          return end_blocked(s);
        case A::kQueue: {
          // User space decides: both outcomes are possible.
          if (*forks < max_forks) {
            ++*forks;
            Branch alt = b;
            alt.path.push_back(s);
            alt.stack.clear();
            ++alt.base_idx;
            work->push_back(std::move(alt));
          } else {
            *overflow = true;
          }
          s.certainty = Tri::kMaybe;
          return end_blocked(s);
        }
        case A::kReturn:
          b.path.push_back(s);
          b.stack.pop_back();
          if (b.stack.empty()) {
            const Base& base = bases_[static_cast<int>(b.hook)][b.base_idx];
            if (base.base->policy_drop) {
              Step ps{base.table->Label(), base.base->chain, "policy drop", "drop", Tri::kYes};
              if (blocked_go_on(ps)) break;
              return end_blocked(ps);
            }
            ++b.base_idx;
          }
          break;
        case A::kJump:
        case A::kGoto: {
          auto it = f.table->chains.find(r.target);
          if (it == f.table->chains.end()) break;  // the kernel refuses a jump to nowhere
          if (b.stack.size() >= 64) {  // deeper than the kernel allows: a loop in hand-made input
            *overflow = true;
            e.path = b.path;
            e.destination = Destination(b.st);
            return e;
          }
          b.path.push_back(s);
          const Table* t = f.table;
          if (r.action == A::kGoto) b.stack.pop_back();
          b.stack.push_back({t, &it->second, 0});
          break;
        }
        case A::kDnat:
          b.path.push_back(s);
          b.st.dnat = true;
          if (r.dnat_addr) {
            b.st.daddr = r.dnat_addr;
            b.st.dest_local = flow_.IsLocal(*r.dnat_addr);
          }
          if (r.dnat_port) b.st.dport = *r.dnat_port;
          b.stack.clear();
          ++b.base_idx;
          break;
      }
    }
    *overflow = true;  // a loop the kernel would have refused; be honest about it
    e.path = b.path;
    e.destination = Destination(b.st);
    return e;
  }

  static constexpr size_t kMaxSteps = 100000;
  size_t steps_ = 0;
  const Flow& flow_;
  bool all_blockers_;
  std::vector<Base> bases_[4];
};

}  // namespace

Verdict Walk(const Topology& topo, const Flow& flow, const WalkOptions& opts) {
  Walker w(topo, flow, opts.all_blockers);
  return w.Run(opts.max_branches);
}

}  // namespace mw::analysis
