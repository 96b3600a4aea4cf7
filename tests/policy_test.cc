#include "policy/policy.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>

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
  ignore: [auth-debug]
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
  EXPECT_EQ(p.dovecot.ignore, std::vector<std::string>{"auth-debug"});  // a real finding id
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

TEST(Policy, AllowlistFileBareAndDressedLinesReadAlike) {
  // Bare addresses (the fast path) and the same with spaces, a comment, CRLF or a prefix (the
  // general parser) give the same entries; a bare line that is no address still gets the
  // general parser's message and position.
  TempDir d;
  d.Write("a.txt", "10.0.0.1\n192.0.2.255\n255.255.255.255\n0.0.0.0\n198.51.100.7");
  d.Write("b.txt", " 10.0.0.1\n192.0.2.255 # x\n255.255.255.255\r\n0.0.0.0/32\n198.51.100.7\n");
  auto load = [&](const std::string& list) {
    std::string p = d.Write("p-" + list + ".yaml", "version: 1\nallowlists:\n  l:\n    file: " + list + "\n");
    return LoadPolicy({p});
  };
  auto a = load("a.txt"), b = load("b.txt");
  ASSERT_TRUE(a.ok()) << a.status().message();
  ASSERT_TRUE(b.ok()) << b.status().message();
  const auto& ea = a->allowlists.at("l").entries;
  const auto& eb = b->allowlists.at("l").entries;
  ASSERT_EQ(ea.size(), 5u);
  ASSERT_EQ(eb.size(), 5u);
  for (size_t i = 0; i < ea.size(); ++i) {
    EXPECT_TRUE(ea[i].addr == eb[i].addr) << i;
    EXPECT_EQ(ea[i].prefix, eb[i].prefix) << i;
    EXPECT_EQ(ea[i].family, Family::kV4);
  }
  d.Write("c.txt", "10.0.0.1\n010.0.0.2\n10.0.0.256\n1.2.3\n");
  auto c = load("c.txt");
  ASSERT_FALSE(c.ok());
  EXPECT_HAS(c.status().message(), d.path() + "/c.txt:2:1: '010.0.0.2'");
  EXPECT_HAS(c.status().message(), d.path() + "/c.txt:3:1: '10.0.0.256' is not");
  EXPECT_HAS(c.status().message(), d.path() + "/c.txt:4:1: '1.2.3' is not");
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

TEST(Policy, RateLimitsOutsideWhatTheKernelTakesAreInvalid) {
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imaps: {state: open, rate_limit: 20/minute burst 0}\n"),
             "burst must be from 1 to 10000");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imaps: {state: open, rate_limit: 20/minute burst 10001}\n"),
             "burst must be from 1 to 10000");
  std::string e = ErrorOf("version: 1\nports:\n  imaps: {state: open, rate_limit: 4294967295/second}\n");
  EXPECT_HAS(e, "is too high: at most 10000/second (600000/minute, 36000000/hour, 864000000/day)");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imaps: {state: open, rate_limit: 600001/minute}\n"), "too high");
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  imaps: {state: open, rate_limit: 4294967296/second}\n"), "must look like");
  for (const char* ok : {"10000/second", "600000/minute burst 10000", "864000000/day", "1/day burst 1"})
    EXPECT_TRUE(ParsePolicyText(std::string("version: 1\nports:\n  imaps: {state: open, rate_limit: ") + ok + "}\n").ok()) << ok;
}

TEST(Policy, AllowingEveryAddressSaysUseStateOpen) {
  for (const char* any : {"0.0.0.0/0", "'::/0'"}) {
    std::string e = ErrorOf(std::string("version: 1\nallowlists:\n  all: [") + any + "]\nports:\n  imap: {state: closed, allow: [all]}\n");
    EXPECT_HAS(e, "p.yaml:3:9: allowlist 'all': 0.0.0.0/0 and ::/0 allow every address: give the port 'state: open'");
  }
  TempDir d;
  d.Write("all.txt", "192.0.2.1\n::/0\n");
  std::string p = d.Write("policy.yaml", "version: 1\nallowlists:\n  all:\n    file: all.txt\n");
  auto r = LoadPolicy({p});
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), d.path() + "/all.txt:2:1: 0.0.0.0/0 and ::/0 allow every address");
  // Half the space each is fine.
  EXPECT_TRUE(ParsePolicyText("version: 1\nallowlists:\n  a: [0.0.0.0/1, 128.0.0.0/1, '::/1']\n").ok());
}

