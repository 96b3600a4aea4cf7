#include "cli/commands.h"

#include "analysis/judge.h"
#include "backend/host_view.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <optional>
#include <cstring>
#include <cstdio>
#include <iostream>
#include <thread>

#include "backend/backend.h"
#include "backend/nft_netlink.h"
#include "util/process.h"
#include "cli/audit_cmd.h"
#include "cli/probe_cmd.h"
#include "cli/safety.h"
#include "cli/snapshots.h"
#include "model/ruleset.h"
#include "policy/policy.h"
#include "report/metrics.h"
#include "report/report.h"
#include "util/fs.h"
#include "util/timing.h"

namespace mw {
namespace {

using json = nlohmann::json;

bool Json(const GlobalOptions& g) { return g.format == "json"; }

const char* CodeName(Code c) {
  switch (c) {
    case Code::kOk: return "ok";
    case Code::kInvalidPolicy: return "invalid_policy";
    case Code::kIo: return "io";
    case Code::kNetlink: return "netlink";
    case Code::kFirewall: return "firewall";
    case Code::kGenerationMoved: return "ruleset_changed";
    case Code::kBusy: return "busy";
    case Code::kVerifyFailed: return "verify_failed";
    case Code::kRefused: return "refused";
    case Code::kNotFound: return "not_found";
    case Code::kInternal: return "internal";
    case Code::kUsage: return "usage";
  }
  return "?";
}

struct Loaded {
  Policy policy;
  Ruleset desired;
};

Result<Loaded> Load(const GlobalOptions& g) {
  Phase phase("load policy");
  auto files = PolicyFiles(g.policy);
  if (!files.ok()) return files.status();
  auto policy = [&] {
    Phase p("parse policy");
    return LoadPolicy(*files);
  }();
  if (!policy.ok()) return policy.status();
  Loaded l{std::move(policy.value()), {}};
  Phase b("build ruleset");
  l.desired = BuildRuleset(l.policy);
  return l;
}

struct Chosen {
  std::unique_ptr<Backend> backend;
  std::string reason;
  std::vector<std::string> notes;
  /// Another firewall manager that would fight the chosen backend over the host: reported by
  /// plan and check, and apply refuses it without --force.
  std::vector<std::string> fights;
};

bool UfwActive() {
  auto conf = ReadFile("/etc/ufw/ufw.conf");
  if (!conf.ok() || !HaveProgram("ufw")) return false;
  std::string text = "\n" + *conf;
  return text.find("\nENABLED=yes") != std::string::npos;
}

/// Whether a process named `name` runs in this network namespace (a firewalld in a container
/// or another namespace manages that namespace's firewall, not this one).
bool ProcessRunning(const std::string& name) {
  DIR* d = opendir("/proc");
  if (!d) return false;
  bool found = false;
  char self_ns[64] = {};
  ssize_t self_len = readlink("/proc/self/ns/net", self_ns, sizeof self_ns - 1);
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    auto comm = ReadFile(std::string("/proc/") + e->d_name + "/comm");
    if (comm.ok() && (*comm == name + "\n" || *comm == name)) {
      char ns[64] = {};
      ssize_t len = readlink((std::string("/proc/") + e->d_name + "/ns/net").c_str(), ns, sizeof ns - 1);
      if (self_len > 0 && len > 0 && std::string(ns, len) != std::string(self_ns, self_len)) continue;
      found = true;
      break;
    }
  }
  closedir(d);
  return found;
}

bool NftablesUsable() {
  auto sock = nft::Socket::Open();
  return sock.ok() && (*sock)->GetGeneration().ok();
}

Result<Chosen> ChooseBackend(const GlobalOptions& g, const Policy& p) {
  Chosen c;
  std::string want = g.backend.empty() ? BackendName(p.backend) : g.backend;
  std::string source = g.backend.empty() ? "the policy" : "--backend";
  BackendConfig cfg{g.state_dir};
  const bool ufw = UfwActive();
  const bool firewalld = ProcessRunning("firewalld");
  if (want == "auto") {
    if (ufw) {
      c.backend = MakeUfwBackend(cfg);
      c.reason = "auto: UFW is active, so mailward's rules go through UFW";
    } else if (firewalld) {
      c.backend = MakeNftablesBackend(cfg);
      c.reason = "auto: firewalld is running; mailward keeps to its own nftables table inet mailward";
      c.notes.push_back("firewalld runs: it does not touch table inet mailward, and its own zones still apply "
                        "(see the conflicts for anything they block)");
    } else if (NftablesUsable()) {
      c.backend = MakeNftablesBackend(cfg);
      c.reason = "auto: nftables is available";
    } else {
      c.backend = MakeIptablesBackend(cfg);
      c.reason = "auto: nftables is not available here, iptables is";
    }
    return c;
  }
  if (want == "nftables") {
    c.backend = MakeNftablesBackend(cfg);
    c.reason = "nftables, as " + source + " says";
    if (ufw) c.notes.push_back("UFW is active too: its rules still apply beside table inet mailward; backend: ufw (or auto) would keep mailward's rules inside UFW");
  } else if (want == "iptables") {
    c.backend = MakeIptablesBackend(cfg);
    c.reason = "iptables, as " + source + " says";
    if (ufw)
      c.fights.push_back("UFW is active and manages the same iptables INPUT chain; use backend: ufw (or auto) "
                         "so the two do not fight over it");
    if (firewalld)
      c.fights.push_back("firewalld is running and rebuilds the firewall on every reload; use backend: nftables "
                         "(or auto), which keeps to its own table");
  } else if (want == "ufw") {
    c.backend = MakeUfwBackend(cfg);
    c.reason = "ufw, as " + source + " says";
    if (firewalld)
      c.fights.push_back("firewalld is running beside UFW: two firewall managers on one host; stop one of them");
  } else {
    return Status::Invalid("unknown backend '" + want + "' (expected auto, nftables, iptables or ufw)");
  }
  return c;
}

/// mailward's own files in the state directory are regular files (snapshots/ a directory) or
/// absent: a symlink or a FIFO planted at one would make root write, append or read elsewhere.
Status CheckStateEntries(const std::string& dir) {
  auto bad = [&](const std::string& p, const char* what) {
    return Status::Error(Code::kRefused, p + " is " + what + ", not a file mailward wrote: mailward never follows links "
                                         "in its state directory; remove it (rm " + p + ") and run again");
  };
  auto check = [&](const std::string& p, bool want_dir) -> Status {
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) return Status::Ok();
    if (S_ISLNK(st.st_mode)) return bad(p, "a symlink");
    if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
      return bad(p, want_dir ? "not a directory" : "not a regular file");
    return Status::Ok();
  };
  for (const char* name : {"lock", "confirm.log", "pending-confirm", "nft-elements.cache"})
    MW_RETURN_IF_ERROR(check(dir + "/" + name, false));
  std::string snaps = dir + "/snapshots";
  MW_RETURN_IF_ERROR(check(snaps, true));
  if (DIR* d = opendir(snaps.c_str())) {
    Status s;
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      s = check(snaps + "/" + n, false);
      if (!s.ok()) break;
    }
    closedir(d);
    MW_RETURN_IF_ERROR(s);
  }
  return Status::Ok();
}

