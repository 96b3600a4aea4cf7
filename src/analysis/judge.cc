#include "analysis/judge.h"

#include <algorithm>

namespace mw::analysis {

const char* ConflictKindName(ConflictKind k) {
  switch (k) {
    case ConflictKind::kOpenPortBlocked: return "open-port-blocked";
    case ConflictKind::kClosedPortReachable: return "closed-port-reachable";
    case ConflictKind::kAllowlistBlocked: return "allowlist-blocked";
  }
  return "?";
}

std::vector<Flow> CandidateFlows(const std::vector<Interface>& interfaces, Family f, uint16_t port,
                                 bool forwarding) {
  std::vector<Flow> out;
  std::optional<Addr> any_local;
  for (const auto& i : interfaces)
    for (const auto& a : i.addresses)
      if (a.family == f && !i.loopback && !any_local) any_local = a.addr;
  for (const auto& i : interfaces) {
    if (i.loopback || i.container) continue;
    Flow fl;
    fl.family = f;
    fl.dport = port;
    fl.iif = i.name;
    fl.interfaces = interfaces;
    fl.forwarding = forwarding;
    for (const auto& a : i.addresses)
      if (a.family == f) {
        fl.daddr = a.addr;
        break;
      }
    if (!fl.daddr) fl.daddr = any_local;
    if (!fl.daddr) continue;  // no address of this family on the host: nothing reaches it
    out.push_back(std::move(fl));
  }
  if (out.empty()) {
    Flow fl;
    fl.family = f;
    fl.dport = port;
    fl.interfaces = interfaces;
    fl.forwarding = forwarding;
    fl.daddr = any_local;
    out.push_back(std::move(fl));
  }
  return out;
}

namespace {

bool StartsWith(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

std::string ZoneOf(const std::string& chain) {
  // firewalld: filter_IN_<zone>, filter_IN_<zone>_allow/_deny/_log/_pre/_post, nat_PRE_<zone>...
  for (const char* p : {"filter_IN_", "filter_FWD_", "nat_PRE_", "mangle_PRE_", "raw_PRE_", "filter_FWDI_"}) {
    if (!StartsWith(chain, p)) continue;
    std::string z = chain.substr(std::string(p).size());
    for (const char* suf : {"_allow", "_deny", "_log", "_pre", "_post"}) {
      std::string s = suf;
      if (z.size() > s.size() && z.compare(z.size() - s.size(), s.size(), s) == 0) z.resize(z.size() - s.size());
    }
    return z;
  }
  return "";
}

bool IsFirewalld(const std::string& table) {
  return table == "table inet firewalld" || table == "table ip firewalld" || table == "table ip6 firewalld";
}

}  // namespace

std::string OwnerOf(const Step& step, const std::vector<Step>& path) {
  if (IsFirewalld(step.table)) {
    // The deepest zone chain on the path names the zone.
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      if (!IsFirewalld(it->table)) continue;
      std::string z = ZoneOf(it->chain);
      if (!z.empty()) return "firewalld zone " + z;
    }
    std::string z = ZoneOf(step.chain);
    return z.empty() ? "firewalld" : "firewalld zone " + z;
  }
  if (step.table == "table inet mailward" || step.chain == "MAILWARD" || StartsWith(step.chain, "MAILWARD"))
    return "mailward";
  if (StartsWith(step.chain, "f2b-") || step.table.find("f2b-table") != std::string::npos) {
    // iptables: a chain per jail (f2b-dovecot); nftables: one f2b-chain, a set per jail.
    std::string jail = StartsWith(step.chain, "f2b-") && step.chain != "f2b-chain" ? step.chain.substr(4) : "";
    size_t at = step.rule.find("addr-set-");
    if (jail.empty() && at != std::string::npos) {
      jail = step.rule.substr(at + 9);
      jail = jail.substr(0, jail.find_first_of(" }"));
    }
    return jail.empty() ? "fail2ban" : "fail2ban jail " + jail;
  }
  if (StartsWith(step.chain, "ufw-") || StartsWith(step.chain, "ufw6-")) return "UFW";
  if (StartsWith(step.chain, "DOCKER") || step.rule.find("DOCKER") != std::string::npos) return "Docker";
  // A chain policy decided it: the tool whose chains the path went through manages that chain.
  for (const auto& s : path)
    if (StartsWith(s.chain, "ufw-") || StartsWith(s.chain, "ufw6-") || StartsWith(s.action, "jump ufw") ||
        StartsWith(s.action, "goto ufw"))
      return "UFW";
  return step.table;
}

namespace {

std::string ServiceOrPort(const PortClaim& c) {
  static const char* kFirewalldServices[] = {"imap", "imaps", "pop3", "pop3s", "smtp", "smtps", "smtp-submission",
                                             "managesieve"};
  for (const char* s : kFirewalldServices)
    if (c.service == s) return std::string("--add-service=") + s;
  return "--add-port=" + std::to_string(c.port) + "/tcp";
}

std::string NftFamilyWord(Family f) { return f == Family::kV4 ? "ip" : "ip6"; }

std::string FixFor(ConflictKind kind, const std::string& owner, const Step& step, const PortClaim& c, Family f,
                   const std::string& source) {
  std::string port = std::to_string(c.port);
  if (kind == ConflictKind::kClosedPortReachable) {
    if (owner == "Docker")
      return "mailward apply (mailward's rules guard the DNAT path), or publish the container on loopback only: "
             "docker run -p 127.0.0.1:" + port + ":" + port + " ...";
    return "mailward apply";
  }
  if (StartsWith(owner, "firewalld zone ")) {
    std::string zone = owner.substr(15);
    if (kind == ConflictKind::kOpenPortBlocked)
      return "firewall-cmd --permanent --zone=" + zone + " " + ServiceOrPort(c) + " && firewall-cmd --reload";
    return "firewall-cmd --permanent --zone=" + zone + " --add-rich-rule='rule family=" +
           (f == Family::kV4 ? "ipv4" : "ipv6") + " source address=" + source + " port port=" + port +
           " protocol=tcp accept' && firewall-cmd --reload";
  }
  if (owner == "UFW") {
    if (kind == ConflictKind::kOpenPortBlocked) return "ufw allow " + port + "/tcp";
    return "ufw allow from " + source + " to any port " + port + " proto tcp";
  }
  if (StartsWith(owner, "fail2ban")) {
    std::string jail = StartsWith(owner, "fail2ban jail ") ? owner.substr(14) : "JAIL";
    return "fail2ban-client set " + jail + " unbanip " + (source.empty() ? "ADDRESS" : source) +
           " (and add it to ignoreip in jail.local)";
  }
  if (step.table.rfind("table ", 0) == 0) {
    // table <family> <name>: an accept at the top of the deciding chain.
    std::string t = step.table.substr(6);
    std::string match = kind == ConflictKind::kAllowlistBlocked ? NftFamilyWord(f) + " saddr " + source + " " : "";
    return "nft insert rule " + t + " " + step.chain + " " + match + "tcp dport " + port + " accept";
  }
  // The tool of the table's own ruleset: on a host with both, `iptables` is one of the two.
  std::string tool = step.table.substr(0, step.table.find(' '));  // iptables, ip6tables-legacy...
  std::string table = step.table.substr(step.table.find(' ') + 1);
  std::string src = kind == ConflictKind::kAllowlistBlocked ? " -s " + source : "";
  return tool + (table == "filter" ? "" : " -t " + table) + " -I " + step.chain + src + " -p tcp --dport " + port +
         " -j ACCEPT";
}

std::string PathText(const std::vector<Step>& path) {
  std::string out;
  for (const auto& s : path) {
    if (!out.empty()) out += " -> ";
    out += s.table + " " + s.chain + ": " + s.action;
  }
  return out;
}

void Add(Judgement* j, Violation v);

/// One violation per rule that blocks (each owner is told), else one for the path.
void AddEach(Judgement* j, ConflictKind kind, const PortClaim& c, Family f, const Verdict& v,
             const std::string& source_text, const std::string& source_addr);

void Add(Judgement* j, Violation v) {
  for (const auto& x : j->violations)
    if (x.kind == v.kind && x.port == v.port && x.family == v.family && x.owner == v.owner && x.where == v.where &&
        x.source == v.source)
      return;
  j->violations.push_back(std::move(v));
}

Violation Make(ConflictKind kind, const PortClaim& c, Family f, const Verdict& v, const std::string& source_text,
               const std::string& source_addr) {
  Violation out;
  out.kind = kind;
  out.port = c.port;
  out.family = f;
  out.certainty = v.reach == Reach::kMaybeBlocked ? Tri::kMaybe : Tri::kYes;
  out.source = source_text;
  out.destination = v.destination;
  Step step = v.decided_by.value_or(v.path.empty() ? Step{} : v.path.back());
  if (kind == ConflictKind::kClosedPortReachable) {
    // Nothing blocks it: the owner is who made the path (a DNAT), else mailward's missing rules.
    out.owner = "mailward";
    out.where = "input path of this host";
    for (const auto& s : v.path)
      if (s.action.rfind("dnat", 0) == 0) {
        out.owner = OwnerOf(s, v.path);
        step = s;
        out.where = s.table + " chain " + s.chain;
      }
    out.reason = "a new connection from an ordinary source reaches " + v.destination +
                 (v.path.empty() ? "" : " (" + PathText(v.path) + ")");
  } else {
    out.owner = OwnerOf(step, v.path);
    out.where = step.table + " chain " + step.chain;
    out.reason = (step.rule == "policy drop" ? "the chain's policy drop" : step.rule) +
                 (out.certainty == Tri::kMaybe ? " may drop it (on some paths mailward cannot decide)" : " drops it");
  }
  out.fix = FixFor(kind, out.owner, step, c, f, source_addr);
  return out;
}

void AddEach(Judgement* j, ConflictKind kind, const PortClaim& c, Family f, const Verdict& v,
             const std::string& source_text, const std::string& source_addr) {
  if (v.blockers.size() <= 1) {
    Add(j, Make(kind, c, f, v, source_text, source_addr));
    return;
  }
  for (const auto& b : v.blockers) {
    Verdict one = v;
    one.decided_by = b;
    Add(j, Make(kind, c, f, one, source_text, source_addr));
  }
}

/// A few addresses of an allowlist of one family to try: each entry's first address, at most 4.
std::vector<Addr> Samples(const PortClaim::List& l, Family f) {
  std::vector<Addr> out;
  for (const auto& c : l.entries) {
    if (c.family != f) continue;
    Addr a = c.addr;
    bool full = c.prefix == (f == Family::kV4 ? 32 : 128);
    if (!full && f == Family::kV4 && c.prefix <= 30) a.b[3] |= 1;  // a host, not the network address
    if (!full && f == Family::kV6 && c.prefix <= 126) a.b[15] |= 1;
    out.push_back(a);
    if (out.size() == 4) break;
  }
  return out;
}

}  // namespace

Judgement Judge(const Topology& topo, const std::vector<Interface>& interfaces, const std::vector<PortClaim>& claims,
                const bool forwarding[2]) {
  Judgement j;
  for (const auto& c : claims) {
    for (Family f : {Family::kV4, Family::kV6}) {
      bool fwd = forwarding ? forwarding[f == Family::kV4 ? 0 : 1] : true;
      for (const Flow& base : CandidateFlows(interfaces, f, c.port, fwd)) {
        WalkOptions all;
        all.all_blockers = true;
        Verdict v = Walk(topo, base, all);
        for (const auto& r : v.restrictions) {
          SourceRestriction sr{c.port, f, OwnerOf({r.table, r.chain, r.rule, "", Tri::kYes}, {}), r.table + " chain " + r.chain, r.rule};
          bool dup = false;
          for (const auto& x : j.restrictions) dup |= x.port == sr.port && x.family == sr.family && x.rule == sr.rule;
          if (!dup) j.restrictions.push_back(sr);
        }
        if (c.open && v.reach != Reach::kReaches) AddEach(&j, ConflictKind::kOpenPortBlocked, c, f, v, "", "");
        if (!c.open && v.reach != Reach::kBlocked) {
          Violation x = Make(ConflictKind::kClosedPortReachable, c, f, v, "", "");
          if (v.reach == Reach::kMaybeBlocked) x.certainty = Tri::kMaybe;
          Add(&j, x);
        }
        if (c.open) continue;
        for (const auto& l : c.allowlists)
          for (const Addr& a : Samples(l, f)) {
            Flow fl = base;
            fl.saddr = a;
            Verdict va = Walk(topo, fl, all);
            if (va.reach == Reach::kReaches) continue;
            std::string addr = FormatAddr(f, a);
            AddEach(&j, ConflictKind::kAllowlistBlocked, c, f, va, l.name + " (" + addr + ")", addr);
          }
      }
    }
  }
  return j;
}

}  // namespace mw::analysis
