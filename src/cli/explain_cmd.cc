#include "cli/explain_cmd.h"

#include <iostream>
#include <nlohmann/json.hpp>

#include "analysis/judge.h"
#include "backend/host_view.h"
#include "policy/policy.h"
#include "report/report.h"
#include "util/fs.h"

namespace mw {

using nlohmann::json;

namespace {

json StepJson(const analysis::Step& s) {
  return {{"table", s.table}, {"chain", s.chain}, {"rule", s.rule}, {"action", s.action},
          {"certain", s.certainty == analysis::Tri::kYes}};
}

}  // namespace

int CmdExplain(const GlobalOptions& g, const ExplainOptions& o) {
  Cidr src;
  std::string err;
  if (!ParseCidr(o.from, &src, &err) || src.prefix != (src.family == Family::kV4 ? 32 : 128))
    return ReportError(g, "explain",
                       Status::Error(Code::kUsage, "--from " + o.from.substr(0, 64) +
                                                       ": not a single IPv4 or IPv6 address (example: --from 203.0.113.7)"));
  if (!o.family.empty() && o.family != FamilyName(src.family))
    return ReportError(g, "explain", Status::Error(Code::kUsage, "--family " + o.family + " does not match --from " +
                                                                     o.from + " (an " + FamilyName(src.family) + " address)"));
  if (o.port == 0) return ReportError(g, "explain", Status::Error(Code::kUsage, "PORT must be 1-65535"));

  // The policy is optional: without one, explain only explains.
  std::optional<Policy> policy;
  bool default_path = g.policy == GlobalOptions{}.policy;
  if (!(default_path && !Exists(g.policy))) {
    auto files = PolicyFiles(g.policy);
    if (!files.ok()) return ReportError(g, "explain", files.status());
    auto p = LoadPolicy(*files);
    if (!p.ok()) return ReportError(g, "explain", p.status());
    policy = std::move(p.value());
  }

  if (Status perm = RequireNetAdmin("explain"); !perm.ok()) return ReportError(g, "explain", perm);
  auto hv = ReadHostView({});
  if (!hv.ok()) return ReportError(g, "explain", hv.status());
  auto flows = analysis::CandidateFlows(hv->interfaces, src.family, o.port,
                                        hv->forwarding[src.family == Family::kV4 ? 0 : 1]);
  analysis::Flow flow = flows.front();
  if (!o.iif.empty()) {
    bool found = false;
    for (const auto& f : flows)
      if (f.iif && *f.iif == o.iif) {
        flow = f;
        found = true;
      }
    if (!found) {
      flow.iif = o.iif;
      for (const auto& i : hv->interfaces)
        if (i.name == o.iif)
          for (const auto& a : i.addresses)
            if (a.family == src.family) flow.daddr = a.addr;
    }
  }
  flow.saddr = src.addr;
  analysis::Verdict v = analysis::Walk(hv->topo, flow);
  // Every other rule on the way that would block it too (fixing the first reveals the next).
  analysis::WalkOptions all;
  all.all_blockers = true;
  std::vector<analysis::Step> also;
  if (v.reach != analysis::Reach::kReaches) {
    auto va = analysis::Walk(hv->topo, flow, all);
    for (size_t i = 1; i < va.blockers.size(); ++i) also.push_back(va.blockers[i]);
  }

  // What the policy says for this source.
  std::optional<analysis::Reach> expected;
  std::string expectation;
  if (policy)
    for (const auto& p : policy->ports) {
      if (p.port != o.port) continue;
      if (p.state == PortState::kOpen) {
        expected = analysis::Reach::kReaches;
        expectation = "open";
      } else if (InAllowlists(*policy, p, o.from)) {
        expected = analysis::Reach::kReaches;
        expectation = "closed, but " + o.from + " is allowlisted";
      } else {
        expected = analysis::Reach::kBlocked;
        expectation = "closed";
      }
    }
  bool as_policy = !expected || *expected == v.reach;
  std::string to = flow.daddr ? FormatAddr(src.family, *flow.daddr) : "this host";

  if (g.format == "json") {
    json path = json::array();
    for (const auto& s : v.path) path.push_back(StepJson(s));
    json restrictions = json::array();
    for (const auto& r : v.restrictions) restrictions.push_back({{"table", r.table}, {"chain", r.chain}, {"rule", r.rule}});
    json j = {{"command", "explain"},
              {"port", o.port},
              {"from", o.from},
              {"family", FamilyName(src.family)},
              {"to", to},
              {"iif", flow.iif ? json(*flow.iif) : json(nullptr)},
              {"verdict", analysis::ReachName(v.reach)},
              {"destination", v.destination},
              {"path", path},
              {"decided_by", v.decided_by ? StepJson(*v.decided_by) : json(nullptr)},
              {"also_blocked_by", [&] {
                 json a = json::array();
                 for (const auto& s : also) a.push_back(StepJson(s));
                 return a;
               }()},
              {"policy", expected ? json(expectation) : json(nullptr)},
              {"as_policy", as_policy},
              {"notes", hv->notes}};
    std::cout << DumpJson(j) << "\n";
  } else if (!g.quiet) {
    std::cout << "tcp " << o.from << " -> " << to << ":" << o.port
              << (flow.iif ? " arriving on " + *flow.iif : std::string()) << "\n";
    for (const auto& s : v.path)
      std::cout << "  " << s.table << " " << s.chain << ": " << s.rule << " => " << s.action
                << (s.certainty == analysis::Tri::kYes ? "" : " (if it matches: undecidable here)") << "\n";
    std::cout << "verdict: " << analysis::ReachName(v.reach) << " (" << v.destination << ")";
    if (v.decided_by) std::cout << ", decided by " << v.decided_by->table << " chain " << v.decided_by->chain;
    std::cout << "\n";
    for (const auto& s : also)
      std::cout << "also blocked by: " << s.table << " " << s.chain << ": " << s.rule << " => " << s.action << "\n";
    for (const auto& n : hv->notes) std::cout << "note: " << n << "\n";
    if (expected)
      std::cout << "policy: port " << o.port << " is " << expectation << ": "
                << (as_policy ? "as the policy says" : "NOT as the policy says") << "\n";
    else
      std::cout << "policy: " << (policy ? "port " + std::to_string(o.port) + " is not in the policy" : "none read") << "\n";
  }
  return as_policy ? exit_code::kOk : exit_code::kChanges;
}

}  // namespace mw