/// An exclusive lock on the state directory; waits up to `timeout` seconds.
class Lock {
 public:
  ~Lock() {
    if (fd_ >= 0) close(fd_);
  }
  Status Acquire(const std::string& dir, double timeout) {
    if (!std::isfinite(timeout) || timeout < 0)
      return Status::Error(Code::kRefused, "--lock-timeout must be a number of seconds from 0 to 86400");
    MW_RETURN_IF_ERROR(MakeDirs(dir));
    // Root writes snapshots, the lock and logs here: a directory others can change is refused.
    MW_RETURN_IF_ERROR(CheckTrusted(dir, TrustedKind::kStateDir));
    MW_RETURN_IF_ERROR(CheckStateEntries(dir));
    std::string path = dir + "/lock";
    fd_ = OpenStateFile(path, O_RDWR | O_CREAT);
    if (fd_ < 0)
      return Status::Io(path + ": cannot open the lock file: " + std::strerror(errno) +
                        (errno == ELOOP || errno == EINVAL ? " (not a regular file: remove it)" : ""));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
    while (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (std::chrono::steady_clock::now() >= deadline)
        return Status::Error(Code::kBusy, "another mailward is applying (lock " + path + " held for more than " +
                                              std::to_string(static_cast<int>(timeout)) + " s); nothing was applied");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return Status::Ok();
  }

 private:
  int fd_ = -1;
};

/// Judges every packet path of the live firewall (analysis/) against the policy and puts the
/// conflicts and source restrictions into `plan`. `as_planned`: judge mailward's nftables table
/// as the plan will leave it (plan), not as it is (check).
void JudgePaths(const Loaded& l, const Chosen& c, bool as_planned, BackendPlan* plan) {
  HostViewOptions hopts;
  if (as_planned && c.backend->name() == "nftables") hopts.desired_nft = &l.desired;
  hopts.plan = plan;
  hopts.read_own_elements = false;  // the nftables backend's plan has them; other backends own none
  hopts.desired_ipsets = &l.desired;
  auto hv = ReadHostView(hopts);
  if (!hv.ok()) {
    plan->notes.push_back("the packet paths could not be judged: " + hv.status().message());
    return;
  }
  for (const auto& n : hv->notes) plan->notes.push_back(n);
  analysis::Judgement j = analysis::Judge(hv->topo, hv->interfaces, ClaimsOf(l.policy), hv->forwarding);
  // The backend's own conflicts (UFW switched off...) stay; the engine's are added, except where
  // the backend already said the same thing about the same port.
  // Only the backend's own are compared: the engine reports every owner blocking one path.
  const size_t own = plan->conflicts.size();
  for (auto& x : ToConflicts(j)) {
    bool dup = false;
    for (size_t i = 0; i < own; ++i) {
      const Conflict& b = plan->conflicts[i];
      dup |= b.port == x.port && b.family == x.family && b.kind == x.kind;
    }
    if (!dup) plan->conflicts.push_back(std::move(x));
  }
  if (as_planned && !plan->in_sync()) {
    // What mailward's own pending changes repair is the plan itself, not a conflict.
    std::erase_if(plan->conflicts, [](const Conflict& x) { return x.owner == "mailward"; });
  }
  for (const auto& r : j.restrictions) plan->restrictions.push_back({r.port, FamilyName(r.family), r.owner, r.where, r.rule});
}

json PlanJson(const std::string& command, const Chosen& c, const BackendPlan& plan) {
  json changes = json::array(), conflicts = json::array();
  for (const auto& ch : plan.changes) changes.push_back(ChangeToJson(ch));
  for (const auto& cf : plan.conflicts) conflicts.push_back(ConflictToJson(cf));
  json restrictions = json::array();
  for (const auto& r : plan.restrictions)
    restrictions.push_back({{"port", r.port}, {"family", r.family}, {"owner", r.owner}, {"where", r.where}, {"rule", r.rule}});
  json notes = c.notes;
  for (const auto& n : plan.notes) notes.push_back(n);
  return Utf8Safe({{"command", command},
          {"backend", c.backend->name()},
          {"backend_reason", c.reason},
          {"in_sync", plan.in_sync()},
          {"generation", plan.generation},
          {"changes", changes},
          {"conflicts", conflicts},
          {"source_restrictions", restrictions},
          {"manager_conflicts", c.fights},
          {"notes", notes}});
}

void PrintPlanText(const GlobalOptions& g, const Chosen& c, const BackendPlan& plan, const std::string& verb) {
  if (g.quiet) return;
  bool color = UseColor();
  std::cout << "backend: " << c.backend->name() << " (" << c.reason << ")\n";
  for (const auto& n : c.notes) std::cout << "note: " << n << "\n";
  for (const auto& n : plan.notes) std::cout << "note: " << n << "\n";
  for (const auto& f : c.fights)
    std::cout << (color ? "\033[1;31m" : "") << "two firewall managers: " << f << (color ? "\033[0m" : "") << "\n";
  if (plan.in_sync()) {
    std::cout << "in sync: nothing to change\n";
  } else {
    std::cout << verb << " " << plan.changes.size() << (plan.changes.size() == 1 ? " change" : " changes") << ":\n";
    std::cout << PlanText(plan.changes, color, g.verbose);
  }
  if (!plan.conflicts.empty()) {
    std::cout << "conflicts: the firewall does not do what the policy says on these paths:\n";
    std::cout << ConflictsText(plan.conflicts, color);
  }
  if (!plan.restrictions.empty() && g.verbose) {
    std::cout << "source restrictions (rules that block only some sources; not conflicts):\n";
    for (const auto& r : plan.restrictions)
      std::cout << "  " << r.port << "/" << r.family << "  " << r.owner << ": " << r.where << ": " << r.rule << "\n";
  }
}

PlanOptions MakePlanOptions(const GlobalOptions& g) {
  PlanOptions o;
  o.max_items = g.verbose ? 0 : 20;
  return o;
}

}  // namespace

