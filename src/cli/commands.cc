#include "cli/commands.h"

#include "analysis/judge.h"
#include "backend/host_view.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <set>

#include "backend/backend.h"
#include "backend/select.h"
#include "util/process.h"
#include "cli/audit_cmd.h"
#include "cli/probe_cmd.h"
#include "ops/lockout.h"
#include "ops/transaction.h"
#include "state/pending.h"
#include "state/snapshots.h"
#include "model/ruleset.h"
#include "policy/policy.h"
#include "report/metrics.h"
#include "report/report.h"
#include "sys/test_hooks.h"
#include "util/fs.h"
#include "util/text.h"
#include "util/timing.h"

namespace mw {

using ops::CheckLockout;
using ops::SshSessionsFor;
using state::PendingConfirm;
using state::ReadPending;
using sys::TestPausePoint;

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
    case Code::kPermission: return "permission";
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

}  // namespace

bool HaveNetAdmin() {
  // Read once: main's check before any command and the backend choice after it ask alike, and
  // mailward never changes its own capabilities.
  static const bool have = [] {
    auto st = ReadFile("/proc/self/status");
    if (!st.ok()) return geteuid() == 0;
    size_t at = st->find("\nCapEff:");
    if (at == std::string::npos) return geteuid() == 0;
    unsigned long long caps = std::strtoull(st->c_str() + at + 8, nullptr, 16);
    return ((caps >> 12) & 1) != 0;  // CAP_NET_ADMIN
  }();
  return have;
}

Status RequireNetAdmin(const std::string& command) {
  if (HaveNetAdmin()) return Status::Ok();
  const bool reads_only = command == "plan" || command == "check" || command == "status" || command == "explain";
  return Status::Error(Code::kPermission, "'mailward " + command + "' " +
                                              (reads_only ? "reads" : "reads and changes") +
                                              " the firewall, which needs root (CAP_NET_ADMIN): run it as root, for "
                                              "example 'sudo mailward " + command + "'");
}

namespace {

/// The backend for a command (backend/select.h), once the command may read the firewall.
Result<Chosen> ChooseBackend(const GlobalOptions& g, const Policy& p, const std::string& command) {
  MW_RETURN_IF_ERROR(RequireNetAdmin(command));
  return mw::ChooseBackend(g.backend, p.backend, g.state_dir);
}

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
  const size_t from_backend = plan->conflicts.size();
  for (auto& x : ToConflicts(j)) {
    bool dup = false;
    for (size_t i = 0; i < from_backend; ++i) {
      const Conflict& b = plan->conflicts[i];
      dup |= b.port == x.port && b.family == x.family && b.kind == x.kind;
    }
    if (!dup) plan->conflicts.push_back(std::move(x));
  }
  // A backend's "closed port reachable" (UFW switched off) stands only where the engine finds a
  // path: another of mailward's chains (the DNAT-path guard) may still close the port.
  std::set<std::pair<uint16_t, std::string>> reachable;
  for (const auto& v : j.violations)
    if (v.kind == analysis::ConflictKind::kClosedPortReachable) reachable.insert({v.port, FamilyName(v.family)});
  for (size_t i = from_backend; i-- > 0;) {
    const Conflict& b = plan->conflicts[i];
    if (b.kind == analysis::ConflictKind::kClosedPortReachable && !reachable.count({b.port, b.family}))
      plan->conflicts.erase(plan->conflicts.begin() + static_cast<long>(i));
  }
  if (as_planned && !plan->in_sync()) {
    // What mailward's own pending changes repair is the plan itself, not a conflict.
    std::erase_if(plan->conflicts, [](const Conflict& x) { return x.owner == "mailward"; });
  }
  for (const auto& r : j.restrictions)
    if (r.owner != "mailward")  // its own per-source rate limits are the policy, not news
      plan->restrictions.push_back({r.port, FamilyName(r.family), r.owner, r.where, r.rule});
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
    std::cout << verb << " " << Plural(plan.changes.size(), "change") << ":\n";
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
  if (s.code() == Code::kInvalidPolicy && command == "apply")
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
              << Plural(l->policy.ports.size(), "port") << ", " << Plural(l->policy.allowlists.size(), "allowlist") << "\n";
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
  auto c = ChooseBackend(g, l->policy, "plan");
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
                    Plural(plan.changes.size(), "drift change") + ", " + Plural(plan.conflicts.size(), "conflict") + ", ";
  if (!audit) {
    out += "Dovecot audit skipped (no dovecot block in the policy), ";
  } else {
    out += Plural(audit->findings.size(), "Dovecot finding") + " (" + std::to_string(failing_findings) +
           " at or above --fail-on " + fail_on + "), ";
  }
  if (!probed) {
    out += "probes skipped (--no-probe)";
  } else if (probes.empty()) {
    out += "no open port to probe";
  } else {
    size_t failed = 0;
    for (const auto& p : probes) failed += !p.as_policy.value_or(true);
    out += failed == 0 ? Plural(probes.size(), "probe") + " ok"
                       : std::to_string(failed) + " of " + std::to_string(probes.size()) + " probes failed";
  }
  return out;
}

