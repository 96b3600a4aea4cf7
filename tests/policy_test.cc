#include "policy/policy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "model/ruleset.h"

namespace mw {
namespace {

/// A temporary directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mwpolicyXXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string p = path_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(p).parent_path());
    std::ofstream(p) << text;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ErrorOf(const std::string& text) {
  auto r = ParsePolicyText(text, "p.yaml");
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? "" : r.status().message();
}

#define EXPECT_HAS(hay, needle) EXPECT_NE((hay).find(needle), std::string::npos) << (hay)

const char* kGood = R"(version: 1
backend: nftables
allowlists:
  office:
    - 198.51.100.0/24
    - 2001:db8:10::/48
ports:
  imap:
    state: closed
    allow: [office]
  imaps:
    state: open
    rate_limit: 20/minute
  pop3:
    state: closed
    action: reject
  sieve-alt:
    state: closed
    port: 2000
dovecot:
  config: /etc/dovecot/dovecot.conf
  ignore: [auth_debug]
)";

TEST(Policy, ParsesTheSpecExample) {
  auto r = ParsePolicyText(kGood);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Policy& p = *r;
  EXPECT_EQ(p.backend, BackendKind::kNftables);
  ASSERT_EQ(p.ports.size(), 4u);
  EXPECT_EQ(p.ports[0].port, 110);  // sorted by port
  EXPECT_EQ(p.ports[0].action, Action::kReject);
  EXPECT_EQ(p.ports[1].port, 143);
  EXPECT_EQ(p.ports[1].allow, std::vector<std::string>{"office"});
  EXPECT_EQ(p.ports[2].port, 993);
  ASSERT_TRUE(p.ports[2].rate_limit);
  EXPECT_EQ(p.ports[2].rate_limit->count, 20u);
  EXPECT_EQ(p.ports[2].rate_limit->unit_seconds, 60u);
  EXPECT_EQ(p.ports[3].port, 2000);
  EXPECT_EQ(p.allowlists.at("office").entries.size(), 2u);
  EXPECT_TRUE(p.dovecot.enabled);
  EXPECT_EQ(p.dovecot.ignore, std::vector<std::string>{"auth_debug"});
}

TEST(Policy, ErrorsNameFileLineColumn) {
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imap:\n    state: shut\n"), "p.yaml:4:12: state must be 'open' or 'closed'");
  EXPECT_HAS(ErrorOf("version: 1\nportz: {}\n"), "p.yaml:2:1: unknown key 'portz'");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imap: {state: open, colour: red}\n"), "p.yaml:3:23: unknown key 'colour'");
}

TEST(Policy, RejectsDuplicateKeys) {
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imap: {state: open}\n  imap: {state: closed}\n"),
             "p.yaml:4:3: duplicate key 'imap' (first at line 3)");
  EXPECT_HAS(ErrorOf("version: 1\nversion: 1\n"), "duplicate key 'version'");
}

TEST(Policy, RejectsBadAddresses) {
  EXPECT_HAS(ErrorOf("version: 1\nallowlists:\n  a: [198.51.100.256]\n"), "p.yaml:3:7: allowlist 'a': '198.51.100.256' is not");
  EXPECT_HAS(ErrorOf("version: 1\nallowlists:\n  a: [198.51.100.0/40]\n"), "too long");
  EXPECT_HAS(ErrorOf("version: 1\nallowlists:\n  a: ['2001:db8::/200']\n"), "too long");
  EXPECT_HAS(ErrorOf("version: 1\nallowlists:\n  a: ['2001:db8:::1']\n"), "not an IPv4 or IPv6");
  EXPECT_HAS(ErrorOf("version: 1\nallowlists:\n  a: [10.0.0.1/8]\n"), "host bits");
  EXPECT_HAS(ErrorOf("version: 1\nallowlists:\n  a: [[10.0.0.1]]\n"), "each entry must be an address");
  EXPECT_HAS(ErrorOf("version: 1\nallowlists:\n  'bad name!': []\n"), "allowlist name");
}

TEST(Policy, RejectsPortsOutOfRangeAndUnknownServices) {
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  x: {state: open, port: 70000}\n"), "p.yaml:3:26: port '70000' is not a number from 1 to 65535");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  x: {state: open, port: 0}\n"), "not a number from 1 to 65535");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  x: {state: open, port: 14x}\n"), "not a number");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  gopher: {state: open}\n"), "p.yaml:3:3: 'gopher' is not a known service");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imap: {port: 143}\n"), "needs 'state: open'");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imap: {state: closed, action: deny}\n"), "action must be 'drop' or 'reject'");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imaps: {state: open, rate_limit: fast}\n"), "rate_limit 'fast'");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imaps: {state: open, rate_limit: 0/minute}\n"), "rate_limit");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imap: {state: open}\n  other: {state: open, port: 143}\n"),
             "port 143 is already defined as 'imap' at p.yaml:3:3");
}