int ReportError(const GlobalOptions& g, const std::string& command, const Status& s, int code) {
  if (Json(g)) {
    json j = {{"command", command}, {"error", {{"kind", CodeName(s.code())}, {"message", s.message()}}}};
    std::cout << DumpJson(j) << "\n";
  }
  // Under systemd (JOURNAL_STREAM set) a "<3>" prefix gives the journal the error priority.
  std::cerr << (std::getenv("JOURNAL_STREAM") ? "<3>" : "") << "mailward " << command << ": error: " << s.message() << "\n";
  if (s.code() == Code::kInvalidPolicy && command != "validate")
    std::cerr << "nothing was applied: the firewall is unchanged\n";
  return code;
}

int CmdValidate(const GlobalOptions& g) {
  auto l = Load(g);
  if (!l.ok()) {
    if (Json(g)) {
      json errors = json::array();
      std::string m = l.status().message();
      size_t pos = 0;
      while (pos <= m.size()) {
        size_t nl = m.find('\n', pos);
        if (nl == std::string::npos) nl = m.size();
        errors.push_back(m.substr(pos, nl - pos));
        pos = nl + 1;
      }
      std::cout << DumpJson(json{{"command", "validate"}, {"valid", false}, {"errors", errors}}) << "\n";
    }
    std::cerr << l.status().message() << "\n";
    return exit_code::kError;
  }
  if (Json(g)) {
    json j = PolicySummaryJson(l->policy);
    j["command"] = "validate";
    j["valid"] = true;
    std::cout << DumpJson(j) << "\n";
  } else if (!g.quiet) {
    std::cout << "valid: " << l->policy.files.size() << (l->policy.files.size() == 1 ? " file, " : " files, ")
              << l->policy.ports.size() << " ports, " << l->policy.allowlists.size() << " allowlists\n";
    for (const auto& p : l->policy.ports) {
      std::cout << "  " << p.name << " " << p.port << "/tcp " << (p.state == PortState::kOpen ? "open" : "closed");
      if (!p.allow.empty()) {
        std::cout << " allow";
        for (const auto& a : p.allow) std::cout << " " << a;
      }
      if (p.rate_limit) std::cout << " rate_limit " << p.rate_limit->text;
      std::cout << "\n";
    }
  }
  return exit_code::kOk;
}

