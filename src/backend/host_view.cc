#include "backend/host_view.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/stat.h>
// After the libc headers (linux/in.h would clash with netinet/in.h otherwise).
#include <linux/netfilter.h>

#include <algorithm>
#include <cstring>
#include <regex>

#include "analysis/ipt_eval.h"
#include "backend/ipt/ipt_rules.h"
#include "util/fs.h"
#include "util/process.h"

namespace mw {

namespace {

bool ContainerBridgeName(const std::string& n) {
  static const std::regex kNames("^(docker[0-9]+|br-[0-9a-f]{12}|virbr[0-9]+|cni[0-9]+|podman[0-9]+|lxcbr[0-9]+|cilium_.*|flannel.*|kube-bridge)$");
  return std::regex_match(n, kNames);
}

}  // namespace

std::vector<analysis::Interface> ReadInterfaces() {
  std::vector<analysis::Interface> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  auto find = [&](const std::string& name) -> analysis::Interface& {
    for (auto& i : out)
      if (i.name == name) return i;
    analysis::Interface i;
    i.name = name;
    out.push_back(i);
    return out.back();
  };
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_name) continue;
    analysis::Interface& i = find(a->ifa_name);
    i.loopback = (a->ifa_flags & IFF_LOOPBACK) != 0;
    if (!a->ifa_addr) continue;
    Cidr c;
    if (a->ifa_addr->sa_family == AF_INET) {
      c.family = Family::kV4;
      std::memcpy(c.addr.b.data(), &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, 4);
      uint32_t mask = a->ifa_netmask ? ntohl(reinterpret_cast<sockaddr_in*>(a->ifa_netmask)->sin_addr.s_addr) : 0xffffffffu;
      c.prefix = static_cast<uint8_t>(__builtin_popcount(mask));
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      c.family = Family::kV6;
      std::memcpy(c.addr.b.data(), &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr, 16);
      int bits = 0;
      if (a->ifa_netmask) {
        auto* m = reinterpret_cast<sockaddr_in6*>(a->ifa_netmask)->sin6_addr.s6_addr;
        for (int k = 0; k < 16; ++k) bits += __builtin_popcount(m[k]);
      } else {
        bits = 128;
      }
      c.prefix = static_cast<uint8_t>(bits);
      if (c.addr.b[0] == 0xfe && (c.addr.b[1] & 0xc0) == 0x80) continue;  // link-local: not how mail arrives
    } else {
      continue;
    }
    i.addresses.push_back(c);
  }
  freeifaddrs(list);
  for (auto& i : out) {
    // A bridge port never receives routed traffic itself (its bridge does); a container bridge
    // carries containers' own traffic, not connections from the network.
    bool port = Exists("/sys/class/net/" + i.name + "/brport");
    i.container = port || ContainerBridgeName(i.name);
  }
  return out;
}