TEST(Policy, PortNamesWithControlCharactersAreRejected) {
  for (std::string name : {std::string("\"imap\\e[31m\""), std::string("\"im\\0ap\""), std::string("\"im\\nap\""),
                           std::string("\"a\\tb\""), std::string("\"x\\x7f\""), std::string("\"x\\x85\"")}) {
    std::string e = ErrorOf("version: 1\nports:\n  " + name + ": {state: closed, port: 2000}\n");
    EXPECT_HAS(e, "must be 1-64 printable characters");
    EXPECT_EQ(e.find('\x1b'), std::string::npos) << "the escape reached the message";
    EXPECT_EQ(e.find(std::string(1, '\0')), std::string::npos);
  }
  EXPECT_HAS(ErrorOf("version: 1\nports:\n  " + std::string(65, 'a') + ": {state: closed, port: 2000}\n"), "1-64 printable");
  EXPECT_TRUE(ParsePolicyText("version: 1\nports:\n  sieve-alt_2.0 Ä: {state: closed, port: 2000}\n").ok());
}

TEST(Policy, ErrorsQuoteAShortExcerptNotAHugeLine) {
  std::string huge(20u << 20, 'x');
  std::string e = ErrorOf("version: 1\nbackend: " + huge.substr(0, 10u << 20) + "\n");  // the YAML limit is 16 MiB
  EXPECT_HAS(e, "unknown backend '" + std::string(80, 'x') + "...'");
  EXPECT_LT(e.size(), 1000u);
  TempDir d;
  d.Write("big.txt", "192.0.2.1\n" + huge + "\n");
  std::string p = d.Write("policy.yaml", "version: 1\nallowlists:\n  a:\n    file: big.txt\n");
  auto r = LoadPolicy({p});
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 1000u);
  EXPECT_HAS(r.status().message(), "big.txt:2:1: '" + std::string(80, 'x') + "...' is not an IPv4 or IPv6 address");
}

TEST(Policy, AnUnreadableByOthersAllowlistIsNeverQuoted) {
  TempDir d;
  std::string secret = d.Write("shadow", "root:$y$j9T$SECRETHASH:19000:0:99999:7:::\n192.0.2.1 SECONDSECRET\n");
  chmod(secret.c_str(), 0640);
  std::string p = d.Write("policy.yaml", "version: 1\nallowlists:\n  a:\n    file: shadow\n");
  auto r = LoadPolicy({p});
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  EXPECT_EQ(m.find("SECRET"), std::string::npos) << m;
  EXPECT_EQ(m.find("root:"), std::string::npos) << m;
  EXPECT_HAS(m, secret + ":1:1: not an address or CIDR (content not shown: " + secret + " is not readable by others");
  EXPECT_HAS(m, secret + ":2:1:");
}

TEST(Policy, APolicyOthersCannotReadIsNeverQuoted) {
  // --policy /etc/shadow parses as YAML keys: "root:$y$...:19000:0:99999:7::".
  TempDir d;
  std::string p = d.Write("shadow", "root:$y$j9T$SECRETHASH:19000:0:99999:7:::\nbackend: SECRETVALUE\n"
                                    "ports:\n  SECRETPORT: {state: SECRETSTATE}\n");
  chmod(p.c_str(), 0600);
  auto r = LoadPolicy({p});
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  EXPECT_EQ(m.find("SECRET"), std::string::npos) << m;
  EXPECT_HAS(m, p + ":1:1: unknown key (content not shown: " + p + " is not readable by others)");
  EXPECT_HAS(m, p + ":2:10: unknown backend (content not shown");
  // The same file readable by others: quoted, briefly.
  chmod(p.c_str(), 0644);
  EXPECT_HAS(LoadPolicy({p}).status().message(), "unknown backend 'SECRETVALUE'");
}

TEST(Policy, AFifoAsPolicyOrAllowlistIsRefusedAtOnce) {
  TempDir d;
  std::string fifo = d.path() + "/list.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  std::string p = d.Write("policy.yaml", "version: 1\nallowlists:\n  a:\n    file: list.fifo\n");
  auto fut = std::async(std::launch::async, [&] { return LoadPolicy({p}); });
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "hung on a FIFO";
  auto r = fut.get();
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), "not a regular file");
  auto fut2 = std::async(std::launch::async, [&] { return LoadPolicy({fifo}); });
  ASSERT_EQ(fut2.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "hung on a FIFO";
  EXPECT_HAS(fut2.get().status().message(), "not a regular file");
}