TEST(Policy, RejectsUnknownAllowlists) {
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imap: {state: closed, allow: [office]}\n"),
             "p.yaml:3:33: unknown allowlist 'office' (no allowlists are defined)");
  EXPECT_HAS(ErrorOf("version: 1\nallowlists: {home: []}\nports:\n  imap: {state: closed, allow: [office]}\n"),
             "(defined: home)");
  EXPECT_HAS(ErrorOf("version: 1\nallowlists: {a: []}\nports:\n  imap: {state: open, allow: [a]}\n"),
             "'allow' only applies to closed ports");
}

TEST(Policy, RejectsVersionAndEmptyAndSyntax) {
  EXPECT_HAS(ErrorOf("version: 2\n"), "p.yaml:1:10: unsupported version '2'");
  EXPECT_HAS(ErrorOf("ports: {}\n"), "missing 'version: 1'");
  EXPECT_HAS(ErrorOf(""), "p.yaml: policy file is empty");
  EXPECT_HAS(ErrorOf("# only a comment\n"), "policy file is empty");
  EXPECT_HAS(ErrorOf("version: 1\nports: [1, 2\n"), "p.yaml:3:1: YAML syntax");
  EXPECT_HAS(ErrorOf("- 1\n- 2\n"), "must be a mapping");
  EXPECT_HAS(ErrorOf(std::string("version: 1\n\0\x01\x02", 14)), "NUL bytes");
}

TEST(Policy, HostileInputIsRefusedQuickly) {
  auto start = std::chrono::steady_clock::now();
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_HAS(ErrorOf(deep), "nesting is too deep");
  std::string deep_block;
  for (int i = 0; i < 100000; ++i) deep_block += "- ";
  deep_block += "x\n";
  EXPECT_FALSE(ParsePolicyText(deep_block).ok());
  // Alias bomb: each level references the previous nine times.
  std::string bomb = "version: 1\nallowlists:\n  a0: &a0 [10.0.0.1, 10.0.0.1, 10.0.0.1]\n";
  for (int i = 1; i < 40; ++i) {
    bomb += "  a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 9; ++k) bomb += std::string(k ? ", " : "") + "*a" + std::to_string(i - 1);
    bomb += "]\n";
  }
  EXPECT_HAS(ErrorOf(bomb), "each entry must be an address");
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(secs, 30.0);  // a generous bound: the point is "no hang", not speed
}

TEST(Policy, ReportsSeveralErrorsAtOnce) {
  std::string e = ErrorOf("version: 1\nports:\n  imap: {state: x}\n  pop3: {state: y}\n");
  EXPECT_HAS(e, "p.yaml:3:17");
  EXPECT_HAS(e, "p.yaml:4:17");
}

TEST(Policy, AllowlistFileWithCommentsAndErrors) {
  TempDir d;
  d.Write("partners.txt", "# partners\n203.0.113.0/24\n\n  192.0.2.7   # one host\n2001:db8:1::/48\n");
  std::string p = d.Write("policy.yaml", "version: 1\nallowlists:\n  partners:\n    file: partners.txt\n");
  auto r = LoadPolicy({p});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->allowlists.at("partners").entries.size(), 3u);

  d.Write("bad.txt", "203.0.113.0/24\n  192.0.2.300\n10.0.0.1 10.0.0.2\n");
  std::string q = d.Write("q.yaml", "version: 1\nallowlists:\n  partners:\n    file: bad.txt\n");
  auto bad = LoadPolicy({q});
  ASSERT_FALSE(bad.ok());
  EXPECT_HAS(bad.status().message(), d.path() + "/bad.txt:2:3: '192.0.2.300' is not");
  EXPECT_HAS(bad.status().message(), d.path() + "/bad.txt:3:1: one address or CIDR per line");
}

TEST(Policy, MissingAllowlistFileNamesThePolicyLine) {
  TempDir d;
  std::string p = d.Write("policy.yaml", "version: 1\nallowlists:\n  partners:\n    file: /nonexistent/partners.txt\n");
  auto r = LoadPolicy({p});
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), p + ":4:11: allowlist 'partners': /nonexistent/partners.txt: cannot open");
}

TEST(Policy, MissingPolicyFile) {
  auto f = PolicyFiles("/nonexistent/policy.yaml");
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.status().message(), "policy file not found");
}