/// The check itself; fills `metrics` with what it learns as it goes.
int RunCheck(const GlobalOptions& g, const CheckOptions& o, CheckMetrics& metrics) {
  auto l = Load(g);
  if (!l.ok()) return ReportError(g, "check", l.status());
  auto c = ChooseBackend(g, l->policy, "check");
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
    std::cout << DumpJson(j) << "\n";
  } else {
    PrintPlanText(g, *c, **plan, "drift:");
    if (audit && !g.quiet) {
      std::cout << "dovecot audit of " << l->policy.dovecot.config << ": "
                << (audit->findings.empty() ? "clean\n" : Plural(audit->findings.size(), "finding") + ":\n");
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
  auto c = [&] {
    Phase phase("choose backend");
    return ChooseBackend(g, l->policy, "apply");
  }();
  if (!c.ok()) return ReportError(g, "apply", c.status());
  if (!c->fights.empty() && !ao.force)
    return ReportError(g, "apply", Status::Error(Code::kRefused, "two firewall managers would fight over this host: " +
                                                                    c->fights.front() + "; nothing was applied (--force applies anyway)"));
  auto sessions = [&] {
    Phase phase("ssh sessions");
    return SshSessionsFor(l->policy);
  }();
  if (!ao.force) {
    Status lo = CheckLockout(l->policy, sessions);
    if (!lo.ok()) return ReportError(g, "apply", lo);
  }
  ops::ApplyRequest req;
  req.state_dir = g.state_dir;
  req.lock_timeout = g.lock_timeout;
  req.plan_options = MakePlanOptions(g);
  {
    Phase phase("hash policy files");
    req.info = SnapshotInfo{"apply", CurrentUser(), g.policy, HashFiles(l->policy.files)};
  }
  req.confirm_seconds = ao.confirm_seconds;
  auto applied = [&] {
    Phase phase("apply transaction");
    return ops::Apply(*c->backend, l->desired, req);
  }();
  if (!applied.ok())
    return ReportError(g, "apply", applied.status(),
                       applied.status().code() == Code::kVerifyFailed ? exit_code::kVerifyFailed : exit_code::kError);
  for (auto& n : applied->notes) c->notes.push_back(std::move(n));
  const std::unique_ptr<BackendPlan>& plan = applied->plan;
  const bool confirming = ao.confirm_seconds > 0;
  const bool armed = applied->armed;
  // Local probes of the ports the policy keeps open: the service answers through the firewall
  // as a client sees it. They cross loopback, so they cannot prove a closed port closed (that
  // needs `mailward probe HOST` from another host); a failure here is reported, not rolled back,
  // since a stopped service is not the firewall's doing.
  TestPausePoint("probes");
  std::vector<JudgedProbe> probes;
  if (ao.probe) {
    Phase phase("local probes");
    probes = ProbeOpenPortsLocally(l->policy);
  }

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
    ops::AutoConfirm ac = ops::MaybeAutoConfirm(g.state_dir, ao.auto_confirm, probes_ok, lockout.ok());
    const std::string& why = ac.why;
    bool auto_ok = ac.confirmed;
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
    j["verified"] = true;  // a read-back that differs is an error (exit code 3)
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
  if (confirm.is_null() || !confirm["pending"].get<bool>()) (void)RecordLastApply(g.state_dir);  // for the metrics
  return exit_code::kOk;
}

int CmdConfirm(const GlobalOptions& g) {
  Status done = ops::Confirm(g.state_dir, g.lock_timeout);
  if (!done.ok()) return ReportError(g, "confirm", done);
  (void)RecordLastApply(g.state_dir);  // for the metrics
  if (Json(g)) std::cout << DumpJson(json{{"command", "confirm"}, {"confirmed", true}}) << "\n";
  else if (!g.quiet) std::cout << "confirmed: the applied policy stays\n";
  return exit_code::kOk;
}

/// `rollback --dry-run`: what the restore would change, against the firewall as it is now. No
/// lock, no state-directory change, no firewall change.
static int RollbackDryRun(const GlobalOptions& g, const RollbackOptions& o) {
  auto preview = ops::PreviewRollback(g.state_dir, o.to, MakePlanOptions(g));
  if (!preview.ok()) return ReportError(g, "rollback", preview.status());
  const SnapshotFile* pick = &preview->snapshot;
  const std::vector<Change>* changes = &preview->changes;
  const size_t dropped = preview->dropped;
  const std::string& backend = preview->backend;
  if (Json(g)) {
    json cj = json::array();
    for (const auto& ch : *changes) cj.push_back(ChangeToJson(ch));
    std::cout << DumpJson(Utf8Safe(json{{"command", "rollback"},
                                        {"dry_run", true},
                                        {"snapshot", pick->path},
                                        {"id", pick->seq},
                                        {"backend", backend},
                                        {"changes", cj},
                                        {"snapshots_dropped", dropped}}))
              << "\n";
  } else if (!g.quiet) {
    std::cout << "rollback to snapshot " << pick->seq << " (" << pick->path << "), backend " << backend << ":\n";
    if (changes->empty()) {
      std::cout << "it would change nothing: the firewall already holds that state\n";
    } else {
      std::cout << "it would make " << Plural(changes->size(), "change") << ":\n";
      std::cout << PlanText(*changes, UseColor(), g.verbose);
    }
    if (dropped) std::cout << "and drop " << Plural(dropped, "later rollback point") << "\n";
    std::cout << "dry run: nothing was changed\n";
  }
  return changes->empty() ? exit_code::kOk : exit_code::kChanges;
}

int CmdRollback(const GlobalOptions& g, const RollbackOptions& o) {
  if (Status perm = RequireNetAdmin("rollback"); !perm.ok()) return ReportError(g, "rollback", perm);
  if (o.dry_run) return RollbackDryRun(g, o);
  auto restored = ops::Rollback(g.state_dir, g.lock_timeout, o.to);
  if (!restored.ok()) return ReportError(g, "rollback", restored.status());
  const std::string& newest = *restored;
  // Say when the result no longer matches the policy (a rollback after a repair of hand-made
  // drift brings the hand-made state back).
  std::optional<size_t> differs;
  if (auto l = Load(g); l.ok()) {
    if (auto c = ChooseBackend(g, l->policy, "rollback"); c.ok()) {
      PlanOptions po;
      po.analyze_conflicts = false;
      if (auto plan = c->backend->Plan(l->desired, po); plan.ok()) differs = (*plan)->changes.size();
    }
  }
  if (Json(g)) {
    std::cout << DumpJson(json{{"command", "rollback"},
                               {"restored", newest},
                               {"policy_changes", differs ? json(*differs) : json(nullptr)}})
              << "\n";
  } else if (!g.quiet) {
    std::cout << "rolled back to the state saved in " << newest << "\n";
    if (differs && *differs > 0)
      std::cout << "note: the firewall now differs from the policy " << g.policy << " (" << *differs
                << " changes): 'mailward plan' shows them, 'mailward apply' puts the policy back\n";
  }
  return exit_code::kOk;
}

/// A file's modification time: seconds since the epoch (0 when it cannot be read) and as local
/// text for people.
std::pair<long long, std::string> FileTime(const std::string& path) {
  struct stat st;
  long long when = stat(path.c_str(), &st) == 0 ? static_cast<long long>(st.st_mtime) : 0;
  char buf[64] = "?";
  std::time_t t = static_cast<std::time_t>(when);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&t));
  return {when, buf};
}

