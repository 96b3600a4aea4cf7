#include "analysis/ipt_eval.h"

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sstream>

namespace mw::analysis {

std::vector<std::string> SplitIptablesWords(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool in_quote = false, have = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (in_quote) {
      if (c == '\\' && i + 1 < line.size()) {
        cur += line[++i];
      } else if (c == '"') {
        in_quote = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      in_quote = true;
      have = true;
    } else if (c == ' ' || c == '\t') {
      if (have || !cur.empty()) out.push_back(cur);
      cur.clear();
      have = false;
    } else {
      cur += c;
    }
  }
  if (have || !cur.empty()) out.push_back(cur);
  return out;
}

Ipsets ParseIpsetSave(const std::string& text) {
  Ipsets out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto w = SplitIptablesWords(line);
    if (w.size() >= 3 && w[0] == "create") {
      Ipsets::Set s;
      s.type = w[2];
      for (size_t i = 3; i + 1 < w.size(); ++i)
        if (w[i] == "family") s.family = w[i + 1] == "inet6" ? Family::kV6 : Family::kV4;
      s.decidable = s.type == "hash:ip" || s.type == "hash:net" || s.type == "bitmap:ip";
      out.sets[w[1]] = s;
    } else if (w.size() >= 3 && w[0] == "add") {
      auto it = out.sets.find(w[1]);
      if (it == out.sets.end() || !it->second.decidable) continue;
      Cidr c;
      std::string err;
      std::string e = w[2];
      bool nomatch = std::find(w.begin() + 3, w.end(), "nomatch") != w.end();  // an exception, not a member
      if (!nomatch && ParseCidr(e, &c, &err)) {
        it->second.entries.push_back(c);
      } else {
        it->second.decidable = false;  // ranges, host bits: not read here
      }
    }
  }
  return out;
}

namespace {

int32_t Priority(const std::string& table, const std::string& chain, Hook* hook, bool* ok) {
  *ok = true;
  if (chain == "PREROUTING") *hook = Hook::kPrerouting;
  else if (chain == "INPUT") *hook = Hook::kInput;
  else if (chain == "FORWARD") *hook = Hook::kForward;
  else *ok = false;
  if (table == "raw") return -300;
  if (table == "mangle") return -150;
  if (table == "nat") return *hook == Hook::kPrerouting ? -100 : 100;
  if (table == "filter") return 0;
  if (table == "security") return 50;
  *ok = false;
  return 0;
}

bool ParseAddr(Family f, const std::string& text, Cidr* out) {
  std::string err;
  std::string t = text;
  if (!ParseCidr(t, out, &err)) {
    // iptables prints host bits cleared, but be lenient: clear them ourselves.
    size_t slash = t.find('/');
    if (slash == std::string::npos) return false;
    Cidr c;
    if (!ParseCidr(t.substr(0, slash), &c, &err)) return false;
    int p = std::atoi(t.c_str() + slash + 1);
    int bits = f == Family::kV4 ? 32 : 128;
    if (p < 0 || p > bits) return false;
    c.prefix = static_cast<uint8_t>(p);
    for (int b = p; b < bits; ++b) c.addr.b[b / 8] &= static_cast<uint8_t>(~(0x80 >> (b % 8)));
    *out = c;
  }
  return true;
}

bool Contains(Family f, const std::string& list, const Addr& a) {
  std::stringstream ss(list);
  std::string part;
  Cidr host{f, a, static_cast<uint8_t>(f == Family::kV4 ? 32 : 128)};
  while (std::getline(ss, part, ',')) {
    Cidr c;
    if (ParseAddr(f, part, &c) && CidrContains(c, host)) return true;
  }
  return false;
}

bool IsAny(const std::string& a) { return a == "0.0.0.0/0" || a == "::/0"; }

bool PortIn(const std::string& spec, uint16_t port) {
  std::stringstream ss(spec);
  std::string part;
  while (std::getline(ss, part, ',')) {
    size_t colon = part.find(':');
    unsigned long lo = colon == 0 ? 0 : std::strtoul(part.c_str(), nullptr, 10);
    unsigned long hi = colon == std::string::npos ? lo : std::strtoul(part.c_str() + colon + 1, nullptr, 10);
    if (colon != std::string::npos && part.size() == colon + 1) hi = 65535;
    if (port >= lo && port <= hi) return true;
  }
  return false;
}

bool IfaceMatches(const std::string& pattern, const std::string& name) {
  if (!pattern.empty() && pattern.back() == '+') return name.compare(0, pattern.size() - 1, pattern, 0, pattern.size() - 1) == 0;
  return pattern == name;
}

bool ListHas(const std::string& list, const std::string& word) {
  std::stringstream ss(list);
  std::string part;
  while (std::getline(ss, part, ','))
    if (part == word) return true;
  return false;
}

uint32_t ParseU32(const std::string& s) { return static_cast<uint32_t>(std::strtoul(s.c_str(), nullptr, 0)); }

class IptRule : public Rule {
 public:
  IptRule(std::string line, const Table* table, Family family, std::shared_ptr<const Ipsets> ipsets)
      : line_(std::move(line)), words_(SplitIptablesWords(line_)), table_(table), family_(family),
        ipsets_(std::move(ipsets)) {}