int CmdPlan(const GlobalOptions& g) {
  auto l = Load(g);
  if (!l.ok()) return ReportError(g, "plan", l.status());
  auto c = ChooseBackend(g, l->policy);
  if (!c.ok()) return ReportError(g, "plan", c.status());
  auto plan = c->backend->Plan(l->desired, MakePlanOptions(g));
  if (!plan.ok()) return ReportError(g, "plan", plan.status());
  JudgePaths(*l, *c, true, plan->get());
  if (Json(g)) std::cout << DumpJson(PlanJson("plan", *c, **plan)) << "\n";
  else PrintPlanText(g, *c, **plan, "would make");
  return (*plan)->in_sync() ? exit_code::kOk : exit_code::kChanges;
}

/// Local probes of the ports the policy keeps open (loopback: a closed port cannot be judged).
std::vector<JudgedProbe> ProbeOpenPortsLocally(const Policy& policy) {
  std::vector<std::pair<std::string, uint16_t>> targets;
  for (const auto& p : policy.ports)
    if (p.state == PortState::kOpen) targets.push_back({"127.0.0.1", p.port});
  return JudgeProbes(policy, probe::ProbeAll(targets, probe::Options{3.0, 10.0, ""}), "");
}

int CmdCheck(const GlobalOptions& g, const CheckOptions& o) {
  // Metrics are written however the check ends (mailward_up 0 on an error).
  CheckMetrics metrics;
  auto started = std::chrono::steady_clock::now();
  struct MetricsWriter {
    const CheckOptions& o;
    CheckMetrics& m;
    std::chrono::steady_clock::time_point t0;
    ~MetricsWriter() {
      if (o.metrics_file.empty()) return;
      m.timestamp = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      m.duration = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      Status s = WriteMetrics(o.metrics_file, m);
      if (!s.ok()) std::cerr << "mailward check: cannot write metrics: " << s.message() << "\n";
    }
  } writer{o, metrics, started};
  auto l = Load(g);
  if (!l.ok()) return ReportError(g, "check", l.status());
  auto c = ChooseBackend(g, l->policy);
  if (!c.ok()) return ReportError(g, "check", c.status());
  auto plan = c->backend->Plan(l->desired, MakePlanOptions(g));
  if (!plan.ok()) return ReportError(g, "check", plan.status());
  JudgePaths(*l, *c, false, plan->get());
  // The Dovecot audit, when the policy names a config.
  std::optional<dovecot::AuditResult> audit;
  if (l->policy.dovecot.enabled) {
    auto a = RunDovecotAudit(l->policy.dovecot.config, l->policy.dovecot.ignore);
    if (!a.ok()) return ReportError(g, "check", a.status().WithContext("dovecot audit"));
    audit = std::move(a.value());
  }
  bool findings = audit && !audit->findings.empty();
  std::vector<JudgedProbe> probes;
  if (o.probe) probes = ProbeOpenPortsLocally(l->policy);
  bool probes_ok = true;
  for (const auto& p : probes) probes_ok &= p.as_policy.value_or(true);
  bool clean = (*plan)->in_sync() && (*plan)->conflicts.empty() && c->fights.empty() && !findings && probes_ok;
  metrics.up = true;
  metrics.in_sync = (*plan)->in_sync();
  metrics.changes = (*plan)->changes.size();
  metrics.conflicts = (*plan)->conflicts.size();
  if (audit)
    for (const auto& f : audit->findings) ++metrics.findings[f.severity];
  for (const auto& p : probes)
    metrics.probes.push_back({p.result.host, p.result.port, p.result.state, p.as_policy ? (*p.as_policy ? 1 : 0) : -1});
  if (Json(g)) {
    json j = PlanJson("check", *c, **plan);
    j["drift"] = !(*plan)->in_sync();
    j["clean"] = clean;
    j["audit"] = audit ? AuditJson(l->policy.dovecot.config, *audit) : json(nullptr);
    json pj = json::array();
    for (const auto& p : probes) pj.push_back(ProbeJson(p));
    j["probes"] = pj;
    std::cout << DumpJson(j) << "\n";
  } else {
    PrintPlanText(g, *c, **plan, "drift:");
    if (audit && !g.quiet) {
      std::cout << "dovecot audit of " << l->policy.dovecot.config << ": "
                << (findings ? std::to_string(audit->findings.size()) + " findings:\n" : "clean\n");
      std::cout << AuditText(*audit, UseColor());
    }
    if (!probes.empty() && !g.quiet)
      std::cout << "local probes of the open ports:\n" << ProbeText(probes, UseColor());
    if (!g.quiet)
      std::cout << (clean ? "clean\n"
                          : !(*plan)->in_sync() ? "not clean: run 'mailward apply' to repair drift\n"
                                                : "not clean: see the conflicts, findings and probes above\n");
  }
  if (std::getenv("JOURNAL_STREAM")) {
    // One line for the journal, with a priority: warning when not clean.
    std::cerr << (clean ? "<6>" : "<4>") << "mailward check: " << (clean ? "clean" : "NOT clean") << ": "
              << (*plan)->changes.size() << " drift changes, " << (*plan)->conflicts.size() << " conflicts, "
              << (audit ? audit->findings.size() : 0) << " Dovecot findings, " << (probes_ok ? "probes ok" : "a probe failed")
              << "\n";
  }
  return clean ? exit_code::kOk : exit_code::kChanges;
}

