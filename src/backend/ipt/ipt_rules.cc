#include "backend/ipt/ipt_rules.h"

#include "analysis/ipt_eval.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>

#include "util/hash.h"

namespace mw::ipt {
namespace {

std::string Hex8(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

const char* RateUnit(uint64_t seconds) {
  switch (seconds) {
    case 1: return "sec";
    case 60: return "min";
    case 3600: return "hour";
    default: return "day";
  }
}

}  // namespace

std::string IpsetName(const std::string& set_name) {
  std::string base = set_name.rfind("allow_", 0) == 0 ? set_name.substr(6) : set_name;
  std::string name = "mw_" + base;
  if (name.size() <= 31) return name;
  // Keep the readable suffix ("_hosts_v4") and make the rest a hash of the whole name.
  std::string suffix = base.substr(base.size() - std::min<size_t>(base.size(), 9));
  return "mw_" + Hex8(Fnv32(set_name)) + "_" + suffix;
}

std::string TempIpsetName(const std::string& ipset_name) { return "mwt_" + Hex8(Fnv32(ipset_name)); }

IpsetSpec MakeIpset(const AddrSet& set) {
  IpsetSpec s;
  s.name = IpsetName(set.spec.name);
  s.family = set.spec.family;
  if (set.spec.kind == SetSpec::Kind::kAllowHosts) {
    s.type = "hash:ip";
    s.entries.reserve(set.intervals.size());
    for (const auto& iv : set.intervals) s.entries.push_back(FormatAddr(s.family, iv.start));
  } else {
    s.type = "hash:net";
    for (const auto& iv : set.intervals)
      for (const auto& c : IntervalToCidrs(s.family, iv)) s.entries.push_back(FormatCidr(c));
  }
  s.maxelem = HostsCapacity(s.entries.size());
  if (s.maxelem < 65536) s.maxelem = 65536;  // ipset's default: room for edits without a rebuild
  std::sort(s.entries.begin(), s.entries.end());
  return s;
}

std::string RenderRule(const RuleSpec& r, Family f) {
  std::string out = std::string("-A ") + kChain;
  if (r.loopback) out += " -i lo";
  if (r.port) out += " -p tcp -m tcp --dport " + std::to_string(r.port);
  if (!r.saddr_set.empty()) out += " -m set --match-set " + IpsetName(r.saddr_set) + " src";
  if (r.ct_new) out += " -m conntrack --ctstate NEW";
  if (!r.meter_set.empty() && r.limit) {
    out += " -m hashlimit --hashlimit-above " + std::to_string(r.limit->count) + "/" + RateUnit(r.limit->unit_seconds) +
           " --hashlimit-burst " + std::to_string(r.limit->burst) + " --hashlimit-mode srcip --hashlimit-name " +
           r.meter_set;
    // The meter's size and timeout come from its set in the model; BuildRuleset fixes them.
    uint64_t expire = std::max<uint64_t>(60, 2 * r.limit->unit_seconds) * 1000;
    out += " --hashlimit-htable-max 65535 --hashlimit-htable-expire " + std::to_string(expire);
  }
  out += " -m comment --comment \"" + r.key + "\"";
  switch (r.verdict) {
    case Verdict::kAccept: out += " -j RETURN"; break;
    case Verdict::kDrop: out += " -j DROP"; break;
    case Verdict::kReject: out += " -j REJECT --reject-with tcp-reset"; break;
  }
  (void)f;
  return out;
}

std::vector<std::string> ChainRules(const Ruleset& rs, Family f) {
  std::vector<std::string> out;
  for (const auto& r : rs.rules)
    // INPUT only sees traffic to this host: the nftables chain's "not local" guard is moot here.
    if ((!r.family || *r.family == f) && !r.nonlocal_dest) out.push_back(RenderRule(r, f));
  return out;
}

std::string JumpRule() { return std::string("-A INPUT -m comment --comment \"") + kJumpComment + "\" -j " + kChain; }

const char* JumpBase(int t) { return t == 0 ? "INPUT" : "PREROUTING"; }

std::string JumpRule(int t) {
  if (t == 0) return JumpRule();
  // mangle sees every packet: only new TCP connections to a local address are sent in. nat
  // PREROUTING only ever sees a connection's first packet.
  return std::string("-A PREROUTING -p tcp -m addrtype --dst-type LOCAL") +
         (t == 1 ? " -m conntrack --ctstate NEW" : "") + " -m comment --comment \"" + kJumpComment + "\" -j " + kChain;
}

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Replaces the rule's target ("-j DROP" ...) by `target`.
std::string WithTarget(const std::string& line, const std::string& target) {
  size_t j = line.rfind(" -j ");
  return line.substr(0, j) + " -j " + target;
}

}  // namespace

std::vector<std::string> PreroutingChainRules(const Ruleset& rs, Family f, int t, SourceMatch m) {
  // The closed ports this table handles: mangle the dropped ones, nat the rejected ones.
  std::set<uint16_t> ports;
  for (const auto& r : rs.rules)
    if (r.port && EndsWith(r.key, ":closed") && (r.verdict == Verdict::kDrop) == (t == 1)) ports.insert(r.port);
  std::vector<std::string> out;
  if (ports.empty() || t == 0) return out;
  for (const auto& r : rs.rules) {
    if (r.family && *r.family != f) continue;
    if (r.loopback) {
      out.push_back(RenderRule(r, f));
      continue;
    }
    if (!ports.count(r.port) || !r.meter_set.empty()) continue;  // rate limits stay in filter
    if (r.verdict == Verdict::kAccept && !r.saddr_set.empty()) {  // an allowlist: RETURN
      if (m == SourceMatch::kIpset) {
        out.push_back(RenderRule(r, f));
        continue;
      }
      const AddrSet* set = rs.FindSet(r.saddr_set);
      if (!set) continue;
      RuleSpec plain = r;
      plain.saddr_set.clear();
      std::string rest = RenderRule(plain, f).substr(std::string("-A ").size() + std::string(kChain).size());
      const char* full = f == Family::kV4 ? "/32" : "/128";
      for (const auto& iv : set->intervals)
        for (const auto& c : IntervalToCidrs(f, iv)) {
          std::string src = FormatCidr(c);
          if (src.find('/') == std::string::npos) src += full;
          out.push_back(std::string("-A ") + kChain + " -s " + src + rest);
        }
      continue;
    }
    if (EndsWith(r.key, ":closed")) {
      std::string line = RenderRule(r, f);
      out.push_back(t == 1 ? line : WithTarget(line, "ACCEPT"));
    }
  }
  return out;
}

OwnTable OwnOf(const SavedTable& table, int t) {
  OwnTable s;
  if (const SavedChain* c = table.Find(kChain)) {
    s.chain = true;
    s.rules = c->rules;
  }
  if (const SavedChain* base = table.Find(JumpBase(t)))
    for (const auto& line : base->rules) {
      auto w = Tokenize(line);
      for (size_t i = 0; i + 1 < w.size(); ++i)
        if ((w[i] == "-j" || w[i] == "-g") && w[i + 1] == kChain) s.jumps.push_back(line);
    }
  return s;
}

std::string RestoreScript(const OwnState& from, const OwnState& to, unsigned only) {
  std::string out;
  for (int t = 0; t < kTableCount; ++t) {
    const OwnTable& a = from.t[t];
    const OwnTable& b = to.t[t];
    if (a == b || !(only & (1u << t))) continue;
    out += std::string("*") + kTables[t] + "\n";
    bool rewrite = b.chain && (!a.chain || a.rules != b.rules);
    if (rewrite) {
      out += std::string(":") + kChain + " - [0:0]\n";
      for (const auto& r : b.rules) out += r + "\n";
    }
    // Jumps: remove the ones `to` does not have, add the missing ones at the top of the base.
    std::multiset<std::string> want(b.jumps.begin(), b.jumps.end());
    std::multiset<std::string> have(a.jumps.begin(), a.jumps.end());
    for (const auto& j : a.jumps) {
      auto it = want.find(j);
      if (it != want.end()) want.erase(it);
      else out += "-D" + j.substr(2) + "\n";
    }
    const std::string base = std::string("-A ") + JumpBase(t);
    for (const auto& j : b.jumps) {
      auto it = have.find(j);
      if (it != have.end()) have.erase(it);
      else out += "-I " + std::string(JumpBase(t)) + " 1" + j.substr(base.size()) + "\n";
    }
    if (!b.chain && a.chain) out += std::string("-F ") + kChain + "\n-X " + kChain + "\n";
    out += "COMMIT\n";
  }
  return out;
}

namespace {
/// The comment of a rule line ("mailward:143:closed"), or the line itself.
std::string RuleKey(const std::string& line) {
  auto w = Tokenize(line);
  for (size_t i = 0; i + 1 < w.size(); ++i)
    if (w[i] == "--comment") return w[i + 1];
  return line;
}
}  // namespace

void DescribeOwnChanges(const OwnTable& have, const OwnTable& want, int t, const std::string& label,
                        std::vector<Change>* out) {
  const std::string name = t == 0 ? label : label + " " + kTables[t];
  const std::string where = label + " " + kTables[t] + " " + kChain;
  const std::string base = JumpBase(t);
  if (want.chain && !have.chain) out->push_back({ChangeOp::kAdd, ChangeObject::kChain, where, "", 1, {}});
  if (!want.chain && have.chain) out->push_back({ChangeOp::kDelete, ChangeObject::kChain, where, "", 1, {}});
  if (want.chain && have.chain && want.rules != have.rules) {
    std::set<std::string> w(want.rules.begin(), want.rules.end()), h(have.rules.begin(), have.rules.end());
    bool any = false;
    for (const auto& r : want.rules)
      if (!h.count(r)) out->push_back({ChangeOp::kAdd, ChangeObject::kRule, name + " " + RuleKey(r), r.substr(3), 1, {}}), any = true;
    for (const auto& r : have.rules)
      if (!w.count(r)) out->push_back({ChangeOp::kDelete, ChangeObject::kRule, name + " " + RuleKey(r), r.substr(3), 1, {}}), any = true;
    if (!any) out->push_back({ChangeOp::kReplace, ChangeObject::kChain, where, "rules out of order", 1, {}});
  } else if (want.chain && !have.chain) {
    for (const auto& r : want.rules) out->push_back({ChangeOp::kAdd, ChangeObject::kRule, name + " " + RuleKey(r), r.substr(3), 1, {}});
  }
  if (want.jumps != have.jumps) {
    std::string j = name + " " + kJumpComment;
    if (!want.jumps.empty() && have.jumps.empty())
      out->push_back({ChangeOp::kAdd, ChangeObject::kRule, j, base + " position 1: jump to " + kChain, 1, {}});
    else if (want.jumps.empty())
      out->push_back({ChangeOp::kDelete, ChangeObject::kRule, j, base + ": jump to " + kChain, 1, {}});
    else
      out->push_back({ChangeOp::kReplace, ChangeObject::kRule, j,
                      std::to_string(have.jumps.size()) + " jump(s) to " + kChain + " in " + base + ", not mailward's one",
                      1, {}});
  }
}

bool IsOwnRuleLine(const std::string& line, int t) {
  (void)t;
  return line.rfind(std::string("-A ") + kChain + " ", 0) == 0 && line.find('\n') == std::string::npos;
}

bool IsOwnJumpLine(const std::string& line, int t) {
  if (t < 0 || t >= kTableCount || line.find('\n') != std::string::npos) return false;
  if (line.rfind(std::string("-A ") + JumpBase(t) + " ", 0) != 0) return false;
  auto w = Tokenize(line);
  return w.size() >= 2 && (w[w.size() - 2] == "-j" || w[w.size() - 2] == "-g") && w.back() == kChain;
}

std::map<std::string, SavedTable> ParseSaveAll(const std::string& text) {
  std::map<std::string, SavedTable> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '*') {
      std::string name = line.substr(1);
      if (!name.empty() && name.back() == '\r') name.pop_back();
      if (!out.count(name)) out[name] = ParseSave(text, name);
    }
  return out;
}