  std::string Text() const override { return line_; }

  RuleResult Evaluate(const FlowState& st) const override {
    using A = RuleResult::Action;
    const Flow& flow = *st.flow;
    RuleResult res;
    Tri ordinary = Tri::kYes, others = Tri::kYes;
    bool source_dep = false, neg = false;
    auto test = [&](Tri t, bool from_source = false) {
      if (neg) t = Not(t);
      neg = false;
      if (from_source) {
        source_dep = true;
        ordinary = And(ordinary, t);
      } else {
        ordinary = And(ordinary, t);
        others = And(others, t);
      }
    };
    // A source match: decided for the flow's source, or by the ordinary-source rule.
    auto source_test = [&](auto contains) {
      if (flow.saddr) {
        test(contains(*flow.saddr));
        return;
      }
      bool n = neg;
      neg = false;
      test(n ? Tri::kYes : Tri::kNo, true);
    };
    std::string target;
    bool is_goto = false;
    size_t target_at = words_.size();
    for (size_t i = 2; i < words_.size(); ++i) {
      const std::string& t = words_[i];
      auto arg = [&]() -> std::string { return i + 1 < words_.size() ? words_[++i] : ""; };
      if (t == "!") {
        neg = true;
        continue;
      }
      if (t == "-j" || t == "-g" || t == "--jump" || t == "--goto") {
        is_goto = t == "-g" || t == "--goto";
        target = arg();
        target_at = i + 1;
        break;
      }
      if (t == "-p" || t == "--protocol") {
        std::string p = arg();
        test(FromBool(p == "tcp" || p == "6" || p == "all"));
      } else if (t == "-s" || t == "--source") {
        std::string a = arg();
        if (IsAny(a)) {
          test(Tri::kYes);
        } else {
          source_test([&](const Addr& s) { return FromBool(Contains(family_, a, s)); });
        }
      } else if (t == "-d" || t == "--destination") {
        std::string a = arg();
        if (IsAny(a)) test(Tri::kYes);
        else if (st.daddr) test(FromBool(Contains(family_, a, *st.daddr)));
        else test(Tri::kMaybe);
      } else if (t == "-i" || t == "--in-interface") {
        std::string ifc = arg();
        if (flow.iif) test(FromBool(IfaceMatches(ifc, *flow.iif)));
        else if (IfaceMatches(ifc, "lo")) test(Tri::kNo);  // from the network, not loopback
        else test(Tri::kMaybe);
      } else if (t == "-o" || t == "--out-interface") {
        std::string ifc = arg();
        if (st.hook != Hook::kForward) test(FromBool(IfaceMatches(ifc, "")));
        else if (st.oif && !st.oif->empty()) test(FromBool(IfaceMatches(ifc, *st.oif)));
        else test(Tri::kMaybe);
      } else if (t == "--dport" || t == "--destination-port" || t == "--dports" || t == "--destination-ports") {
        test(FromBool(PortIn(arg(), st.dport)));
      } else if (t == "--ports") {
        test(PortIn(arg(), st.dport) ? Tri::kYes : Tri::kMaybe);
      } else if (t == "--sport" || t == "--source-port" || t == "--sports" || t == "--source-ports") {
        arg();
        test(Tri::kMaybe);
      } else if (t == "--ctstate" || t == "--state") {
        std::string s = arg();
        test(FromBool(ListHas(s, "NEW") || (st.dnat && ListHas(s, "DNAT"))));
      } else if (t == "--ctstatus") {
        test(FromBool(ListHas(arg(), "NONE")));
      } else if (t == "--ctorigdstport") {
        test(FromBool(PortIn(arg(), flow.dport)));
      } else if (t == "--ctorigdst") {
        std::string a = arg();
        if (IsAny(a)) test(Tri::kYes);
        else if (flow.daddr) test(FromBool(Contains(family_, a, *flow.daddr)));
        else test(Tri::kMaybe);
      } else if (t == "--ctorigsrc") {
        std::string a = arg();
        if (IsAny(a)) test(Tri::kYes);
        else source_test([&](const Addr& s) { return FromBool(Contains(family_, a, s)); });
      } else if (t == "--ctreplsrc") {
        std::string a = arg();
        if (IsAny(a)) test(Tri::kYes);
        else if (st.daddr) test(FromBool(Contains(family_, a, *st.daddr)));
        else test(Tri::kMaybe);
      } else if (t == "--ctdir") {
        test(FromBool(arg() == "ORIGINAL"));
      } else if (t == "--ctproto") {
        std::string p = arg();
        test(FromBool(p == "tcp" || p == "6"));
      } else if (t == "--dst-type") {
        std::string ty = arg();
        test(FromBool(ListHas(ty, st.dest_local ? "LOCAL" : "UNICAST")));
      } else if (t == "--src-type") {
        std::string ty = arg();
        test(FromBool(ListHas(ty, "UNICAST")));
      } else if (t == "--limit-iface-in" || t == "--limit-iface-out") {
        // addrtype restricted to the interface: the address types above hold for it.
      } else if (t == "--pkt-type") {
        test(FromBool(arg() == "unicast"));
      } else if (t == "--syn") {
        test(Tri::kYes);
      } else if (t == "--tcp-flags") {
        std::string mask = arg(), comp = arg();
        bool syn_in_mask = mask == "ALL" || ListHas(mask, "SYN");
        bool ok = true;
        for (const char* f : {"FIN", "RST", "PSH", "ACK", "URG"})
          if ((mask == "ALL" || ListHas(mask, f)) && ListHas(comp, f)) ok = false;
        if (syn_in_mask && !(ListHas(comp, "SYN") || comp == "ALL")) ok = false;
        if (comp == "ALL") ok = false;
        test(FromBool(ok));
      } else if (t == "--mark") {
        std::string v = arg();
        size_t slash = v.find('/');
        uint32_t val = ParseU32(v.substr(0, slash)), mask = slash == std::string::npos ? 0xffffffffu : ParseU32(v.substr(slash + 1));
        bool connmark = LastModule(i) == "connmark";
        uint32_t have = connmark ? st.ct_mark : st.mark;
        if (!connmark && !st.mark_known) test(Tri::kMaybe);
        else test(FromBool((have & mask) == val));
      } else if (t == "--match-set") {
        std::string name = arg(), flags = arg();
        bool src = flags.rfind("src", 0) == 0;
        bool single = flags.find(',') == std::string::npos;
        auto it = ipsets_ ? ipsets_->sets.find(name) : decltype(ipsets_->sets.end()){};
        bool known = ipsets_ && it != ipsets_->sets.end() && it->second.decidable && single;
        if (src && !flow.saddr) {
          source_test([](const Addr&) { return Tri::kNo; });
        } else if (!known) {
          test(Tri::kMaybe);
        } else {
          std::optional<Addr> a = src ? flow.saddr : st.daddr;
          if (!a) {
            test(Tri::kMaybe);
          } else {
            bool in = false;
            Cidr host{family_, *a, static_cast<uint8_t>(family_ == Family::kV4 ? 32 : 128)};
            for (const auto& c : it->second.entries) in |= CidrContains(c, host);
            test(FromBool(in));
          }
        }
        SkipValues(&i);
        // Only "nomatch" entries make it matter, and a set with them is not decided here.
        if (i + 1 < words_.size() && words_[i + 1] == "--return-nomatch") ++i;
      } else if (t == "--rcheck" || t == "--update") {
        // A source seen before (a port-scan or brute-force list): an ordinary source is not.
        source_test([](const Addr&) { return Tri::kNo; });
      } else if (t == "--set" || t == "--remove" || t == "--rsource" || t == "--rdest" || t == "--mask" ||
                 t == "--reap") {
        if (t == "--mask") arg();
      } else if (t == "--name" || t == "--seconds" || t == "--hitcount" || t == "--rttl") {
        if (t != "--rttl") arg();
      } else if (t == "--connlimit-above" || t == "--hashlimit-above") {
        arg();
        // Per-source limits: a first connection is under any of them.
        source_test([](const Addr&) { return Tri::kNo; });
      } else if (t == "--connlimit-upto" || t == "--hashlimit-upto" || t == "--hashlimit") {
        arg();
        test(Tri::kYes);
      } else if (t == "--connlimit-mask" || t == "--connlimit-saddr" || t == "--connlimit-daddr" ||
                 t.rfind("--hashlimit-", 0) == 0) {
        if (t != "--connlimit-saddr" && t != "--connlimit-daddr") arg();
      } else if (t == "--src-range") {
        std::string r = arg();
        source_test([&](const Addr& s) {
          size_t dash = r.find('-');
          Cidr lo, hi;
          std::string err;
          if (dash == std::string::npos || !ParseCidr(r.substr(0, dash), &lo, &err) ||
              !ParseCidr(r.substr(dash + 1), &hi, &err))
            return Tri::kMaybe;
          return FromBool(!(s < lo.addr) && !(hi.addr < s));
        });
      } else if (t == "--dst-range") {
        arg();
        test(Tri::kMaybe);
      } else if (t == "--rt-type" || t == "--icmp-type" || t == "--icmpv6-type" || t == "--frag" ||
                 t == "--fragid") {
        arg();
        test(Tri::kNo);  // no routing header, not ICMP, not a fragment
      } else if (t == "-f" || t == "--fragment") {
        test(Tri::kNo);
      } else if (t == "-m" || t == "--match") {
        std::string m = arg();
        modules_seen_.push_back({i, m});
        static const std::set<std::string> kUnderstood = {
            "tcp", "multiport", "comment", "conntrack", "state", "addrtype", "pkttype", "rt", "icmp", "icmp6",
            "mark", "connmark", "set", "recent", "connlimit", "hashlimit", "iprange", "frag"};
        if (!kUnderstood.count(m)) {
          test(Tri::kMaybe);
          SkipValues(&i);
        }
      } else if (t == "--comment") {
        arg();
      } else if (t == "-c") {
        arg();
        arg();
      } else if (t.rfind("--", 0) == 0) {
        test(Tri::kMaybe);
        SkipValues(&i);
      }
    }
    if (ordinary == Tri::kNo && others == Tri::kNo) source_dep = false;
    res.match = ordinary;
    res.source_dependent = source_dep;
    if (target.empty()) return res;
    if (target == "ACCEPT") res.action = A::kAccept;
    else if (target == "DROP") res.action = A::kDrop;
    else if (target == "REJECT") res.action = A::kReject;
    else if (target == "RETURN") res.action = A::kReturn;
    else if (target == "NFQUEUE" || target == "QUEUE" || target == "TPROXY" || target == "SYNPROXY") res.action = A::kQueue;
    else if (target == "DNAT" || target == "REDIRECT") Dnat(target, target_at, &res);
    else if (target == "MARK" || target == "CONNMARK") Mark(target, target_at, st, &res);
    else if (table_->chains.count(target)) {
      res.action = is_goto ? A::kGoto : A::kJump;
      res.target = target;
    }
    // LOG, NFLOG, CT, SNAT, MASQUERADE, TCPMSS, SET, ...: statements; the packet goes on.
    return res;
  }

