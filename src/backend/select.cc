#include "backend/select.h"

#include "backend/nft/nft_netlink.h"

#include <optional>

namespace mw {

const char* BackendIdName(BackendId id) {
  switch (id) {
    case BackendId::kNftables: return "nftables";
    case BackendId::kIptables: return "iptables";
    case BackendId::kUfw: return "ufw";
  }
  return "?";
}

SelectSeams RealSelectSeams() {
  SelectSeams s;
  s.nftables_usable = NftablesUsable;
  s.make = [](BackendId id, const BackendConfig& cfg) -> std::unique_ptr<Backend> {
    switch (id) {
      case BackendId::kNftables: return MakeNftablesBackend(cfg);
      case BackendId::kIptables: return MakeIptablesBackend(cfg);
      case BackendId::kUfw: return MakeUfwBackend(cfg);
    }
    return nullptr;
  };
  return s;
}

bool UfwActive(sys::Env& env) {
  auto conf = env.ReadFile("/etc/ufw/ufw.conf");
  if (!conf.ok() || !env.HaveProgram("ufw")) return false;
  std::string text = "\n" + *conf;
  return text.find("\nENABLED=yes") != std::string::npos;
}

bool ProcessRunning(const std::string& name, sys::Env& env) {
  const auto self_ns = env.ReadLink("/proc/self/ns/net");
  for (const auto& pid : env.ListEntries("/proc")) {
    if (pid.empty() || pid[0] < '0' || pid[0] > '9') continue;
    auto comm = env.ReadFile("/proc/" + pid + "/comm");
    if (!comm.ok() || (*comm != name + "\n" && *comm != name)) continue;
    const auto ns = env.ReadLink("/proc/" + pid + "/ns/net");
    if (self_ns && ns && *ns != *self_ns) continue;
    return true;
  }
  return false;
}

bool NftablesUsable() {
  auto sock = nft::Socket::Open();
  return sock.ok() && (*sock)->GetGeneration().ok();
}

Result<Chosen> ChooseBackend(const std::string& flag, BackendKind policy_backend, const std::string& state_dir,
                             const SelectSeams& seams) {
  Chosen c;
  const std::string want = flag.empty() ? BackendName(policy_backend) : flag;
  const std::string source = flag.empty() ? "the policy" : "--backend";
  BackendConfig cfg{state_dir};
  cfg.env = seams.env;
  const bool ufw = UfwActive(*seams.env);
  // Looked for only where it changes the choice or is reported: it reads every process's name.
  std::optional<bool> firewalld_seen;
  auto firewalld_runs = [&] {
    if (!firewalld_seen) firewalld_seen = ProcessRunning("firewalld", *seams.env);
    return *firewalld_seen;
  };
  if (want == "auto") {
    if (ufw) {
      c.backend = seams.make(BackendId::kUfw, cfg);
      c.reason = "auto: UFW is active, so mailward's rules go through UFW";
    } else if (firewalld_runs()) {
      c.backend = seams.make(BackendId::kNftables, cfg);
      c.reason = "auto: firewalld is running; mailward keeps to its own nftables table inet mailward";
      c.notes.push_back("firewalld runs: it does not touch table inet mailward, and its own zones still apply "
                        "(see the conflicts for anything they block)");
    } else if (seams.nftables_usable()) {
      c.backend = seams.make(BackendId::kNftables, cfg);
      c.reason = "auto: nftables is available";
    } else {
      c.backend = seams.make(BackendId::kIptables, cfg);
      c.reason = "auto: nftables is not available here, iptables is";
    }
    return c;
  }
  if (want == "nftables") {
    c.backend = seams.make(BackendId::kNftables, cfg);
    c.reason = "nftables, as " + source + " says";
    if (ufw) c.notes.push_back("UFW is active too: its rules still apply beside table inet mailward; backend: ufw (or auto) would keep mailward's rules inside UFW");
  } else if (want == "iptables") {
    c.backend = seams.make(BackendId::kIptables, cfg);
    c.reason = "iptables, as " + source + " says";
    if (ufw)
      c.fights.push_back("UFW is active and manages the same iptables INPUT chain; use backend: ufw (or auto) "
                         "so the two do not fight over it");
    if (firewalld_runs())
      c.fights.push_back("firewalld is running and rebuilds the firewall on every reload; use backend: nftables "
                         "(or auto), which keeps to its own table");
  } else if (want == "ufw") {
    c.backend = seams.make(BackendId::kUfw, cfg);
    c.reason = "ufw, as " + source + " says";
    if (firewalld_runs())
      c.fights.push_back("firewalld is running beside UFW: two firewall managers on one host; stop one of them");
  } else {
    return Status::Invalid("unknown backend '" + want + "' (expected auto, nftables, iptables or ufw)");
  }
  return c;
}

std::vector<std::unique_ptr<Backend>> RemoveBackends(const std::string& want, const std::string& state_dir,
                                                     const SelectSeams& seams) {
  BackendConfig cfg{state_dir};
  cfg.env = seams.env;
  sys::Env& env = *seams.env;
  std::vector<std::unique_ptr<Backend>> out;
  if (want == "ufw" || (want == "auto" && env.HaveProgram("ufw"))) out.push_back(seams.make(BackendId::kUfw, cfg));
  if (want == "iptables" || (want == "auto" && (env.HaveProgram("iptables-save") || env.HaveProgram("iptables-legacy-save"))))
    out.push_back(seams.make(BackendId::kIptables, cfg));
  if (want == "nftables" || (want == "auto" && seams.nftables_usable())) out.push_back(seams.make(BackendId::kNftables, cfg));
  return out;
}

}  // namespace mw