/// `mailward status`: the effective state, like `ufw status verbose`: the backend and why, each
/// port of the policy with what it means and whether every path does it (the engine's
/// judgement), drift, the last apply and a pending confirm. Changes nothing.
int CmdStatus(const GlobalOptions& g) {
  auto l = Load(g);
  if (!l.ok()) return ReportError(g, "status", l.status());
  auto c = ChooseBackend(g, l->policy, "status");
  if (!c.ok()) return ReportError(g, "status", c.status());
  auto plan = c->backend->Plan(l->desired, MakePlanOptions(g));
  if (!plan.ok()) return ReportError(g, "status", plan.status());
  JudgePaths(*l, *c, false, plan->get());
  const BackendPlan& bp = **plan;

  json ports = json::array();
  struct Row {
    std::string port, name, meaning, v4, v6;
  };
  std::vector<Row> rows;
  for (const auto& p : l->policy.ports) {
    std::string meaning;
    json allow = json::array();
    if (p.state == PortState::kOpen) {
      meaning = "open";
    } else {
      meaning = std::string("closed") + (p.action == Action::kReject ? " (reject)" : "");
      std::string lists;
      for (const auto& a : p.allow) {
        size_t n = l->policy.allowlists.count(a) ? l->policy.allowlists.at(a).entries.size() : 0;
        allow.push_back({{"name", a}, {"entries", n}});
        lists += (lists.empty() ? "" : ", ") + a + " (" + std::to_string(n) + (n == 1 ? " entry)" : " entries)");
      }
      meaning += lists.empty() ? " to all" : " except " + lists;
    }
    if (p.rate_limit) meaning += ", rate limit " + p.rate_limit->text;
    json fam = json::object();
    std::string cells[2];
    for (int f = 0; f < 2; ++f) {
      const char* fname = f == 0 ? "ipv4" : "ipv6";
      std::vector<const Conflict*> mine;
      for (const auto& x : bp.conflicts)
        if (x.port == p.port && x.family == fname) mine.push_back(&x);
      json cj = json::array();
      for (const auto* x : mine) cj.push_back(std::string(analysis::ConflictKindName(x->kind)) + " (" + x->owner + ")");
      fam[fname] = {{"as_policy", mine.empty()}, {"conflicts", cj}};
      cells[f] = mine.empty() ? "ok" : "NOT: " + std::string(analysis::ConflictKindName(mine.front()->kind)) + " (" + mine.front()->owner + ")" +
                                           (mine.size() > 1 ? " +" + std::to_string(mine.size() - 1) : "");
    }
    ports.push_back({{"port", p.port},
                     {"name", p.name},
                     {"state", p.state == PortState::kOpen ? "open" : "closed"},
                     {"action", p.action == Action::kReject ? "reject" : "drop"},
                     {"allow", allow},
                     {"rate_limit", p.rate_limit ? json(p.rate_limit->text) : json(nullptr)},
                     {"effective", meaning},
                     {"families", fam}});
    rows.push_back({std::to_string(p.port), p.name, meaning, cells[0], cells[1]});
  }

  // The last apply: the newest snapshot was taken just before it.
  json last = nullptr;
  std::string last_text = "never (no snapshot in " + g.state_dir + ")";
  if (auto snaps = ListSnapshots(g.state_dir); snaps.ok() && !snaps->empty()) {
    const auto& sf = snaps->back();
    auto [when, text] = FileTime(sf.path);
    last = {{"snapshot", sf.path}, {"seq", sf.seq}, {"time", when}};
    last_text = text + " (snapshot " + std::to_string(sf.seq) + ": 'mailward rollback' restores the state before it)";
  }
  json pending = nullptr;
  std::string pending_text = "none";
  PendingConfirm pc;
  if (ReadPending(g.state_dir, &pc)) {
    long long left = pc.deadline - static_cast<long long>(std::time(nullptr));
    pending = {{"deadline", pc.deadline}, {"seconds_left", left}, {"snapshot", pc.snapshot}};
    pending_text = "reverts in " + std::to_string(std::max(0LL, left)) + " s unless 'mailward confirm' runs";
  }
  bool enforced = bp.in_sync() && bp.conflicts.empty();
  if (Json(g)) {
    json j = {{"command", "status"},
              {"backend", c->backend->name()},
              {"backend_reason", c->reason},
              {"in_sync", bp.in_sync()},
              {"drift_changes", bp.changes.size()},
              {"enforced", enforced},
              {"ports", ports},
              {"conflicts", json::array()},
              {"source_restrictions", bp.restrictions.size()},
              {"last_apply", last},
              {"pending_confirm", pending},
              {"notes", bp.notes}};
    for (const auto& x : bp.conflicts) j["conflicts"].push_back(ConflictToJson(x));
    std::cout << DumpJson(j) << "\n";
    return exit_code::kOk;
  }
  if (g.quiet) return exit_code::kOk;
  std::cout << "Status: " << (enforced ? "enforced" : bp.in_sync() ? "applied, but not on every path (see below)" : "NOT in sync with the policy")
            << "\nBackend: " << c->backend->name() << " (" << c->reason << ")"
            << "\nDrift: " << (bp.in_sync() ? "none" : std::to_string(bp.changes.size()) + " changes ('mailward plan' lists them)")
            << "\nLast apply: " << last_text << "\nPending confirm: " << pending_text << "\n\n";
  size_t w[5] = {4, 7, 9, 4, 4};
  for (const auto& r : rows) {
    w[0] = std::max(w[0], r.port.size());
    w[1] = std::max(w[1], r.name.size());
    w[2] = std::max(w[2], r.meaning.size());
    w[3] = std::max(w[3], r.v4.size());
  }
  auto pad = [](const std::string& s, size_t n) { return s + std::string(n > s.size() ? n - s.size() : 0, ' '); };
  std::cout << pad("Port", w[0] + 2) << pad("Service", w[1] + 2) << pad("Effective", w[2] + 2) << pad("IPv4", w[3] + 2)
            << "IPv6\n";
  for (const auto& r : rows)
    std::cout << pad(r.port, w[0] + 2) << pad(r.name, w[1] + 2) << pad(r.meaning, w[2] + 2) << pad(r.v4, w[3] + 2) << r.v6
              << "\n";
  if (!bp.conflicts.empty()) std::cout << "\nConflicts:\n" << ConflictsText(bp.conflicts, UseColor());
  if (!bp.restrictions.empty())
    std::cout << "\n" << bp.restrictions.size() << " rules elsewhere block only some sources (ban lists, anti-spoofing); "
              << "'mailward check --verbose' lists them\n";
  for (const auto& n : bp.notes) std::cout << "note: " << n << "\n";
  return exit_code::kOk;
}

