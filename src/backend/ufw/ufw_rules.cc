#include "backend/ufw/ufw_rules.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <sstream>

#include "backend/ipt/ipt_rules.h"
#include "util/fs.h"
#include "util/text.h"

namespace mw::ufw {
namespace {

constexpr const char* kRulesMark = "### RULES ###";
constexpr const char* kEndMark = "### END RULES ###";
constexpr const char* kTupleMark = "### tuple ### ";

/// The package's user rules file (Debian's /usr/share/ufw/user.rules): "### RULES ###" followed
/// by the rate-limit chains' rules (IPv4 only) and COMMIT, no tuples, no END marker.
Result<UserRules> ParsePristine(const std::string& text, size_t start, const std::string& path) {
  UserRules r;
  r.pristine = true;
  std::string head = text.substr(0, start);
  std::string rest = text.substr(start + std::string(kRulesMark).size() + 1);
  const std::string prefix = head.find(":ufw6-user-input ") != std::string::npos ? "ufw6" : "ufw";
  // mailward's `limit` rules jump to <prefix>-user-limit(-accept): declare them as UFW does.
  for (const char* c : {"-user-limit", "-user-limit-accept"})
    if (head.find(":" + prefix + c + " ") == std::string::npos) head += ":" + prefix + c + " - [0:0]\n";
  r.head = head + kRulesMark + "\n";
  size_t commit = rest.rfind("COMMIT");
  if (commit == std::string::npos) return Status::Io(path + ": not a UFW user rules file (no COMMIT)");
  std::string limits = rest.substr(0, commit);
  std::istringstream in(limits);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("-A " + prefix + "-user-limit", 0) != 0)
      return Status::Io(path + ": an unexpected line in UFW's rules without '### END RULES ###': " + line);
    kept += line + "\n";
  }
  if (kept.find("-A " + prefix + "-user-limit -j REJECT") == std::string::npos)
    kept += "-A " + prefix + "-user-limit -j REJECT\n";
  if (kept.find("-A " + prefix + "-user-limit-accept -j ACCEPT") == std::string::npos)
    kept += "-A " + prefix + "-user-limit-accept -j ACCEPT\n";
  r.tail = std::string(kEndMark) + "\n\n### LOGGING ###\n### END LOGGING ###\n\n### RATE LIMITING ###\n" + kept +
           "### END RATE LIMITING ###\n" + rest.substr(commit);
  return r;
}

}  // namespace

bool UfwRule::ours() const {
  auto w = SplitWords(tuple);
  if (w.empty() || w.back() != std::string("comment=") + kCommentHex) return false;
  // A hand-edited tuple with a second comment is not one mailward wrote: the admin's.
  return std::count_if(w.begin(), w.end(), [](const std::string& x) { return x.rfind("comment=", 0) == 0; }) == 1;
}

Result<UserRules> ParseUserRules(const std::string& text, const std::string& path) {
  UserRules r;
  size_t start = text.find(std::string(kRulesMark) + "\n");
  size_t end = text.find(kEndMark);
  if (start == std::string::npos || (end != std::string::npos && end < start))
    return Status::Io(path + ": not a UFW user rules file (no '### RULES ###' ... '### END RULES ###' section)");
  if (end == std::string::npos) return ParsePristine(text, start, path);
  start += std::string(kRulesMark).size() + 1;
  r.head = text.substr(0, start);
  r.tail = text.substr(end);
  std::istringstream in(text.substr(start, end - start));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(kTupleMark, 0) == 0) {
      r.rules.push_back(UfwRule{line.substr(std::string(kTupleMark).size()), {}});
    } else if (!line.empty() && line[0] != '#') {
      if (r.rules.empty()) return Status::Io(path + ": a rule line before any '### tuple ###' line: '" + Excerpt(line) + "'");
      r.rules.back().lines.push_back(line);
    }
  }
  return r;
}

std::string RenderUserRules(const UserRules& r) {
  std::string out = r.head + "\n";
  for (const auto& rule : r.rules) {
    out += kTupleMark + rule.tuple + "\n";
    for (const auto& l : rule.lines) out += l + "\n";
    out += "\n";
  }
  out += r.tail;
  return out;
}