const SavedChain* SavedTable::Find(const std::string& name) const {
  for (const auto& c : chains)
    if (c.name == name) return &c;
  return nullptr;
}

SavedTable ParseSave(const std::string& text, const std::string& table) {
  SavedTable t;
  std::istringstream in(text);
  std::string line;
  bool inside = false;
  std::map<std::string, size_t> index;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '*') {
      inside = line.substr(1) == table;
      continue;
    }
    if (!inside) continue;
    if (line == "COMMIT") {
      inside = false;
      continue;
    }
    if (line[0] == ':') {
      auto words = Tokenize(line.substr(1));
      SavedChain c;
      c.name = words.empty() ? "" : words[0];
      c.policy = words.size() > 1 ? words[1] : "-";
      index[c.name] = t.chains.size();
      t.chains.push_back(std::move(c));
      continue;
    }
    if (line.rfind("-A ", 0) == 0) {
      size_t sp = line.find(' ', 3);
      std::string chain = line.substr(3, sp == std::string::npos ? std::string::npos : sp - 3);
      auto it = index.find(chain);
      if (it == index.end()) {
        index[chain] = t.chains.size();
        t.chains.push_back(SavedChain{chain, "-", {}});
        it = index.find(chain);
      }
      t.chains[it->second].rules.push_back(line);
    }
  }
  return t;
}