 private:
  /// The module named by the last `-m` before word i.
  std::string LastModule(size_t i) const {
    std::string m;
    for (size_t k = 2; k < i && k < words_.size(); ++k)
      if ((words_[k] == "-m" || words_[k] == "--match") && k + 1 < words_.size()) m = words_[k + 1];
    return m;
  }
  void SkipValues(size_t* i) const {
    while (*i + 1 < words_.size() && words_[*i + 1].rfind("-", 0) != 0 && words_[*i + 1] != "!") ++*i;
  }
  std::string Option(size_t from, const std::string& name) const {
    for (size_t k = from; k + 1 < words_.size(); ++k)
      if (words_[k] == name) return words_[k + 1];
    return "";
  }
  void Dnat(const std::string& target, size_t at, RuleResult* res) const {
    res->action = RuleResult::Action::kDnat;
    if (target == "REDIRECT") {
      Addr a{};
      if (family_ == Family::kV4) {
        a.b[0] = 127;
        a.b[3] = 1;
      } else {
        a.b[15] = 1;
      }
      res->dnat_addr = a;
      std::string p = Option(at, "--to-ports");
      if (!p.empty()) res->dnat_port = static_cast<uint16_t>(std::atoi(p.c_str()));
      return;
    }
    std::string to = Option(at, "--to-destination");
    std::string addr = to, port;
    if (!to.empty() && to[0] == '[') {
      size_t close = to.find(']');
      addr = to.substr(1, close == std::string::npos ? std::string::npos : close - 1);
      if (close != std::string::npos && close + 1 < to.size() && to[close + 1] == ':') port = to.substr(close + 2);
    } else if (family_ == Family::kV4) {
      size_t colon = to.find(':');
      if (colon != std::string::npos) {
        addr = to.substr(0, colon);
        port = to.substr(colon + 1);
      }
    }
    size_t dash = addr.find('-');
    if (dash != std::string::npos) addr = addr.substr(0, dash);
    Cidr c;
    std::string err;
    if (!addr.empty() && ParseCidr(addr, &c, &err)) res->dnat_addr = c.addr;
    if (!port.empty()) res->dnat_port = static_cast<uint16_t>(std::atoi(port.c_str()));
  }
  void Mark(const std::string& target, size_t at, const FlowState& st, RuleResult* res) const {
    auto split = [](const std::string& v, uint32_t* val, uint32_t* mask) {
      size_t slash = v.find('/');
      *val = ParseU32(v.substr(0, slash));
      *mask = slash == std::string::npos ? 0xffffffffu : ParseU32(v.substr(slash + 1));
    };
    uint32_t val = 0, mask = 0;
    bool ct = target == "CONNMARK";
    uint32_t cur = ct ? st.ct_mark : st.mark;
    std::string v;
    if (!(v = Option(at, "--set-xmark")).empty()) {
      split(v, &val, &mask);
      cur = (cur & ~mask) ^ val;
    } else if (!(v = Option(at, "--set-mark")).empty()) {
      split(v, &val, &mask);
      cur = (cur & ~mask) | val;
    } else if (!(v = Option(at, "--or-mark")).empty()) {
      cur |= ParseU32(v);
    } else if (!(v = Option(at, "--and-mark")).empty()) {
      cur &= ParseU32(v);
    } else if (ct && Option(at, "--restore-mark").empty() && std::find(words_.begin(), words_.end(), "--restore-mark") != words_.end()) {
      res->set_mark = st.ct_mark;
      return;
    } else if (ct && std::find(words_.begin(), words_.end(), "--save-mark") != words_.end()) {
      res->set_ct_mark = st.mark;
      return;
    } else {
      res->mark_unknown = !ct;
      return;
    }
    if (ct) res->set_ct_mark = cur;
    else res->set_mark = cur;
  }