std::vector<analysis::PortClaim> ClaimsOf(const Policy& policy) {
  std::vector<analysis::PortClaim> out;
  for (const auto& p : policy.ports) {
    analysis::PortClaim c;
    c.port = p.port;
    c.service = KnownServicePort(p.name) == p.port ? p.name : "";
    c.open = p.state == PortState::kOpen;
    for (const auto& a : p.allow) {
      auto it = policy.allowlists.find(a);
      if (it == policy.allowlists.end()) continue;
      c.allowlists.push_back({a, it->second.entries});
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<Conflict> ToConflicts(const analysis::Judgement& j) {
  std::vector<Conflict> out;
  for (const auto& v : j.violations) {
    if (v.owner == "mailward" && v.kind != analysis::ConflictKind::kClosedPortReachable) continue;
    Conflict c;
    c.port = v.port;
    c.family = FamilyName(v.family);
    c.where = v.where;
    c.maybe = v.certainty == analysis::Tri::kMaybe;
    c.reason = v.reason;
    c.kind = v.kind;
    c.owner = v.owner;
    c.fix = v.fix;
    c.source = v.source;
    c.destination = v.destination;
    out.push_back(std::move(c));
  }
  return out;
}

Result<HostView> ReadHostView(const HostViewOptions& opts) {
  const BackendConfig real;
  const BackendConfig& cfg = opts.backend ? *opts.backend : real;
  sys::Env& env = *cfg.env;
  HostView hv;
  hv.interfaces = ReadInterfaces();
  for (int f = 0; f < 2; ++f) {
    auto v = env.ReadFile(f == 0 ? "/proc/sys/net/ipv4/ip_forward" : "/proc/sys/net/ipv6/conf/all/forwarding");
    if (v.ok()) hv.forwarding[f] = !v->empty() && (*v)[0] != '0';
  }
  // iptables: iptables-nft's tables (they live in nftables, as ip/ip6 tables named like
  // iptables' own) are read in iptables' terms; the legacy tables only when loaded here.
  std::set<std::pair<uint32_t, std::string>> iptables_nft_tables;
  std::string saves[2][2];  // [legacy][family]
  for (int legacy = 0; legacy < 2; ++legacy) {
    for (int f = 0; f < 2; ++f) {
      std::string prog = std::string(f == 0 ? "iptables" : "ip6tables") + (legacy ? "-legacy-save" : "-nft-save");
      if (legacy && !env.Exists(f == 0 ? "/proc/net/ip_tables_names" : "/proc/net/ip6_tables_names")) continue;
      if (legacy) {
        auto names = env.ReadFile(f == 0 ? "/proc/net/ip_tables_names" : "/proc/net/ip6_tables_names");
        if (!names.ok() || names->empty()) continue;
      }
      if (!env.HaveProgram(prog)) continue;
      ProcessResult r = env.Run({prog});
      if (!r.ok()) {
        hv.notes.push_back(prog + " failed: " + r.Message());
        continue;
      }
      saves[legacy][f] = r.out;
      if (!legacy)
        for (const char* t : {"filter", "nat", "mangle", "raw", "security"})
          if (r.out.find(std::string("\n*") + t + "\n") != std::string::npos || r.out.rfind(std::string("*") + t + "\n", 0) == 0)
            iptables_nft_tables.insert({f == 0 ? NFPROTO_IPV4 : NFPROTO_IPV6, t});
    }
  }
  // ipsets named by those rules.
  auto ipsets = std::make_shared<analysis::Ipsets>();
  std::set<std::string> wanted;
  static const std::regex kSet("--match-set ([^ ]+) ");
  for (auto& per : saves)
    for (auto& text : per)
      for (std::sregex_iterator it(text.begin(), text.end(), kSet), end; it != end; ++it) wanted.insert((*it)[1]);
  if (opts.desired_ipsets) {
    for (const auto& set : opts.desired_ipsets->sets) {
      if (!set.spec.is_allow()) continue;
      std::string name = ipt::IpsetName(set.spec.name);
      if (!wanted.erase(name)) continue;
      analysis::Ipsets::Set s;
      s.family = set.spec.family;
      s.type = set.spec.kind == SetSpec::Kind::kAllowHosts ? "hash:ip" : "hash:net";
      for (const auto& iv : set.intervals)
        for (const auto& c : IntervalToCidrs(set.spec.family, iv)) s.entries.push_back(c);
      ipsets->sets[name] = std::move(s);
    }
  }
  if (!wanted.empty() && env.HaveProgram("ipset")) {
    for (const auto& name : wanted) {
      ProcessResult r = env.Run({"ipset", "save", name});
      if (!r.ok()) continue;
      auto parsed = analysis::ParseIpsetSave(r.out);
      for (auto& [n, s] : parsed.sets) ipsets->sets[n] = std::move(s);
    }
  }
  for (int legacy = 0; legacy < 2; ++legacy)
    for (int f = 0; f < 2; ++f)
      if (!saves[legacy][f].empty())
        analysis::AddIptablesTables(saves[legacy][f], f == 0 ? Family::kV4 : Family::kV6, legacy == 1, ipsets, &hv.topo);
  hv.keep.push_back(ipsets);
  Status s = AddNftablesToTopology(cfg, opts.plan, opts.desired_nft, opts.read_own_elements, iptables_nft_tables, &hv.topo, &hv.keep);
  if (!s.ok()) {
    if (hv.topo.tables.empty()) return s;
    hv.notes.push_back("nftables could not be read: " + s.message());
  }
  return hv;
}

}  // namespace mw