int CmdApply(const GlobalOptions& g, const ApplyOptions& ao) {
  auto l = Load(g);
  if (!l.ok()) return ReportError(g, "apply", l.status());
  auto c = ChooseBackend(g, l->policy);
  if (!c.ok()) return ReportError(g, "apply", c.status());
  if (!c->fights.empty() && !ao.force)
    return ReportError(g, "apply", Status::Error(Code::kRefused, "two firewall managers would fight over this host: " +
                                                                    c->fights.front() + "; nothing was applied (--force applies anyway)"));
  auto sessions = SshSessionsFor(l->policy);
  if (!ao.force) {
    Status lo = CheckLockout(l->policy, sessions);
    if (!lo.ok()) return ReportError(g, "apply", lo);
  }
  Lock lock;
  Status ls = lock.Acquire(g.state_dir, g.lock_timeout);
  if (!ls.ok()) return ReportError(g, "apply", ls);
  PendingConfirm pending;
  if (ReadPending(g.state_dir, &pending)) {
    std::string why;
    if (!PendingIsStale(g.state_dir, pending, &why))
      return ReportError(g, "apply", Status::Error(Code::kRefused,
                                            "an earlier apply --confirm is still pending (it reverts to " + pending.snapshot +
                                                " at its deadline): run 'mailward confirm' or 'mailward rollback' first; "
                                                "nothing was applied"));
    // Nobody will ever confirm or revert it (a reboot, a killed watchdog): not confirmed.
    Status rs = ResolveStalePending(g.state_dir, pending, why);
    c->notes.push_back("an earlier apply --confirm was never confirmed (" + why + "): " +
                       (rs.ok() ? "reverted to " + pending.snapshot + " first"
                                : "its revert failed (" + rs.message() + "); applying the policy anyway") +
                       ", see " + g.state_dir + "/confirm.log");
  } else if (PendingRecordExists(g.state_dir)) {
    // A record that cannot be read: its watchdog still reverts by its last reading of it.
    if (AnyWatchdogAlive(g.state_dir))
      return ReportError(g, "apply", Status::Error(Code::kRefused,
                                            g.state_dir + "/pending-confirm cannot be read, and an apply --confirm watchdog "
                                            "still runs: run 'mailward confirm' (keep the applied policy) or 'mailward "
                                            "rollback' first; nothing was applied"));
    EndPending(g.state_dir, "damaged pending confirmation record with no watchdog left: removed, nothing reverted");
    c->notes.push_back("removed a damaged " + g.state_dir + "/pending-confirm that no watchdog was waiting on");
  }
  ResolveUncommitted(g.state_dir);
  if (const char* fault = std::getenv("MAILWARD_TEST_FAULT"); fault && std::string(fault) == "state-dir")
    return ReportError(g, "apply", Status::Io("injected fault: the state directory is unwritable; nothing was applied"));

  Backend& be = *c->backend;
  std::unique_ptr<BackendPlan> plan;
  Snapshot snapshot;
  std::string snapshot_path;
  const bool confirming = ao.confirm_seconds > 0;
  bool armed = false;
  int attempts = 0;
  for (;;) {
    auto p = [&] {
      Phase phase("plan");
      return be.Plan(l->desired, MakePlanOptions(g));
    }();
    if (!p.ok()) return ReportError(g, "apply", p.status());
    plan = std::move(p.value());
    if (!plan->in_sync()) {
      Phase phase("snapshot");
      auto snap = be.TakeSnapshot(*plan);
      if (!snap.ok()) return ReportError(g, "apply", snap.status());
      snapshot = std::move(snap.value());
      Phase save("save snapshot");
      auto saved = SaveSnapshot(g.state_dir, snapshot, plan->generation);
      if (!saved.ok())
        return ReportError(g, "apply", saved.status().WithContext("cannot save the rollback snapshot, nothing was applied"));
      snapshot_path = *saved;
      if (confirming) {
        // Armed before the commit: from here on, whatever happens to this process, the watchdog
        // reverts at the deadline unless the apply is confirmed (or disarms it itself).
        Status ws = ArmConfirm(g.state_dir, snapshot_path, ao.confirm_seconds);
        if (!ws.ok()) {
          RemoveSnapshot(snapshot_path);
          return ReportError(g, "apply", ws.WithContext("nothing was applied"));
        }
        armed = true;
      }
    }
    TestPausePoint("before-commit");
    Status s = [&] {
      Phase phase("apply batch");
      return be.Apply(*plan);
    }();
    if (s.ok()) break;
    // Nothing was applied: this attempt's snapshot is not a rollback point, nor a revert.
    if (armed) DisarmConfirm(g.state_dir, "the apply failed and changed nothing (" + s.message() + ")");
    armed = false;
    if (!snapshot_path.empty()) {
      RemoveSnapshot(snapshot_path);
      snapshot_path.clear();
    }
    if (s.code() == Code::kGenerationMoved && ++attempts < 5) continue;  // someone else committed: re-plan
    return ReportError(g, "apply", s);
  }
  // Committed: the confirm deadline counts from now.
  Status committed = armed ? CommitPending(g.state_dir, ao.confirm_seconds) : Status::Ok();
  if (!snapshot_path.empty()) MarkCommitted(snapshot_path);
  TestPausePoint("after-commit");
  if (!committed.ok()) {
    Status rs = be.Restore(snapshot.bytes, ReadAttachment(snapshot_path));
    if (rs.ok()) {
      DisarmConfirm(g.state_dir, "the apply could not record its commit and put the old state back");
      RemoveSnapshot(snapshot_path);
    }
    return ReportError(g, "apply", committed.WithContext(rs.ok() ? "cannot record the pending confirmation; reverted"
                                                                  : "cannot record the pending confirmation; REVERT FAILED (" +
                                                                        rs.message() + "), the watchdog retries at the deadline"));
  }

  // Verify: read back and compare with the policy.
  bool verified = true;
  std::string verify_error;
  if (!plan->in_sync()) {
    PlanOptions o = MakePlanOptions(g);
    o.analyze_conflicts = false;
    Phase phase("verify read-back");
    auto after = be.Plan(l->desired, o);
    if (!after.ok()) {
      verified = false;
      verify_error = after.status().message();
    } else if (!(*after)->in_sync()) {
      verified = false;
      verify_error = "the ruleset read back differs from the policy (" + std::to_string((*after)->changes.size()) +
                     " differences):\n" + PlanText((*after)->changes, false, false);
    }
    if (!verified) {
      // Only this apply's own commit is undone (the backend checks nobody committed since).
      Status rs = be.RestoreOwnCommit(*plan, snapshot.bytes, ReadAttachment(snapshot_path));
      if (rs.ok()) {
        // Back where it started: no revert pending, and no no-op rollback point.
        if (armed) DisarmConfirm(g.state_dir, "verification failed and the apply rolled back itself");
        RemoveSnapshot(snapshot_path);
      } else if (armed && rs.code() == Code::kGenerationMoved) {
        // Another process committed after this apply: its state is not ours to revert.
        DisarmConfirm(g.state_dir, "verification failed and another process committed after this apply; its state is left alone");
      }
      Status vs = Status::Error(Code::kVerifyFailed,
                                "verification failed: " + verify_error +
                                    (rs.ok() ? "; rolled back to the previous state"
                                     : rs.code() == Code::kGenerationMoved
                                         ? "; " + rs.message()
                                         : "; ROLLBACK FAILED: " + rs.message() +
                                               (armed ? " (the confirm watchdog tries again at its deadline)" : "")));
      return ReportError(g, "apply", vs, exit_code::kVerifyFailed);
    }
  }
  // Local probes of the ports the policy keeps open: the service answers through the firewall
  // as a client sees it. They cross loopback, so they cannot prove a closed port closed (that
  // needs `mailward probe HOST` from another host); a failure here is reported, not rolled back,
  // since a stopped service is not the firewall's doing.
  TestPausePoint("probes");
  std::vector<JudgedProbe> probes;
  if (ao.probe) probes = ProbeOpenPortsLocally(l->policy);

  // Commit-confirmed: the watchdog armed before the commit reverts unless `mailward confirm`
  // (or, with --auto-confirm, this run's own checks) confirms first.
  json confirm = nullptr;
  std::string confirm_text;
  if (armed) {
    bool probes_ok = true;
    for (const auto& p : probes) probes_ok &= p.as_policy.value_or(true);
    // The sessions seen before the apply and those seen now: a session the new rules cut may
    // no longer be listed, and its peer no longer reaches its port.
    auto now_sessions = SshSessionsFor(l->policy);
    for (const auto& s : sessions) {
      bool dup = false;
      for (const auto& n : now_sessions) dup |= n.client == s.client && n.port == s.port;
      if (!dup) now_sessions.push_back(s);
    }
    Status lockout = CheckLockout(l->policy, now_sessions);
    std::string why;
    if (!probes_ok) why = "a probe of an open port failed";
    else if (!lockout.ok()) why = "the policy closes the port of an SSH session to its client";
    PendingConfirm now_pending;
    if (why.empty() && ReadPending(g.state_dir, &now_pending) && BootMs() >= now_pending.deadline_ms)
      why = "the checks outlasted the --confirm time";  // the watchdog reverts once this apply ends
    bool auto_ok = ao.auto_confirm && why.empty();
    if (auto_ok) ConfirmPending(g.state_dir, "auto-confirmed: read-back verified, open ports answer, no SSH session is closed off");
    confirm = {{"seconds", ao.confirm_seconds},
               {"pending", !auto_ok},
               {"auto_confirmed", auto_ok},
               {"reason", auto_ok ? "read-back verified, open ports answer, no SSH session is closed off"
                                  : ao.auto_confirm ? "not auto-confirmed: " + why
                                                    : "run 'mailward confirm' within the time"}};
    confirm_text = auto_ok ? "auto-confirmed: read-back verified, open ports answer, no SSH session is closed off\n"
                           : "NOT CONFIRMED: reverts in " + std::to_string(ao.confirm_seconds) +
                                 " s unless 'mailward confirm' runs" + (why.empty() ? "" : " (" + why + ")") + "\n";
  } else if (confirming) {
    confirm = {{"seconds", ao.confirm_seconds}, {"pending", false}, {"auto_confirmed", false},
               {"reason", "nothing changed: nothing to confirm"}};
  }
  if (Json(g)) {
    json j = PlanJson("apply", *c, *plan);
    j["applied"] = !plan->in_sync();
    j["verified"] = verified;
    json pj = json::array();
    for (const auto& p : probes) pj.push_back(ProbeJson(p));
    j["probes"] = pj;
    j["confirm"] = confirm;
    std::cout << DumpJson(j) << "\n";
  } else if (!g.quiet) {
    PrintPlanText(g, *c, *plan, "applied");
    if (!plan->in_sync()) std::cout << "verified: the ruleset read back matches the policy\n";
    if (!probes.empty()) {
      std::cout << "local probes of the open ports (closed ports can only be proven from another host):\n"
                << ProbeText(probes, UseColor());
    }
    std::cout << confirm_text;
  }
  return exit_code::kOk;
}