std::vector<UfwRule> DesiredRules(const Ruleset& rs, Family f, const std::vector<UfwRule>& admin,
                                  std::vector<std::string>* notes) {
  const std::string chain = f == Family::kV4 ? "ufw-user-input" : "ufw6-user-input";
  const std::string prefix = f == Family::kV4 ? "ufw" : "ufw6";
  const std::string any = f == Family::kV4 ? "0.0.0.0/0" : "::/0";
  const std::string fam = f == Family::kV4 ? "" : " (v6)";
  const std::string comment = std::string(" comment=") + kCommentHex;
  std::vector<UfwRule> out;
  std::map<uint16_t, const RuleSpec*> limited;
  for (const auto& r : rs.rules)
    if (!r.meter_set.empty() && r.limit && (!r.family || *r.family == f)) limited[r.port] = &r;

  auto admin_allows = [&](uint16_t port) {
    for (const auto& a : admin) {
      auto w = SplitWords(a.tuple);
      if (w.size() >= 7 && w[0] == "allow" && (w[1] == "tcp" || w[1] == "any") && w[2] == std::to_string(port) &&
          w[3] == any && w[4] == "any" && w[5] == any && w[6] == "in")
        return true;
    }
    return false;
  };
  if (notes && f == Family::kV4)
    for (const auto& [port, r] : limited) {
      bool open = std::any_of(rs.open_ports.begin(), rs.open_ports.end(), [&](uint16_t p) { return p == port; });
      if (!open)
        notes->push_back("UFW cannot rate-limit the allowlisted sources of closed port " + std::to_string(port) +
                         ": its rate_limit is not applied with backend ufw");
    }
  for (const auto& r : rs.rules) {
    if (r.loopback || !r.port || !r.meter_set.empty()) continue;  // UFW's before.rules accept lo
    if (r.family && *r.family != f) continue;
    std::string p = std::to_string(r.port);
    std::string base = "-A " + chain + " -p tcp --dport " + p;
    if (r.verdict == Verdict::kAccept && r.saddr_set.empty()) {  // an open port
      if (auto it = limited.find(r.port); it != limited.end()) {
        out.push_back({"limit tcp " + p + " " + any + " any " + any + " in" + comment,
                       {base + " -m conntrack --ctstate NEW -m recent --set",
                        base + " -m conntrack --ctstate NEW -m recent --update --seconds 30 --hitcount 6 -j " + prefix +
                            "-user-limit",
                        base + " -j " + prefix + "-user-limit-accept"}});
        if (notes && f == Family::kV4)
          notes->push_back("UFW rate-limits with its fixed 'limit' (6 new connections per 30 s per source); port " + p +
                           " asks for " + it->second->limit->text);
        continue;
      }
      if (admin_allows(r.port)) {
        if (notes) notes->push_back("port " + p + "/tcp" + fam + " is already allowed by the admin's UFW rule: not duplicated");
        continue;
      }
      out.push_back({"allow tcp " + p + " " + any + " any " + any + " in" + comment, {base + " -j ACCEPT"}});
      continue;
    }
    if (r.verdict == Verdict::kAccept) {  // allowlisted sources of a closed port
      const AddrSet* set = rs.FindSet(r.saddr_set);
      if (!set) continue;
      auto add = [&](const std::string& src) {
        out.push_back({"allow tcp " + p + " " + any + " any " + src + " in" + comment, {base + " -s " + src + " -j ACCEPT"}});
      };
      if (set->spec.kind == SetSpec::Kind::kAllowHosts) {
        for (const auto& iv : set->intervals) add(FormatAddr(f, iv.start));
      } else {
        for (const auto& iv : set->intervals)
          for (const auto& c : IntervalToCidrs(f, iv)) add(FormatCidr(c));
      }
      continue;
    }
    // A closed port.
    if (r.verdict == Verdict::kReject)
      out.push_back({"reject tcp " + p + " " + any + " any " + any + " in" + comment,
                     {base + " -j REJECT --reject-with tcp-reset"}});
    else
      out.push_back({"deny tcp " + p + " " + any + " any " + any + " in" + comment, {base + " -j DROP"}});
  }
  return out;
}

std::string DescribeTuple(const std::string& tuple) {
  auto w = SplitWords(tuple);
  if (w.size() < 7) return tuple;
  std::string out = w[0] + " " + w[2] + "/" + w[1];
  bool any_src = w[5] == "0.0.0.0/0" || w[5] == "::/0";
  if (!any_src) out += " from " + w[5];
  if (w[3] == "::/0") out += " (v6)";
  if (w[6] != "in") out += " " + w[6];
  for (const auto& x : w)
    if (x.rfind("comment=", 0) == 0) {
      // UFW writes the comment hex-encoded; a hand-edited one may not be hex at all.
      std::string hex = x.substr(8), text;
      bool ok = hex.size() % 2 == 0;
      for (size_t i = 0; ok && i + 1 < hex.size(); i += 2) {
        unsigned v = 0;
        auto r = std::from_chars(hex.data() + i, hex.data() + i + 2, v, 16);
        ok = r.ec == std::errc() && r.ptr == hex.data() + i + 2;
        text += static_cast<char>(v);
      }
      out += "  # " + Excerpt(ok ? text : x);
    }
  return out;
}

bool LoadedMatches(const std::vector<std::string>& file_lines, const std::vector<std::string>& loaded) {
  if (file_lines.size() != loaded.size()) return false;
  // Addresses as one form: iptables-save prints "10.1.1.1/32" for UFW's "10.1.1.1".
  auto words = [](const std::string& line) {
    auto w = ipt::Tokenize(line);
    for (size_t i = 0; i + 1 < w.size(); ++i)
      if (w[i] == "-s" || w[i] == "-d" || w[i] == "--source" || w[i] == "--destination") {
        std::string c = ipt::CanonicalEntry(w[i + 1]);
        if (!c.empty()) w[i + 1] = c;
      }
    return w;
  };
  for (size_t i = 0; i < file_lines.size(); ++i) {
    auto want = words(file_lines[i]);
    auto have = words(loaded[i]);
    std::multiset<std::string> h(have.begin(), have.end());
    for (const auto& t : want) {
      auto it = h.find(t);
      if (it == h.end()) return false;
      h.erase(it);
    }
  }
  return true;
}

}  // namespace mw::ufw