  std::string line_;
  std::vector<std::string> words_;
  const Table* table_;
  Family family_;
  std::shared_ptr<const Ipsets> ipsets_;
  mutable std::vector<std::pair<size_t, std::string>> modules_seen_;
};

}  // namespace

void AddIptablesTables(const std::string& save_text, Family family, bool legacy,
                       std::shared_ptr<const Ipsets> ipsets, Topology* topo) {
  std::istringstream in(save_text);
  std::string line;
  Table* cur = nullptr;
  std::map<std::string, std::string> policies;
  std::vector<std::pair<std::string, std::string>> pending;  // chain, rule line
  auto finish = [&]() {
    if (!cur) return;
    for (auto& [chain, rule] : pending) {
      Chain& ch = cur->chains[chain];
      ch.name = chain;
      ch.rules.push_back(std::make_unique<IptRule>(rule, cur, family, ipsets));
    }
    for (const auto& [chain, policy] : policies) {
      Hook h = Hook::kInput;
      bool ok = false;
      int32_t prio = Priority(cur->name, chain, &h, &ok);
      if (!ok) continue;
      BaseChain b;
      b.chain = chain;
      b.hook = h;
      b.priority = prio;
      b.nat = cur->name == "nat";
      b.policy_drop = policy == "DROP";
      cur->bases.push_back(b);
    }
    pending.clear();
    policies.clear();
    cur = nullptr;
  };
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '*') {
      finish();
      Table t;
      t.dialect = Dialect::kIptables;
      t.family = family == Family::kV4 ? "iptables" : "ip6tables";
      t.name = line.substr(1);
      t.legacy = legacy;
      topo->tables.push_back(std::move(t));
      cur = &topo->tables.back();
    } else if (line[0] == ':' && cur) {
      std::istringstream ls(line.substr(1));
      std::string name, policy;
      ls >> name >> policy;
      cur->chains[name].name = name;
      if (policy != "-") policies[name] = policy;
    } else if (line.rfind("-A ", 0) == 0 && cur) {
      auto w = SplitIptablesWords(line);
      if (w.size() >= 2) pending.push_back({w[1], line});
    } else if (line == "COMMIT") {
      finish();
    }
  }
  finish();
}

}  // namespace mw::analysis