int CmdConfirm(const GlobalOptions& g) {
  Lock lock;
  Status ls = lock.Acquire(g.state_dir, g.lock_timeout);
  if (!ls.ok()) return ReportError(g, "confirm", ls);
  PendingConfirm pending;
  std::string why;
  if (ReadPending(g.state_dir, &pending) && PendingIsStale(g.state_dir, pending, &why)) {
    Status rs = ResolveStalePending(g.state_dir, pending, why);
    return ReportError(g, "confirm", Status::Error(Code::kRefused,
                                            "nothing to confirm: the pending apply --confirm can no longer be kept (" + why +
                                                "), so it counts as not confirmed: " +
                                                (rs.ok() ? "reverted to " + pending.snapshot : "its revert FAILED: " + rs.message()) +
                                                " (see " + g.state_dir + "/confirm.log); apply again to keep the policy"));
  }
  bool done = ConfirmPending(g.state_dir);
  if (!done)
    return ReportError(g, "confirm", Status::Error(Code::kRefused, "nothing to confirm (no apply --confirm is pending; "
                                                            "it may have been reverted already, see " + g.state_dir + "/confirm.log)"));
  if (Json(g)) std::cout << DumpJson(json{{"command", "confirm"}, {"confirmed", true}}) << "\n";
  else if (!g.quiet) std::cout << "confirmed: the applied policy stays\n";
  return exit_code::kOk;
}