TEST(Policy, ADanglingSymlinkInPolicyDIsAnError) {
  TempDir d;
  d.Write("policy.yaml", "version: 1\nports:\n  imap: {state: closed}\n");
  d.Write("policy.d/10-a.yaml", "version: 1\n");
  std::string link = d.path() + "/policy.d/20-pop3.yaml";
  ASSERT_EQ(symlink("/nonexistent/pop3.yaml", link.c_str()), 0);
  auto f = PolicyFiles(d.path() + "/policy.yaml");
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.status().message(), link);
  EXPECT_HAS(f.status().message(), "dangling symlink");
}

/// As root, a policy input others could have written is refused, saying which and how to fix.
class PolicyTrust : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the trust checks apply to root only";
  }
};

TEST_F(PolicyTrust, AWorldWritablePolicyIsRefused) {
  TempDir d;
  std::string p = d.Write("policy.yaml", "version: 1\nports:\n  imap: {state: open}\n");
  ASSERT_TRUE(PolicyFiles(p).ok());
  chmod(p.c_str(), 0666);
  auto f = PolicyFiles(p);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Code::kRefused);
  EXPECT_HAS(f.status().message(), p);
  EXPECT_HAS(f.status().message(), "writable by group or others (mode 0666)");
  EXPECT_HAS(f.status().message(), "chown root:root " + p + "; chmod go-w " + p);
}

TEST_F(PolicyTrust, APolicyNotOwnedByRootIsRefused) {
  TempDir d;
  std::string p = d.Write("policy.yaml", "version: 1\n");
  ASSERT_EQ(chown(p.c_str(), 65534, 65534), 0);
  auto f = PolicyFiles(p);
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.status().message(), "owned by uid 65534, not root");
}

TEST_F(PolicyTrust, AnAllowlistFileOthersOwnIsRefused) {
  TempDir d;
  std::string list = d.Write("partners.txt", "0.0.0.0/1\n");
  ASSERT_EQ(chown(list.c_str(), 65534, 65534), 0);
  std::string p = d.Write("policy.yaml", "version: 1\nallowlists:\n  partners:\n    file: partners.txt\n");
  auto r = LoadPolicy({p});
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), p + ":4:11: allowlist 'partners': refusing to trust the policy " + list);
  EXPECT_HAS(r.status().message(), "owned by uid 65534");
  chown(list.c_str(), 0, 0);
  chmod(list.c_str(), 0646);
  auto w = LoadPolicy({p});
  ASSERT_FALSE(w.ok());
  EXPECT_HAS(w.status().message(), "writable by group or others");
}

TEST_F(PolicyTrust, SomeoneElsesPolicyDBesideAPolicyInTmpIsRefused) {
  // /tmp/x/policy.yaml is root's; /tmp/x is sticky and world-writable like /tmp, and someone
  // else made policy.d in it.
  TempDir d;
  chmod(d.path().c_str(), 01777);
  std::string p = d.Write("policy.yaml", "version: 1\nports:\n  imap: {state: closed}\n");
  ASSERT_TRUE(PolicyFiles(p).ok());
  std::string dropins = d.path() + "/policy.d";
  d.Write("policy.d/50-open.yaml", "version: 1\nports:\n  imap2: {state: open, port: 143}\n");
  ASSERT_EQ(chown(dropins.c_str(), 65534, 65534), 0);
  auto f = PolicyFiles(p);
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.status().message(), dropins);
  EXPECT_HAS(f.status().message(), "owned by uid 65534");
  // Root's own policy.d, but an entry someone else owns.
  chown(dropins.c_str(), 0, 0);
  chown((dropins + "/50-open.yaml").c_str(), 65534, 65534);
  auto g = PolicyFiles(p);
  ASSERT_FALSE(g.ok());
  EXPECT_HAS(g.status().message(), dropins + "/50-open.yaml");
  // A group-writable policy.d.
  chown((dropins + "/50-open.yaml").c_str(), 0, 0);
  chmod(dropins.c_str(), 0775);
  EXPECT_FALSE(PolicyFiles(p).ok());
  chmod(dropins.c_str(), 0755);
  EXPECT_TRUE(PolicyFiles(p).ok());
}

TEST_F(PolicyTrust, APolicyDirectoryOthersCanWriteIsRefused) {
  TempDir d;
  d.Write("policy.yaml", "version: 1\n");
  chmod(d.path().c_str(), 0777);
  auto f = PolicyFiles(d.path());
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.status().message(), "writable by group or others (mode 0777)");
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
