// backend/: which backend a command uses. `auto` follows the host (UFW active: UFW; firewalld
// running: nftables, its own table; nftables usable: nftables; else iptables); a named backend
// is taken as asked, with notes and "two firewall managers" fights when another manager would
// work against it. Reads the host through sys::Env; the netlink probe and the constructors are
// seams too (unit tests: tests/select_test.cc).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "policy/policy.h"
#include "sys/env.h"
#include "util/status.h"

namespace mw {

/// The closed set of backends, by name ("nftables", "iptables", "ufw").
enum class BackendId { kNftables, kIptables, kUfw };
const char* BackendIdName(BackendId id);

struct SelectSeams {
  sys::Env* env = &sys::RealEnv();
  /// Whether nftables answers over netlink here (a generation can be read).
  std::function<bool()> nftables_usable;
  /// Makes a backend (default: MakeNftablesBackend, MakeIptablesBackend, MakeUfwBackend).
  std::function<std::unique_ptr<Backend>(BackendId, const BackendConfig&)> make;
};
/// The real seams, with every function set.
SelectSeams RealSelectSeams();

/// Whether UFW is installed and enabled (/etc/ufw/ufw.conf ENABLED=yes).
bool UfwActive(sys::Env& env = sys::RealEnv());
/// Whether a process named `name` runs in this network namespace (a firewalld in a container
/// or another namespace manages that namespace's firewall, not this one).
bool ProcessRunning(const std::string& name, sys::Env& env = sys::RealEnv());
/// Whether nftables answers over netlink here.
bool NftablesUsable();

struct Chosen {
  std::unique_ptr<Backend> backend;
  std::string reason;
  std::vector<std::string> notes;
  /// Another firewall manager that would fight the chosen backend over the host: reported by
  /// plan and check, and apply refuses it without --force.
  std::vector<std::string> fights;
};

/// The backend for a command: `flag` (--backend; "" for the policy's choice) or the policy's
/// `policy_backend`. Code::kInvalidPolicy for an unknown name.
Result<Chosen> ChooseBackend(const std::string& flag, BackendKind policy_backend, const std::string& state_dir,
                             const SelectSeams& seams = RealSelectSeams());

/// The backends `remove` looks at, in the order it removes from: the one named by `want`, or
/// with "auto" every one usable here, UFW first (its mangle and nat chains are the iptables
/// backend's too), then iptables, then nftables.
std::vector<std::unique_ptr<Backend>> RemoveBackends(const std::string& want, const std::string& state_dir,
                                                     const SelectSeams& seams = RealSelectSeams());

}  // namespace mw
