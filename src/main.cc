// mailward: keeps the mail ports of a Linux host as a policy declares. Parses arguments and
// dispatches; the commands return SPEC.md's exit codes.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdlib>
#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "cli/audit_cmd.h"
#include "cli/commands.h"
#include "sys/memory.h"
#include "util/timing.h"
#include "cli/explain_cmd.h"
#include "cli/init_cmd.h"
#include "cli/probe_cmd.h"

namespace {

/// A CLI11 check for a number of seconds: finite, from `lo` to `hi` (CLI::Range lets NaN pass).
std::function<std::string(const std::string&)> Seconds(double lo, double hi) {
  return [lo, hi](const std::string& s) -> std::string {
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || v < lo || v > hi)
      return "'" + s + "' is not a number of seconds from " + std::to_string(static_cast<int>(lo)) + " to " +
             std::to_string(static_cast<int>(hi));
    return "";
  };
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// The first word of the command line that is not an option or an option's value: the command
/// the user meant to give.
std::string FirstWord(const CLI::App& app, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") return i + 1 < argc ? argv[i + 1] : "";
    if (a.rfind("-", 0) == 0) {
      if (a.find('=') != std::string::npos) continue;
      const CLI::Option* o = app.get_option_no_throw(a);
      if (o && o->get_type_size_min() > 0) ++i;  // its value follows
      continue;
    }
    return a;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  // A peer that closes a socket mid-write (a TLS server dropping the handshake, a closed stdout
  // pipe) must give EPIPE, not kill mailward before it reports. Children get SIGPIPE back
  // (util/process.cc resets it for them).
  signal(SIGPIPE, SIG_IGN);
  // A policy of 100,000 addresses keeps a few copies of them alive: 20-30 MB filled in 4 KB
  // page faults were a third of a one-address edit's time (sys/memory.h).
  mw::sys::PrepareLargeHeap(64 << 20);
  mw::GlobalOptions g;
  CLI::App app{"mailward: keeps the mail ports of this host as a policy declares", "mailward"};
  app.set_version_flag("--version", std::string("mailward ") + MAILWARD_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--policy", g.policy, "policy file or directory")->capture_default_str();
  app.add_option("--backend", g.backend, "auto | nftables | iptables | ufw (overrides the policy)")
      ->check(CLI::IsMember({"auto", "nftables", "iptables", "ufw"}));
  app.add_option("--state-dir", g.state_dir, "snapshots, cache and lock")->capture_default_str();
  app.add_option("--format", g.format, "text | json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  app.add_flag("--quiet,-q", g.quiet, "print nothing but errors (text format)");
  app.add_flag("--verbose,-v", g.verbose, "list every address of a change");
  app.add_option("--lock-timeout", g.lock_timeout, "seconds to wait for another apply")
      ->capture_default_str()
      ->check(Seconds(0, 86400));

  auto* validate = app.add_subcommand("validate", "check the policy files only (exit 0 valid, 1 invalid)");
  auto* plan = app.add_subcommand("plan", "show what apply would change (0 in sync, 2 changes pending, 1 error)");
  auto* apply = app.add_subcommand("apply", "apply the plan atomically and verify (0 ok, 1 error, 3 rolled back)");
  mw::ApplyOptions apply_opts;
  apply->add_option("--confirm", apply_opts.confirm_seconds,
                    "revert by itself after SECONDS unless 'mailward confirm' runs")->check(CLI::Range(1, 86400));
  apply->add_flag("--auto-confirm", apply_opts.auto_confirm,
                  "with --confirm: confirm once the post-apply checks pass, else revert at the deadline")
      ->needs(apply->get_option("--confirm"));
  apply->add_flag("--force", apply_opts.force, "apply even when the policy closes the port of an SSH session");
  bool apply_no_probe = false, check_no_probe = false;
  apply->add_flag("--no-probe", apply_no_probe, "skip the local probes of the open ports after applying");
  auto* confirm = app.add_subcommand("confirm", "keep the policy of a pending 'apply --confirm' (0, 1)");
  auto* check = app.add_subcommand("check", "drift check: plan + Dovecot audit + local probes, changes nothing (0 clean, 2 drift/conflicts/findings/probe failures, 1 error)");
  mw::CheckOptions check_opts;
  check->add_flag("--no-probe", check_no_probe, "skip the local probes of the open ports");
  check->add_option("--metrics-file", check_opts.metrics_file,
                    "write Prometheus textfile-collector metrics here (atomically)");
  check->add_option("--fail-on", check_opts.fail_on,
                    "Dovecot findings at this severity or worse fail the check; milder ones are only reported")
      ->check(CLI::IsMember({"critical", "high", "medium", "low", "info"}))
      ->capture_default_str();
  auto* rollback = app.add_subcommand("rollback", "restore the state before the last apply (0, 1)");
  mw::RollbackOptions rollback_opts;
  uint64_t rollback_to = 0;
  rollback->add_option("--to", rollback_to, "the snapshot ID to restore (see 'mailward snapshots'); later ones are dropped")
      ->check(CLI::Range(uint64_t{1}, UINT64_MAX));
  rollback->add_flag("--dry-run", rollback_opts.dry_run, "show what the rollback would change; change nothing");
  auto* remove = app.add_subcommand("remove", "take away everything mailward owns in the firewall, after a snapshot (0, 2 with --dry-run when something would go, 1)");
  mw::RemoveOptions remove_opts;
  remove->add_flag("--dry-run", remove_opts.dry_run, "show what would be removed; change nothing");
  auto* snapshots = app.add_subcommand("snapshots", "list the rollback points (0, 1)");
  auto* init = app.add_subcommand("init", "write a starter policy from what this host runs (0, 1)");
  mw::InitOptions init_opts;
  init->add_option("--output,-o", init_opts.output, "where to write it (default: --policy; '-' for stdout)");
  init->add_flag("--force", init_opts.force, "replace an existing file");
  auto* audit = app.add_subcommand("audit", "audits a server's configuration");
  audit->require_subcommand(1);
  auto* audit_dovecot = audit->add_subcommand("dovecot", "Dovecot audit (0 clean, 2 findings, 1 error)");
  mw::AuditOptions audit_opts;
  audit_dovecot->add_option("--config", audit_opts.config,
                            "dovecot.conf (default: the policy's dovecot.config, else /etc/dovecot/dovecot.conf)");
  audit_dovecot->add_option("--engine", audit_opts.engine,
                            "auto (doveconf when installed), doveconf (its values, the parser's file:line) or builtin")
      ->check(CLI::IsMember({"auto", "doveconf", "builtin"}))
      ->capture_default_str();
  audit_dovecot->add_flag("--fix", audit_opts.fix,
                          "write a hardening drop-in into conf.d/, check it with doveconf, and say how to reload");
  auto* probe = app.add_subcommand("probe", "probe the policy's ports on HOST (0 as the policy says, 2 not, 1 error)");
  mw::ProbeOptions probe_opts;
  probe->add_option("host", probe_opts.hosts, "hosts to probe (default: this host's addresses)");
  probe->add_option("--timeout", probe_opts.timeout_s, "seconds per network step")->capture_default_str()->check(Seconds(0, 3600));
  probe->add_option("--deadline", probe_opts.deadline_s, "seconds for one whole probe")->capture_default_str()->check(Seconds(0, 86400));
  probe->add_option("--source", probe_opts.source, "source address to probe from (judged against the allowlists)");
  auto* status = app.add_subcommand("status", "the effective state of each port of the policy on every path, drift, last apply (0, 1)");
  auto* explain = app.add_subcommand(
      "explain", "walk one connection through every table and hook of the live firewall (0 as the policy says, 2 not, 1 error)");
  mw::ExplainOptions explain_opts;
  explain->add_option("port", explain_opts.port, "TCP destination port")->required()->check(CLI::Range(1, 65535));
  explain->add_option("--from", explain_opts.from, "source address of the connection")->required();
  explain->add_option("--family", explain_opts.family, "ipv4 | ipv6 (must match --from)")
      ->check(CLI::IsMember({"ipv4", "ipv6"}));
  explain->add_option("--iif", explain_opts.iif, "interface it arrives on (default: the first non-loopback one)");
  for (auto* sc : {validate, plan, apply, check, rollback, audit, audit_dovecot, probe, confirm, explain, status, snapshots, init, remove}) sc->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // A word that is no command: say the nearest one rather than CLI11's "A subcommand is required".
    std::string message = e.what();
    std::string word = FirstWord(app, argc, argv);
    std::string command;
    if (word.empty() && message.find("subcommand is required") != std::string::npos)
      message = "no command given: mailward COMMAND, for example 'mailward status' or 'mailward plan' "
                "(mailward --help lists the commands)";
    if (!word.empty()) {
      bool known = false;
      for (const auto* sc : app.get_subcommands([](const CLI::App*) { return true; })) known |= sc->get_name() == word;
      if (known) {
        command = word;
      } else {
        std::string best;
        size_t best_d = 3;
        for (const auto* sc : app.get_subcommands([](const CLI::App*) { return true; })) {
          size_t d = EditDistance(word, sc->get_name());
          if (d < best_d || (sc->get_name().rfind(word, 0) == 0 && best.empty())) {
            best_d = std::min(d, best_d);
            best = sc->get_name();
          }
        }
        message = "unknown command '" + word + "'" + (best.empty() ? "" : "; did you mean '" + best + "'?") +
                  " (mailward --help lists the commands)";
      }
    }
    bool json = false;
    for (int i = 1; i < argc; ++i)
      if ((std::string(argv[i]) == "--format" && i + 1 < argc && std::string(argv[i + 1]) == "json") ||
          std::string(argv[i]) == "--format=json")
        json = true;
    if (json) {
      nlohmann::json j = {{"command", command.empty() ? nlohmann::json(nullptr) : nlohmann::json(command)},
                          {"error", {{"kind", "usage"}, {"message", message}}}};
      std::cout << j.dump(2) << "\n";
    }
    std::cerr << "mailward" << (command.empty() ? "" : " " + command) << ": error: " << message << "\n";
    if (!command.empty()) std::cerr << "Run 'mailward " << command << " --help' for its options.\n";
    return 1;
  }
  // Commands return errors as values; an exception here is a bug, reported as an error (exit 1)
  // rather than an abort.
  try {
    mw::Phase phase("command");
    if (*validate) return mw::CmdValidate(g);
    if (*plan) return mw::CmdPlan(g);
    // Commands that read or change the firewall say at once when they cannot (before reading a
    // policy a non-root user may not even be allowed to read).
    for (auto* sc : {plan, apply, confirm, check, rollback, remove, status, explain})
      if (*sc) {
        if (mw::Status perm = mw::RequireNetAdmin(sc->get_name()); !perm.ok()) return mw::ReportError(g, sc->get_name(), perm);
      }
    apply_opts.probe = !apply_no_probe;
    check_opts.probe = !check_no_probe;
    if (*apply) return mw::CmdApply(g, apply_opts);
    if (*confirm) return mw::CmdConfirm(g);
    if (*check) return mw::CmdCheck(g, check_opts);
    if (*rollback) {
      if (rollback->count("--to")) rollback_opts.to = rollback_to;
      return mw::CmdRollback(g, rollback_opts);
    }
    if (*snapshots) return mw::CmdSnapshots(g);
    if (*remove) return mw::CmdRemove(g, remove_opts);
    if (*init) return mw::CmdInit(g, init_opts);
    if (*audit_dovecot) return mw::CmdAuditDovecot(g, audit_opts);
    if (*probe) return mw::CmdProbe(g, probe_opts);
    if (*explain) return mw::CmdExplain(g, explain_opts);
    if (*status) return mw::CmdStatus(g);
  } catch (const std::exception& e) {
    std::cerr << "mailward: internal error: " << e.what() << "\n";
  }
  return 1;
}
