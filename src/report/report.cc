#include <cstring>
#include "report/report.h"

#include "util/text.h"

#include <unistd.h>

#include <cstdlib>

namespace mw {

bool UseColor() { return isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR"); }

const char* SeverityRankColor(const std::string& s) {
  if (s == "critical") return "\033[1;31m";
  if (s == "high") return "\033[31m";
  if (s == "medium") return "\033[33m";
  return "\033[36m";
}

nlohmann::json ChangeToJson(const Change& c) {
  nlohmann::json j = {{"op", ChangeOpName(c.op)}, {"object", ChangeObjectName(c.object)}, {"name", c.name},
                      {"detail", c.detail}};
  if (c.object == ChangeObject::kElements) {
    j["count"] = c.count;
    j["items"] = c.items;
    j["items_truncated"] = c.items.size() < c.count;
  }
  return j;
}

nlohmann::json ConflictToJson(const Conflict& c) {
  nlohmann::json j = {{"port", c.port},       {"family", c.family}, {"kind", analysis::ConflictKindName(c.kind)},   {"certainty", CertaintyName(c)},
                      {"owner", c.owner},     {"where", c.where},   {"reason", c.reason}, {"fix", c.fix}};
  if (!c.source.empty()) j["source"] = c.source;
  if (!c.destination.empty()) j["destination"] = c.destination;
  return j;
}

nlohmann::json Utf8Safe(nlohmann::json j) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (!IsValidUtf8(s)) j = ToValidUtf8(s);
  } else if (j.is_array()) {
    for (auto& e : j) e = Utf8Safe(std::move(e));
  } else if (j.is_object()) {
    bool keys_ok = true;
    for (auto it = j.begin(); it != j.end(); ++it) {
      keys_ok &= IsValidUtf8(it.key());
      it.value() = Utf8Safe(std::move(it.value()));
    }
    if (!keys_ok) {
      nlohmann::json out = nlohmann::json::object();
      for (auto it = j.begin(); it != j.end(); ++it) out[ToValidUtf8(it.key())] = std::move(it.value());
      j = std::move(out);
    }
  }
  return j;
}

std::string DumpJson(const nlohmann::json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json PolicySummaryJson(const Policy& p) {
  nlohmann::json ports = nlohmann::json::array();
  for (const auto& pp : p.ports) {
    nlohmann::json j = {{"name", pp.name},
                        {"port", pp.port},
                        {"state", pp.state == PortState::kOpen ? "open" : "closed"},
                        {"action", pp.action == Action::kDrop ? "drop" : "reject"},
                        {"allow", pp.allow},
                        {"rate_limit", nullptr}};
    if (pp.rate_limit) j["rate_limit"] = pp.rate_limit->text;
    ports.push_back(j);
  }
  nlohmann::json lists = nlohmann::json::object();
  for (const auto& [name, al] : p.allowlists) lists[name] = {{"entries", al.entries.size()}, {"files", al.files}};
  return Utf8Safe({{"files", p.files},
          {"backend", BackendName(p.backend)},
          {"ports", ports},
          {"allowlists", lists},
          {"dovecot", p.dovecot.enabled ? nlohmann::json{{"config", p.dovecot.config}, {"ignore", p.dovecot.ignore}}
                                        : nlohmann::json(nullptr)}});
}

std::string PlanText(const std::vector<Change>& changes, bool color, bool verbose) {
  std::string out;
  size_t width = 0;
  for (const auto& c : changes) width = std::max(width, std::strlen(ChangeObjectName(c.object)) + 1 + c.name.size());
  width = std::min<size_t>(width, 48);
  for (const auto& c : changes) {
    const char* sign = c.op == ChangeOp::kAdd ? "+" : c.op == ChangeOp::kDelete ? "-" : "~";
    const char* col = !color ? "" : c.op == ChangeOp::kAdd ? "\033[32m" : c.op == ChangeOp::kDelete ? "\033[31m" : "\033[33m";
    std::string head = std::string(ChangeObjectName(c.object)) + " " + c.name;
    std::string line = "  " + std::string(col) + sign + " " + head + (color ? "\033[0m" : "");
    if (!c.detail.empty()) line += std::string(head.size() < width ? width - head.size() : 0, ' ') + "  " + c.detail;
    if (c.object == ChangeObject::kElements && !c.items.empty()) {
      size_t shown = verbose ? c.items.size() : std::min<size_t>(c.items.size(), 5);
      line += ": ";
      for (size_t i = 0; i < shown; ++i) line += (i ? ", " : "") + c.items[i];
      if (shown < c.count) line += ", ... (" + std::to_string(c.count - shown) + " more)";
    }
    out += line + "\n";
  }
  return out;
}

std::string ConflictsText(const std::vector<Conflict>& conflicts, bool color) {
  std::string out;
  for (const auto& c : conflicts) {
    out += std::string("  ") + (color ? "\033[33m!\033[0m " : "! ") + std::to_string(c.port) + "/" + c.family + " " +
           analysis::ConflictKindName(c.kind) + " (" + CertaintyName(c) + ")" + (c.source.empty() ? "" : " for " + c.source) + ", owner " + c.owner +
           ": " + c.where + ": " + c.reason + "\n";
    if (!c.fix.empty()) out += "      fix: " + c.fix + "\n";
  }
  return out;
}

}  // namespace mw
