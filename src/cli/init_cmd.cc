#include "cli/init_cmd.h"

#include <sys/socket.h>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "policy/policy.h"
#include "report/report.h"
#include "sys/env.h"
#include "util/fs.h"

namespace mw {

std::vector<Listener> ParseListeners(const std::string& text) {
  std::vector<Listener> out;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string sl, local, remote, st;
    if (!(ls >> sl >> local >> remote >> st) || st != "0A") continue;  // 0A: LISTEN
    size_t colon = local.find(':');
    if (colon == std::string::npos) continue;
    std::string addr = local.substr(0, colon);
    Listener l;
    l.port = static_cast<uint16_t>(std::strtoul(local.c_str() + colon + 1, nullptr, 16));
    // 127.0.0.1 is 0100007F in /proc's byte order; ::1 is 00000000000000000000000001000000.
    l.loopback_only = addr == "0100007F" || addr == "00000000000000000000000001000000";
    out.push_back(l);
  }
  return out;
}

std::string StarterPolicy(const std::vector<Listener>& listening, bool have_dovecot, const std::string& ssh_client) {
  std::map<uint16_t, bool> open_to_network;  // port -> listens beyond loopback
  for (const auto& l : listening) open_to_network[l.port] = open_to_network[l.port] || !l.loopback_only;
  struct Known {
    const char* name;
    uint16_t port;
    bool cleartext;
    const char* what;
  };
  static const Known kKnown[] = {
      {"smtp", 25, false, "SMTP between mail servers: must stay open to receive mail"},
      {"pop3", 110, true, "POP3, cleartext until STLS"},
      {"imap", 143, true, "IMAP, cleartext until STARTTLS"},
      {"submissions", 465, false, "submission over implicit TLS"},
      {"submission", 587, false, "submission, STARTTLS"},
      {"imaps", 993, false, "IMAP over implicit TLS"},
      {"pop3s", 995, false, "POP3 over implicit TLS"},
      {"managesieve", 4190, true, "ManageSieve, cleartext until STARTTLS"},
  };
  std::ostringstream o;
  o << "# mailward policy written by 'mailward init' from what this host runs now.\n"
       "# Review it, then: mailward validate; mailward plan; mailward apply --confirm 60\n"
       "# Ports not named here are never touched (your SSH port stays as it is).\n"
       "version: 1\n"
       "backend: auto                 # auto | nftables | iptables | ufw\n"
       "allowlists:\n"
       "  trusted:                    # who may still use the cleartext ports: your office, VPN...\n";
  if (!ssh_client.empty())
    o << "    - " << ssh_client << "     # the address this SSH session comes from\n";
  else
    o << "    - 192.0.2.0/24            # TEST-NET placeholder: replace with your networks\n";
  o << "ports:\n";
  bool any = false;
  for (const auto& k : kKnown) {
    auto it = open_to_network.find(k.port);
    if (it == open_to_network.end()) continue;
    any = true;
    o << "  " << k.name << ":" << std::string(12 - std::string(k.name).size(), ' ') << "# " << k.port << ": " << k.what
      << (it->second ? "" : " (listens on loopback only now)") << "\n";
    if (k.cleartext && k.port != 4190)
      o << "    state: closed\n    allow: [trusted]\n";
    else
      o << "    state: open\n";
    if (k.port == 993 || k.port == 995 || k.port == 465 || k.port == 587)
      o << "    # rate_limit: 30/minute  # new connections per source address\n";
  }
  if (!any)
    o << "  # no mail port listens on this host now; the usual hardening for a Dovecot host:\n"
         "  imap:\n    state: closed\n    allow: [trusted]\n"
         "  pop3:\n    state: closed\n    allow: [trusted]\n"
         "  imaps:\n    state: open\n";
  if (have_dovecot)
    o << "dovecot:\n  config: /etc/dovecot/dovecot.conf   # audited by 'mailward check'\n  ignore: []\n";
  else
    o << "# dovecot:\n#   config: /etc/dovecot/dovecot.conf   # add to audit Dovecot in 'mailward check'\n";
  return o.str();
}

int CmdInit(const GlobalOptions& g, const InitOptions& opts) {
  std::string out = opts.output.empty() ? g.policy : opts.output;
  std::vector<Listener> listening;
  for (int family : {AF_INET, AF_INET6}) {
    auto t = sys::RealEnv().TcpTable(family);
    if (t.ok())
      for (auto& l : ParseListeners(*t)) listening.push_back(l);
  }
  std::string client;
  if (const char* ssh = std::getenv("SSH_CONNECTION")) {
    std::istringstream ss(ssh);
    ss >> client;
    Cidr c;
    std::string err;
    if (!ParseCidr(client, &c, &err)) client.clear();
  }
  std::string text = StarterPolicy(listening, Exists("/etc/dovecot/dovecot.conf"), client);
  auto valid = ParsePolicyText(text, "starter policy");
  if (!valid.ok()) return ReportError(g, "init", valid.status().WithContext("the starter policy is invalid (a bug)"));
  if (out == "-") {
    std::cout << text;
    return exit_code::kOk;
  }
  if (Exists(out) && !opts.force)
    return ReportError(g, "init", Status::Error(Code::kRefused, out + " exists: not overwritten (--force replaces it; "
                                                                      "--output PATH writes elsewhere, '-' to stdout)"));
  size_t slash = out.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    Status d = MakeDirs(out.substr(0, slash));
    if (!d.ok()) return ReportError(g, "init", d);
  }
  Status s = WriteFileAtomic(out, text, Durability::kFsync, 0644);
  if (!s.ok()) return ReportError(g, "init", s);
  if (g.format == "json") {
    std::cout << DumpJson(nlohmann::json{{"command", "init"}, {"written", out}, {"ports", valid->ports.size()}}) << "\n";
  } else if (!g.quiet) {
    std::cout << "wrote " << out << " (" << valid->ports.size() << " ports); review it, then:\n"
              << "  mailward --policy " << out << " plan\n  mailward --policy " << out << " apply --confirm 60\n";
  }
  return exit_code::kOk;
}

}  // namespace mw