/// `mailward snapshots`: the rollback points, oldest first: sequence number, when, the backend
/// that made it, whether its apply committed.
int CmdSnapshots(const GlobalOptions& g) {
  auto snaps = ListSnapshots(g.state_dir);
  if (!snaps.ok()) return ReportError(g, "snapshots", snaps.status());
  json list = json::array();
  std::vector<std::string> times;  // for people, beside each entry
  for (const auto& sf : *snaps) {
    auto [when, when_text] = FileTime(sf.path);
    times.push_back(when_text);
    auto head = ReadFile(sf.path, Follow::kNoSymlinks);
    std::string backend = "unknown";
    if (head.ok()) backend = BackendForSnapshot(*head, BackendConfig{g.state_dir})->name();
    bool committed = !Exists(sf.path.substr(0, sf.path.size() - 5) + ".uncommitted");
    SnapshotInfo info = ReadSnapshotInfo(sf.path);
    auto or_null = [](const std::string& v) { return v.empty() ? json(nullptr) : json(v); };
    list.push_back({{"id", sf.seq}, {"time", when}, {"backend", backend}, {"path", sf.path},
                    {"bytes", head.ok() ? head->size() : 0}, {"committed", committed},
                    {"made_by", or_null(info.command)}, {"user", or_null(info.user)},
                    {"policy", or_null(info.policy)}, {"policy_sha256", or_null(info.policy_sha256)}});
  }
  if (Json(g)) {
    std::cout << DumpJson(Utf8Safe(json{{"command", "snapshots"}, {"state_dir", g.state_dir}, {"snapshots", list}})) << "\n";
    return exit_code::kOk;
  }
  if (g.quiet) return exit_code::kOk;
  if (list.empty()) {
    std::cout << "no snapshots in " << g.state_dir << "/snapshots (no apply through this state directory changed the firewall)\n";
    return exit_code::kOk;
  }
  std::cout << "ID    TIME                     BACKEND    BY      USER             POLICY (sha256)\n";
  for (size_t i = 0; i < list.size(); ++i) {
    const json& j = list[i];
    auto text = [&](const char* k, const char* none) { return j[k].is_string() ? j[k].get<std::string>() : std::string(none); };
    std::string policy = text("policy", "-");
    if (j["policy_sha256"].is_string()) policy += " (" + j["policy_sha256"].get<std::string>().substr(0, 12) + ")";
    char line[1024];
    std::snprintf(line, sizeof line, "%-5llu %-24s %-10s %-7s %-16s %s%s\n",
                  static_cast<unsigned long long>(j["id"].get<uint64_t>()), times[i].c_str(),
                  j["backend"].get<std::string>().c_str(), text("made_by", "?").c_str(), text("user", "?").c_str(),
                  policy.c_str(), j["committed"].get<bool>() ? "" : "  (its apply never committed)");
    std::cout << line;
  }
  std::cout << "'mailward rollback --to ID' restores the state saved before that change; "
               "'mailward rollback --to ID --dry-run' shows what it would change\n";
  return exit_code::kOk;
}