TEST(Policy, DropInsMergeInNameOrder) {
  TempDir d;
  d.Write("policy.yaml", "version: 1\nallowlists:\n  office: [198.51.100.0/24]\nports:\n  imap: {state: closed, allow: [office]}\n");
  d.Write("policy.d/20-more.yaml", "version: 1\nallowlists:\n  office: [203.0.113.5]\n");
  d.Write("policy.d/10-pop.yaml", "version: 1\nports:\n  pop3: {state: closed, allow: [office]}\n");
  d.Write("policy.d/README", "not yaml, ignored");
  auto files = PolicyFiles(d.path());
  ASSERT_TRUE(files.ok());
  ASSERT_EQ(files->size(), 3u);
  EXPECT_HAS((*files)[1], "10-pop.yaml");
  auto r = LoadPolicy(*files);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->ports.size(), 2u);
  EXPECT_EQ(r->allowlists.at("office").entries.size(), 2u);
  // The same through the file path: policy.yaml pulls in its policy.d.
  auto files2 = PolicyFiles(d.path() + "/policy.yaml");
  ASSERT_TRUE(files2.ok());
  EXPECT_EQ(files2->size(), 3u);
}

TEST(Policy, DropInRedefiningAPortIsAnError) {
  TempDir d;
  d.Write("policy.yaml", "version: 1\nports:\n  imap: {state: closed}\n");
  std::string later = d.Write("policy.d/50.yaml", "version: 1\nports:\n  imap: {state: open}\n");
  auto r = LoadPolicy(*PolicyFiles(d.path()));
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), later + ":3:3: port 143 is already defined as 'imap' at " + d.path() + "/policy.yaml:3:3");
}

TEST(Ruleset, BuildsLoopbackFirstThenPortsInOrder) {
  auto r = ParsePolicyText(kGood);
  ASSERT_TRUE(r.ok());
  Ruleset rs = BuildRuleset(*r);
  ASSERT_GE(rs.rules.size(), 2u);
  EXPECT_EQ(rs.rules[0].key, "mailward:loopback");
  std::vector<std::string> keys;
  for (const auto& rule : rs.rules) keys.push_back(rule.key);
  std::vector<std::string> want = {
      "mailward:loopback",         "mailward:not-local",        "mailward:110:closed",       "mailward:143:allow:office:nets:ipv4",
      "mailward:143:allow:office:nets:ipv6", "mailward:143:closed", "mailward:993:ratelimit:ipv4",
      "mailward:993:ratelimit:ipv6", "mailward:993:open",      "mailward:2000:closed"};
  EXPECT_EQ(keys, want);
  EXPECT_EQ(rs.open_ports, std::vector<uint16_t>{993});
  ASSERT_NE(rs.FindSet("allow_office_nets_v4"), nullptr);
  EXPECT_EQ(rs.FindSet("allow_office_nets_v4")->intervals.size(), 1u);
  EXPECT_EQ(rs.FindSet("allow_office_nets_v6")->intervals.size(), 1u);
  EXPECT_EQ(rs.FindSet("allow_office_hosts_v4"), nullptr);  // no single addresses: no set
  EXPECT_NE(rs.FindSet("meter_993_v4"), nullptr);
}

TEST(Ruleset, HostsAndNetsGoToTheirOwnSets) {
  auto r = ParsePolicyText(
      "version: 1\nallowlists:\n  a: [10.0.0.0/8, 10.1.2.3, 192.0.2.1, 192.0.2.1, '2001:db8::1']\n"
      "ports:\n  imap: {state: closed, allow: [a]}\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  Ruleset rs = BuildRuleset(*r);
  ASSERT_NE(rs.FindSet("allow_a_hosts_v4"), nullptr);
  // 10.1.2.3 is inside 10.0.0.0/8; 192.0.2.1 is listed twice.
  ASSERT_EQ(rs.FindSet("allow_a_hosts_v4")->intervals.size(), 1u);
  EXPECT_EQ(FormatInterval(Family::kV4, rs.FindSet("allow_a_hosts_v4")->intervals[0]), "192.0.2.1");
  EXPECT_EQ(rs.FindSet("allow_a_nets_v4")->intervals.size(), 1u);
  EXPECT_EQ(rs.FindSet("allow_a_hosts_v6")->intervals.size(), 1u);
  EXPECT_EQ(rs.FindSet("allow_a_nets_v6"), nullptr);
  std::vector<std::string> keys;
  for (const auto& rule : rs.rules) keys.push_back(rule.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"mailward:loopback", "mailward:not-local", "mailward:143:allow:a:hosts:ipv4",
                                            "mailward:143:allow:a:nets:ipv4", "mailward:143:allow:a:hosts:ipv6",
                                            "mailward:143:closed"}));
}

TEST(Ruleset, EmptyAllowlistClosesToEveryone) {
  auto r = ParsePolicyText("version: 1\nallowlists:\n  a: []\nports:\n  imap: {state: closed, allow: [a]}\n");
  ASSERT_TRUE(r.ok());
  Ruleset rs = BuildRuleset(*r);
  EXPECT_TRUE(rs.sets.empty());
  ASSERT_EQ(rs.rules.size(), 3u);
  EXPECT_EQ(rs.rules[1].key, "mailward:not-local");  // only traffic to this host is judged
  EXPECT_TRUE(rs.rules[1].nonlocal_dest);
  EXPECT_EQ(rs.rules[2].key, "mailward:143:closed");
}

}  // namespace
}  // namespace mw