int CmdRollback(const GlobalOptions& g) {
  Lock lock;
  Status ls = lock.Acquire(g.state_dir, g.lock_timeout);
  if (!ls.ok()) return ReportError(g, "rollback", ls);
  // A pending revert (live or stale) is superseded by this rollback: its snapshot is the newest.
  PendingConfirm pending;
  bool has_pending = ReadPending(g.state_dir, &pending);
  const bool damaged_pending = !has_pending && PendingRecordExists(g.state_dir);
  ResolveUncommitted(g.state_dir);
  if (has_pending && !Exists(pending.snapshot)) {
    // Its apply was killed before committing (or its snapshot is gone): nothing to revert.
    EndPending(g.state_dir, "pending confirmation ended by 'mailward rollback': its apply never committed, nothing to revert");
    has_pending = false;
  }
  auto snaps = ListSnapshots(g.state_dir);
  if (!snaps.ok()) return ReportError(g, "rollback", snaps.status());
  if (snaps->empty()) {
    return ReportError(g, "rollback", Status::Error(Code::kNotFound,
                                             "no snapshot to roll back to: " + g.state_dir + "/snapshots holds none (no apply "
                                             "through this state directory changed the firewall, or every earlier state was "
                                             "rolled back already); nothing was changed"));
  }
  const std::string newest = snaps->back().path;
  auto data = ReadFile(newest, Follow::kNoSymlinks);
  if (!data.ok()) return ReportError(g, "rollback", data.status());
  auto be = BackendForSnapshot(*data, BackendConfig{g.state_dir});
  Status s = be->Restore(*data, ReadAttachment(newest));
  if (!s.ok()) return ReportError(g, "rollback", s);
  RemoveSnapshot(newest);
  if (has_pending || damaged_pending)
    EndPending(g.state_dir, "pending confirmation ended by 'mailward rollback': rolled back to " + newest);
  if (Json(g)) std::cout << DumpJson(json{{"command", "rollback"}, {"restored", newest}}) << "\n";
  else if (!g.quiet) std::cout << "rolled back to the state saved in " << newest << "\n";
  return exit_code::kOk;
}

}  // namespace mw