int CmdRemove(const GlobalOptions& g, const RemoveOptions& o) {
  if (Status perm = RequireNetAdmin("remove"); !perm.ok()) return ReportError(g, "remove", perm);
  // Where mailward may own something: the backend asked for, or every one usable here (a host
  // may have changed backends). UFW first: its mangle and nat chains are the iptables backend's
  // too, and each backend plans against what the one before it left.
  std::string want = g.backend.empty() ? "auto" : g.backend;
  std::vector<std::unique_ptr<Backend>> backends = RemoveBackends(want, g.state_dir);
  if (backends.empty())
    return ReportError(g, "remove", Status::Error(Code::kFirewall, "no firewall backend is usable here (nft, iptables, ufw)"));

  std::vector<Backend*> order;
  for (auto& be : backends) order.push_back(be.get());
  auto info = [&] {
    SnapshotInfo info{"remove", CurrentUser(), "", ""};
    if (auto l = Load(g); l.ok()) {
      info.policy = g.policy;
      info.policy_sha256 = HashFiles(l->policy.files);
    }
    return info;
  };
  ops::RemoveOutcome removed =
      ops::Remove(order, want != "auto", o.dry_run, g.state_dir, g.lock_timeout, MakePlanOptions(g), info);
  json per = json::array();
  size_t total = 0;
  bool color = UseColor();
  for (const auto& r : removed.backends) {
    if (!r.skipped.empty()) {
      per.push_back({{"backend", r.backend}, {"skipped", r.skipped}, {"changes", json::array()}});
      continue;
    }
    total += r.changes.size();
    json cj = json::array();
    for (const auto& ch : r.changes) cj.push_back(ChangeToJson(ch));
    per.push_back({{"backend", r.backend},
                   {"changes", cj},
                   {"snapshot", r.snapshot.empty() ? json(nullptr) : json(r.snapshot)}});
    if (!Json(g) && !g.quiet && !r.changes.empty()) {
      std::cout << r.backend << ": " << (o.dry_run ? "would remove" : "removed") << " ("
                << Plural(r.changes.size(), "change") << "):\n"
                << PlanText(r.changes, color, g.verbose);
      if (!r.snapshot.empty()) std::cout << "  saved before: " << r.snapshot << "\n";
    }
  }
  size_t saved = 0;
  for (const auto& r : removed.backends) saved += !r.snapshot.empty();
  if (!removed.error.ok()) return ReportError(g, "remove", removed.error);
  if (Json(g)) {
    std::cout << DumpJson(Utf8Safe(json{{"command", "remove"}, {"dry_run", o.dry_run}, {"backends", per},
                                        {"nothing_to_remove", total == 0}}))
              << "\n";
  } else if (!g.quiet) {
    if (total == 0) std::cout << "nothing of mailward's is in the firewall: nothing to remove\n";
    else if (o.dry_run) std::cout << "dry run: nothing was changed ('mailward remove' does it)\n";
    else {
      std::cout << "mailward's rules are gone; the policy file and " << g.state_dir << " are left in place\n";
      // Each rollback restores the newest rollback point: one backend's removal at a time.
      if (saved == 1) std::cout << "'mailward rollback' puts them back\n";
      else if (saved > 1)
        std::cout << "'mailward rollback' puts them back one backend at a time: run it " << saved << " times\n";
    }
  }
  return o.dry_run && total > 0 ? exit_code::kChanges : exit_code::kOk;
}

}  // namespace mw
