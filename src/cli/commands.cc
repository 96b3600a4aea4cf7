#include "cli/commands.h"

#include "analysis/judge.h"
#include "backend/host_view.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
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
#include "model/ruleset.h"
#include "policy/policy.h"
#include "report/metrics.h"
#include "report/report.h"
#include "util/fs.h"
#include "util/timing.h"

namespace mw {
namespace {

using json = nlohmann::json;
constexpr size_t kSnapshotsKept = 10;

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

/// Whether a process named `name` runs (in this PID namespace).
bool ProcessRunning(const std::string& name) {
  DIR* d = opendir("/proc");
  if (!d) return false;
  bool found = false;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    auto comm = ReadFile(std::string("/proc/") + e->d_name + "/comm");
    if (comm.ok() && (*comm == name + "\n" || *comm == name)) {
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

/// An exclusive lock on the state directory; waits up to `timeout` seconds.
class Lock {
 public:
  ~Lock() {
    if (fd_ >= 0) close(fd_);
  }
  Status Acquire(const std::string& dir, double timeout) {
    MW_RETURN_IF_ERROR(MakeDirs(dir));
    std::string path = dir + "/lock";
    fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) return Status::Io(path + ": cannot open the lock file");
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
  auto hv = ReadHostView(hopts);
  if (!hv.ok()) {
    plan->notes.push_back("the packet paths could not be judged: " + hv.status().message());
    return;
  }
  for (const auto& n : hv->notes) plan->notes.push_back(n);
  analysis::Judgement j = analysis::Judge(hv->topo, hv->interfaces, ClaimsOf(l.policy));
  plan->conflicts = ToConflicts(j);
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
  return {{"command", command},
          {"backend", c.backend->name()},
          {"backend_reason", c.reason},
          {"in_sync", plan.in_sync()},
          {"generation", plan.generation},
          {"changes", changes},
          {"conflicts", conflicts},
          {"source_restrictions", restrictions},
          {"manager_conflicts", c.fights},
          {"notes", notes}};
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

std::string AttachmentOf(const std::string& snap_path) {
  return snap_path.substr(0, snap_path.size() - 5) + ".elements";
}

/// Writes snapshots/<microseconds>.snap (and links its attachment beside it as .elements),
/// keeping the newest kSnapshotsKept.
Result<std::string> SaveSnapshot(const std::string& state_dir, const Snapshot& snap) {
  std::string dir = state_dir + "/snapshots";
  MW_RETURN_IF_ERROR(MakeDirs(dir));
  auto existing = ListFiles(dir, ".snap");
  if (!existing.ok()) return existing.status();
  char name[64];
  auto now = std::chrono::system_clock::now().time_since_epoch();
  std::snprintf(name, sizeof name, "/%020lld.snap",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(now).count()));
  std::string path = dir + name;
  if (!snap.attachment_path.empty()) {
    std::string att = AttachmentOf(path);
    if (link(snap.attachment_path.c_str(), att.c_str()) != 0)
      return Status::Io(att + ": cannot link " + snap.attachment_path + ": " + std::strerror(errno));
  }
  MW_RETURN_IF_ERROR(WriteFileAtomic(path, snap.bytes, Durability::kFsync));
  for (size_t i = 0; i + kSnapshotsKept < existing->size() + 1; ++i) {
    unlink((*existing)[i].c_str());
    unlink(AttachmentOf((*existing)[i]).c_str());
  }
  return path;
}

/// The attachment's content, or "" when the snapshot has none.
std::string ReadAttachment(const std::string& snap_path) {
  auto a = ReadFile(AttachmentOf(snap_path));
  return a.ok() ? *a : "";
}

}  // namespace

int ReportError(const GlobalOptions& g, const std::string& command, const Status& s, int code) {
  if (Json(g)) {
    json j = {{"command", command}, {"error", {{"kind", CodeName(s.code())}, {"message", s.message()}}}};
    std::cout << j.dump(2) << "\n";
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
      std::cout << json{{"command", "validate"}, {"valid", false}, {"errors", errors}}.dump(2) << "\n";
    }
    std::cerr << l.status().message() << "\n";
    return exit_code::kError;
  }
  if (Json(g)) {
    json j = PolicySummaryJson(l->policy);
    j["command"] = "validate";
    j["valid"] = true;
    std::cout << j.dump(2) << "\n";
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
  if (Json(g)) std::cout << PlanJson("plan", *c, **plan).dump(2) << "\n";
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

namespace {

/// Whether a Dovecot finding fails the check under --fail-on.
bool FailsCheck(const dovecot::Finding& f, const std::string& fail_on) {
  return dovecot::SeverityRank(f.severity) <= dovecot::SeverityRank(fail_on);
}

/// The journal's one line about a check: what was found, and what was not looked at.
std::string CheckSummary(bool clean, const BackendPlan& plan, const std::optional<dovecot::AuditResult>& audit,
                         size_t failing_findings, const std::string& fail_on, const std::vector<JudgedProbe>& probes,
                         bool probed) {
  std::string out = std::string("mailward check: ") + (clean ? "clean" : "NOT clean") + ": " +
                    std::to_string(plan.changes.size()) + " drift changes, " + std::to_string(plan.conflicts.size()) +
                    " conflicts, ";
  if (!audit) {
    out += "Dovecot audit skipped (no dovecot block in the policy), ";
  } else {
    out += std::to_string(audit->findings.size()) + " Dovecot findings (" + std::to_string(failing_findings) +
           " at or above --fail-on " + fail_on + "), ";
  }
  if (!probed) {
    out += "probes skipped (--no-probe)";
  } else if (probes.empty()) {
    out += "no open port to probe";
  } else {
    size_t failed = 0;
    for (const auto& p : probes) failed += !p.as_policy.value_or(true);
    out += failed == 0 ? std::to_string(probes.size()) + " probes ok"
                       : std::to_string(failed) + " of " + std::to_string(probes.size()) + " probes failed";
  }
  return out;
}

/// The check itself; fills `metrics` with what it learns as it goes.
int RunCheck(const GlobalOptions& g, const CheckOptions& o, CheckMetrics& metrics) {
  auto l = Load(g);
  if (!l.ok()) return ReportError(g, "check", l.status());
  auto c = ChooseBackend(g, l->policy);
  if (!c.ok()) return ReportError(g, "check", c.status());
  metrics.backend = c->backend->name();
  metrics.managers = {{"ufw", UfwActive()}, {"firewalld", ProcessRunning("firewalld")}};
  auto plan = c->backend->Plan(l->desired, MakePlanOptions(g));
  if (!plan.ok()) return ReportError(g, "check", plan.status());
  JudgePaths(*l, *c, false, plan->get());
  metrics.in_sync = (*plan)->in_sync();
  metrics.changes = (*plan)->changes.size();
  metrics.conflicts = (*plan)->conflicts.size();
  // The Dovecot audit, when the policy names a config.
  std::optional<dovecot::AuditResult> audit;
  if (l->policy.dovecot.enabled) {
    auto a = RunDovecotAudit(l->policy.dovecot.config, l->policy.dovecot.ignore);
    if (!a.ok()) return ReportError(g, "check", a.status().WithContext("dovecot audit"));
    audit = std::move(a.value());
    metrics.findings.emplace();
    for (const auto& f : audit->findings) ++(*metrics.findings)[f.severity];
  }
  size_t failing_findings = 0;
  if (audit)
    for (const auto& f : audit->findings) failing_findings += FailsCheck(f, o.fail_on);
  bool findings = failing_findings > 0;
  std::vector<JudgedProbe> probes;
  if (o.probe) probes = ProbeOpenPortsLocally(l->policy);
  bool probes_ok = true;
  for (const auto& p : probes) probes_ok &= p.as_policy.value_or(true);
  bool clean = (*plan)->in_sync() && (*plan)->conflicts.empty() && c->fights.empty() && !findings && probes_ok;
  if (o.probe) {
    metrics.probes.emplace();
    for (const auto& p : probes) {
      CheckMetrics::Probe mp{p.result.host, p.result.port, p.result.state, p.as_policy ? (*p.as_policy ? 1 : 0) : -1, {}};
      if (p.result.tls) mp.cert_not_after = ParseUtcTimestamp(p.result.tls->not_after);
      metrics.probes->push_back(mp);
    }
  }
  metrics.up = true;
  if (Json(g)) {
    json j = PlanJson("check", *c, **plan);
    j["drift"] = !(*plan)->in_sync();
    j["clean"] = clean;
    j["fail_on"] = o.fail_on;
    j["audit"] = audit ? AuditJson(l->policy.dovecot.config, *audit) : json(nullptr);
    json pj = json::array();
    for (const auto& p : probes) pj.push_back(ProbeJson(p));
    j["probes"] = pj;
    j["probed"] = o.probe;
    std::cout << j.dump(2) << "\n";
  } else {
    PrintPlanText(g, *c, **plan, "drift:");
    if (audit && !g.quiet) {
      std::cout << "dovecot audit of " << l->policy.dovecot.config << ": "
                << (audit->findings.empty() ? "clean\n" : std::to_string(audit->findings.size()) + " findings:\n");
      std::cout << AuditText(*audit, UseColor());
      if (!audit->findings.empty() && !findings)
        std::cout << "(none at or above --fail-on " << o.fail_on << ": they do not fail the check)\n";
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
    std::cerr << (clean ? "<6>" : "<4>") << CheckSummary(clean, **plan, audit, failing_findings, o.fail_on, probes, o.probe)
              << "\n";
  }
  return clean ? exit_code::kOk : exit_code::kChanges;
}

}  // namespace

int CmdCheck(const GlobalOptions& g, const CheckOptions& o) {
  if (!o.metrics_file.empty() && !IsDirectory(DirOf(o.metrics_file)))
    return ReportError(g, "check", Status::Io(DirOf(o.metrics_file) +
                                              ": the metrics directory does not exist: create it (node_exporter's "
                                              "--collector.textfile.directory) or fix --metrics-file"));
  CheckMetrics metrics;
  metrics.last_apply = ReadLastApply(g.state_dir);
  auto started = std::chrono::steady_clock::now();
  int rc = RunCheck(g, o, metrics);
  if (o.metrics_file.empty()) return rc;
  // Written however the check ended: on an error, mailward_up 0 and only what it learned.
  metrics.timestamp = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  metrics.duration = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  Status s = WriteMetrics(o.metrics_file, metrics);
  if (!s.ok()) {
    std::cerr << (std::getenv("JOURNAL_STREAM") ? "<3>" : "") << "mailward check: error: cannot write the metrics: "
              << s.message() << "\n";
    return exit_code::kError;
  }
  return rc;
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
  if (ReadPending(g.state_dir, &pending))
    return ReportError(g, "apply", Status::Error(Code::kRefused,
                                          "an earlier apply --confirm is still pending (it reverts to " + pending.snapshot +
                                              " at its deadline): run 'mailward confirm' or 'mailward rollback' first; "
                                              "nothing was applied"));
  if (const char* fault = std::getenv("MAILWARD_TEST_FAULT"); fault && std::string(fault) == "state-dir")
    return ReportError(g, "apply", Status::Io("injected fault: the state directory is unwritable; nothing was applied"));

  Backend& be = *c->backend;
  std::unique_ptr<BackendPlan> plan;
  Snapshot snapshot;
  std::string snapshot_path;
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
      auto saved = SaveSnapshot(g.state_dir, snapshot);
      if (!saved.ok())
        return ReportError(g, "apply", saved.status().WithContext("cannot save the rollback snapshot, nothing was applied"));
      snapshot_path = *saved;
    }
    Status s = [&] {
      Phase phase("apply batch");
      return be.Apply(*plan);
    }();
    if (s.ok()) break;
    // Nothing was applied: this attempt's snapshot is not a rollback point.
    if (!snapshot_path.empty()) {
      unlink(snapshot_path.c_str());
      unlink(AttachmentOf(snapshot_path).c_str());
      snapshot_path.clear();
    }
    if (s.code() == Code::kGenerationMoved && ++attempts < 5) continue;  // someone else committed: re-plan
    return ReportError(g, "apply", s);
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
      Status vs = Status::Error(Code::kVerifyFailed,
                                "verification failed: " + verify_error +
                                    (rs.ok() ? "; rolled back to the previous state"
                                     : rs.code() == Code::kGenerationMoved ? "; " + rs.message()
                                                                           : "; ROLLBACK FAILED: " + rs.message()));
      return ReportError(g, "apply", vs, exit_code::kVerifyFailed);
    }
  }
  // Local probes of the ports the policy keeps open: the service answers through the firewall
  // as a client sees it. They cross loopback, so they cannot prove a closed port closed (that
  // needs `mailward probe HOST` from another host); a failure here is reported, not rolled back,
  // since a stopped service is not the firewall's doing.
  std::vector<JudgedProbe> probes;
  if (ao.probe) probes = ProbeOpenPortsLocally(l->policy);

  // Commit-confirmed: a detached watchdog reverts unless `mailward confirm` (or, with
  // --auto-confirm, this run's own checks) confirms first.
  json confirm = nullptr;
  std::string confirm_text;
  if (ao.confirm_seconds > 0 && !plan->in_sync()) {
    Status ws = StartConfirmWatchdog(g.state_dir, snapshot_path, ao.confirm_seconds);
    if (!ws.ok()) {
      Status rs = be.Restore(snapshot.bytes, ReadAttachment(snapshot_path));
      return ReportError(g, "apply", ws.WithContext(rs.ok() ? "reverted" : "REVERT FAILED: " + rs.message()));
    }
    bool probes_ok = true;
    for (const auto& p : probes) probes_ok &= p.as_policy.value_or(true);
    bool sessions_ok = CheckLockout(l->policy, SshSessionsFor(l->policy)).ok();
    std::string why;
    if (!probes_ok) why = "a probe of an open port failed";
    else if (!sessions_ok) why = "the policy closes the port of an SSH session";
    bool auto_ok = ao.auto_confirm && why.empty();
    if (auto_ok) ConfirmPending(g.state_dir);
    confirm = {{"seconds", ao.confirm_seconds},
               {"pending", !auto_ok},
               {"auto_confirmed", auto_ok},
               {"reason", auto_ok ? "read-back verified, open ports answer, no SSH session is closed off"
                                  : ao.auto_confirm ? "not auto-confirmed: " + why
                                                    : "run 'mailward confirm' within the time"}};
    confirm_text = auto_ok ? "auto-confirmed: read-back verified, open ports answer, no SSH session is closed off\n"
                           : "NOT CONFIRMED: reverts in " + std::to_string(ao.confirm_seconds) +
                                 " s unless 'mailward confirm' runs" + (why.empty() ? "" : " (" + why + ")") + "\n";
  } else if (ao.confirm_seconds > 0) {
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
    std::cout << j.dump(2) << "\n";
  } else if (!g.quiet) {
    PrintPlanText(g, *c, *plan, "applied");
    if (!plan->in_sync()) std::cout << "verified: the ruleset read back matches the policy\n";
    if (!probes.empty()) {
      std::cout << "local probes of the open ports (closed ports can only be proven from another host):\n"
                << ProbeText(probes, UseColor());
    }
    std::cout << confirm_text;
  }
  if (confirm.is_null() || !confirm["pending"].get<bool>()) (void)RecordLastApply(g.state_dir);  // for the metrics
  return exit_code::kOk;
}

int CmdConfirm(const GlobalOptions& g) {
  Lock lock;
  Status ls = lock.Acquire(g.state_dir, g.lock_timeout);
  if (!ls.ok()) return ReportError(g, "confirm", ls);
  bool done = ConfirmPending(g.state_dir);
  if (!done)
    return ReportError(g, "confirm", Status::Error(Code::kRefused, "nothing to confirm (no apply --confirm is pending; "
                                                            "it may have been reverted already, see " + g.state_dir + "/confirm.log)"));
  (void)RecordLastApply(g.state_dir);  // for the metrics
  if (Json(g)) std::cout << json{{"command", "confirm"}, {"confirmed", true}}.dump(2) << "\n";
  else if (!g.quiet) std::cout << "confirmed: the applied policy stays\n";
  return exit_code::kOk;
}

int CmdRollback(const GlobalOptions& g) {
  Lock lock;
  Status ls = lock.Acquire(g.state_dir, g.lock_timeout);
  if (!ls.ok()) return ReportError(g, "rollback", ls);
  ConfirmPending(g.state_dir);  // a pending revert is superseded by this rollback
  auto snaps = ListFiles(g.state_dir + "/snapshots", ".snap");
  if (!snaps.ok()) return ReportError(g, "rollback", snaps.status());
  if (snaps->empty()) return ReportError(g, "rollback", Status::Io("no snapshot to roll back to in " + g.state_dir + "/snapshots"));
  auto data = ReadFile(snaps->back());
  if (!data.ok()) return ReportError(g, "rollback", data.status());
  auto be = BackendForSnapshot(*data, BackendConfig{g.state_dir});
  Status s = be->Restore(*data, ReadAttachment(snaps->back()));
  if (!s.ok()) return ReportError(g, "rollback", s);
  unlink(snaps->back().c_str());
  unlink(AttachmentOf(snaps->back()).c_str());
  if (Json(g)) std::cout << json{{"command", "rollback"}, {"restored", snaps->back()}}.dump(2) << "\n";
  else if (!g.quiet) std::cout << "rolled back to the state saved in " << snaps->back() << "\n";
  return exit_code::kOk;
}

}  // namespace mw