std::string StableText(const std::string& save_output) {
  std::string out;
  std::istringstream in(save_output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == ':') {
      size_t b = line.rfind(" [");
      if (b != std::string::npos) line.resize(b);
    } else if (line[0] == '[') {  // iptables-save -c counters before a rule
      size_t e = line.find("] ");
      if (e != std::string::npos) line = line.substr(e + 2);
    }
    out += line;
    out += '\n';
  }
  return out;
}

std::vector<std::string> Tokenize(const std::string& line) { return analysis::SplitIptablesWords(line); }

std::string CanonicalEntry(const std::string& entry) {
  Cidr c;
  std::string err;
  if (!ParseCidr(entry, &c, &err)) return "";
  return FormatCidr(c);
}

std::optional<IpsetSpec> ParseIpsetSave(const std::string& text) {
  std::optional<IpsetSpec> s;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    if (line.rfind("add ", 0) == 0 && s) {
      size_t a = line.find(' ', 4);
      if (a == std::string_view::npos) continue;
      std::string_view rest = line.substr(a + 1);
      size_t sp = rest.find(' ');  // options after the entry (timeouts...) are not ours
      std::string_view raw = rest.substr(0, sp);
      // ipset prints IPv4 in canonical form already: skip the parse for plain addresses (a
      // 100,000-entry set reads about twice as fast).
      bool plain_v4 = !raw.empty() && raw.size() <= 15 &&
                      raw.find_first_not_of("0123456789.") == std::string_view::npos;
      std::string e = plain_v4 ? std::string(raw) : CanonicalEntry(std::string(raw));
      if (!e.empty()) s->entries.push_back(std::move(e));
    } else if (line.rfind("create ", 0) == 0) {
      auto w = Tokenize(std::string(line));
      s.emplace();
      if (w.size() > 2) {
        s->name = w[1];
        s->type = w[2];
      }
      for (size_t i = 3; i + 1 < w.size(); ++i) {
        if (w[i] == "family") s->family = w[i + 1] == "inet6" ? Family::kV6 : Family::kV4;
        if (w[i] == "maxelem") s->maxelem = static_cast<uint32_t>(std::strtoul(w[i + 1].c_str(), nullptr, 10));
      }
    }
  }
  if (s) std::sort(s->entries.begin(), s->entries.end());
  return s;
}


}  // namespace mw::ipt
