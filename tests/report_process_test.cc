// Reports (plan and conflict text, JSON), the metrics file, and the process runner.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "report/metrics.h"
#include "report/report.h"
#include "util/fs.h"
#include "util/process.h"

namespace mw {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mw-report-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Change Ch(ChangeOp op, ChangeObject object, const char* name, const char* detail) {
  Change c;
  c.op = op;
  c.object = object;
  c.name = name;
  c.detail = detail;
  return c;
}

TEST(Report, PlanTextAlignsDetailsAndSignsEachOperation) {
  std::vector<Change> plan = {Ch(ChangeOp::kAdd, ChangeObject::kRule, "mailward:143:closed", "tcp dport 143 ct state new drop"),
                              Ch(ChangeOp::kDelete, ChangeObject::kSet, "old", "ipv4_addr"), Ch(ChangeOp::kReplace, ChangeObject::kChain, "input", "")};
  EXPECT_EQ(PlanText(plan, false, false),
            "  + rule mailward:143:closed  tcp dport 143 ct state new drop\n"
            "  - set old                   ipv4_addr\n"
            "  ~ chain input\n");
  std::string col = PlanText(plan, true, false);
  EXPECT_NE(col.find("\033[32m+ rule mailward:143:closed\033[0m"), std::string::npos) << col;
  EXPECT_NE(col.find("\033[31m- set old\033[0m"), std::string::npos) << col;
  EXPECT_NE(col.find("\033[33m~ chain input\033[0m"), std::string::npos) << col;
}

TEST(Report, ElementsAreSampledUnlessVerbose) {
  Change c = Ch(ChangeOp::kAdd, ChangeObject::kElements, "allow_office_hosts_v4", "");
  c.items = {"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5", "198.51.100.6"};
  c.count = 9;  // a sample of 6 of 9 intervals
  EXPECT_EQ(PlanText({c}, false, false),
            "  + elements allow_office_hosts_v4: 198.51.100.1, 198.51.100.2, 198.51.100.3, 198.51.100.4, "
            "198.51.100.5, ... (4 more)\n");
  EXPECT_EQ(PlanText({c}, false, true),
            "  + elements allow_office_hosts_v4: 198.51.100.1, 198.51.100.2, 198.51.100.3, 198.51.100.4, "
            "198.51.100.5, 198.51.100.6, ... (3 more)\n");
  auto j = ChangeToJson(c);
  EXPECT_EQ(j["count"], 9);
  EXPECT_EQ(j["items"].size(), 6u);
  EXPECT_EQ(j["items_truncated"], true);
  c.count = 6;
  EXPECT_EQ(ChangeToJson(c)["items_truncated"], false);
  // Not an elements change: no count or items keys.
  auto r = ChangeToJson(Ch(ChangeOp::kAdd, ChangeObject::kRule, "k", "d"));
  EXPECT_FALSE(r.contains("count"));
  EXPECT_EQ(r["op"], "add");
  EXPECT_EQ(r["detail"], "d");
}

TEST(Report, ALongNameDoesNotPushDetailsBeyondTheCap) {
  std::string name(60, 'n');
  auto text = PlanText({Ch(ChangeOp::kAdd, ChangeObject::kRule, name.c_str(), "drop"), Ch(ChangeOp::kAdd, ChangeObject::kRule, "k", "accept")}, false, false);
  // Width is capped at 48: the long name gets no padding, the short one is padded to 48.
  EXPECT_NE(text.find("rule " + name + "  drop\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  + rule k" + std::string(48 - 6, ' ') + "  accept\n"), std::string::npos) << text;
}

TEST(Report, ConflictsTextAndJson) {
  Conflict c;
  c.port = 993;
  c.family = "ipv4";
  c.kind = analysis::ConflictKind::kAllowlistBlocked;
  c.owner = "UFW";
  c.where = "iptables filter chain ufw-user-input";
  c.reason = "-A ufw-user-input -s 198.51.100.3 -j DROP";
  c.fix = "ufw delete deny from 198.51.100.3";
  c.source = "office 198.51.100.3";
  EXPECT_EQ(ConflictsText({c}, false),
            "  ! 993/ipv4 allowlist-blocked (blocks) for office 198.51.100.3, owner UFW: iptables filter chain "
            "ufw-user-input: -A ufw-user-input -s 198.51.100.3 -j DROP\n"
            "      fix: ufw delete deny from 198.51.100.3\n");
  EXPECT_EQ(ConflictsText({c}, true).rfind("  \033[33m!\033[0m 993/ipv4", 0), 0u);
  auto j = ConflictToJson(c);
  EXPECT_EQ(j["port"], 993);
  EXPECT_EQ(j["source"], "office 198.51.100.3");
  EXPECT_FALSE(j.contains("destination"));
  Conflict d = c;
  d.kind = analysis::ConflictKind::kClosedPortReachable;
  d.source.clear();
  d.fix.clear();
  d.destination = "172.17.0.2:143";
  EXPECT_EQ(ConflictsText({d}, false).find("fix:"), std::string::npos);
  EXPECT_EQ(ConflictToJson(d)["destination"], "172.17.0.2:143");
  EXPECT_FALSE(ConflictToJson(d).contains("source"));
  // The JSON keeps its words: kind, and a certainty that reads right for each kind.
  EXPECT_EQ(j["kind"], "allowlist-blocked");
  EXPECT_EQ(j["certainty"], "blocks");
  EXPECT_EQ(ConflictToJson(d)["kind"], "closed-port-reachable");
  EXPECT_EQ(ConflictToJson(d)["certainty"], "reaches");
  d.maybe = true;
  EXPECT_EQ(ConflictToJson(d)["certainty"], "may reach");
  c.maybe = true;
  EXPECT_EQ(ConflictToJson(c)["certainty"], "may block");
}

TEST(Report, SeverityColoursAndNoColorWithoutATerminal) {
  EXPECT_STREQ(SeverityRankColor("critical"), "\033[1;31m");
  EXPECT_STREQ(SeverityRankColor("high"), "\033[31m");
  EXPECT_STREQ(SeverityRankColor("medium"), "\033[33m");
  EXPECT_STREQ(SeverityRankColor("low"), "\033[36m");
  if (!isatty(STDOUT_FILENO)) {
    EXPECT_FALSE(UseColor());  // ctest: a pipe
  }
}

TEST(Report, PolicySummaryJsonAndInvalidUtf8KeysAndValues) {
  auto p = ParsePolicyText(
      "version: 1\nbackend: nftables\nallowlists:\n  office: [198.51.100.3, 203.0.113.0/24]\n"
      "ports:\n  imap: {state: closed, allow: [office], action: reject}\n"
      "  imaps: {state: open, rate_limit: 20/minute}\n");
  ASSERT_TRUE(p.ok()) << p.status().message();
  auto j = PolicySummaryJson(*p);
  EXPECT_EQ(j["backend"], "nftables");
  ASSERT_EQ(j["ports"].size(), 2u);
  EXPECT_EQ(j["ports"][0]["name"], "imap");
  EXPECT_EQ(j["ports"][0]["state"], "closed");
  EXPECT_EQ(j["ports"][0]["action"], "reject");
  EXPECT_EQ(j["ports"][0]["allow"], nlohmann::json::array({"office"}));
  EXPECT_TRUE(j["ports"][0]["rate_limit"].is_null());
  EXPECT_EQ(j["ports"][1]["rate_limit"], "20/minute");
  EXPECT_EQ(j["allowlists"]["office"]["entries"], 2);
  EXPECT_TRUE(j["dovecot"].is_null());

  nlohmann::json bad = {{"caf\xe9", {"ok", "bad\xff"}}, {"n", 1}};
  auto safe = Utf8Safe(bad);
  EXPECT_TRUE(safe.contains("caf\xef\xbf\xbd"));
  EXPECT_EQ(safe["caf\xef\xbf\xbd"][1], "bad\xef\xbf\xbd");
  EXPECT_EQ(safe["n"], 1);
  EXPECT_NE(DumpJson(bad).find("\"n\": 1"), std::string::npos);  // never throws
}

TEST(Metrics, LabelsAreEscapedAndTheFileIsWrittenAtomically) {
  CheckMetrics m;
  m.up = true;
  m.backend = "nft\"ab\\les\n";
  m.timestamp = 1700000000;
  std::string text = MetricsText(m);
  EXPECT_NE(text.find("mailward_backend_info{backend=\"nft\\\"ab\\\\les\\n\"} 1\n"), std::string::npos) << text;

  TempDir d;
  std::string path = d.path() + "/mailward.prom";
  mode_t old = umask(077);
  Status written = WriteMetrics(path, m);
  umask(old);
  ASSERT_TRUE(written.ok()) << written.message();
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);  // node_exporter, another user, reads it
  auto back = ReadFile(path, Follow::kNoSymlinks);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, text);
  Status missing = WriteMetrics(d.path() + "/nope/mailward.prom", m);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("the metrics directory does not exist"), std::string::npos) << missing.message();
}

TEST(Metrics, LastApplyRoundTripsAndGarbageIsUnset) {
  TempDir d;
  EXPECT_FALSE(ReadLastApply(d.path()).has_value());
  ASSERT_TRUE(RecordLastApply(d.path()).ok());
  auto t = ReadLastApply(d.path());
  ASSERT_TRUE(t.has_value());
  EXPECT_GT(*t, 1.6e9);
  ASSERT_TRUE(WriteFileAtomic(d.path() + "/last-apply", "yesterday\n", Durability::kNoFsync, 0600).ok());
  EXPECT_FALSE(ReadLastApply(d.path()).has_value());
  ASSERT_TRUE(WriteFileAtomic(d.path() + "/last-apply", "-5\n", Durability::kNoFsync, 0600).ok());
  EXPECT_FALSE(ReadLastApply(d.path()).has_value());
  EXPECT_EQ(ParseUtcTimestamp("1970-01-02T00:00:10Z"), 86410.0);
  EXPECT_FALSE(ParseUtcTimestamp("tomorrow").has_value());
}

TEST(Process, ExitStatusesAndOutputs) {
  auto t = RunProcess({"/bin/true"});
  EXPECT_TRUE(t.ok());
  EXPECT_EQ(t.Message(), "exit status 0");
  auto f = RunProcess({"false"});  // looked up in PATH
  EXPECT_EQ(f.status, 1);
  EXPECT_FALSE(f.ok());
  EXPECT_EQ(f.Message(), "exit status 1");
  auto sh = RunProcess({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(sh.status, 3);
  EXPECT_EQ(sh.out, "out\n");
  EXPECT_EQ(sh.err, "err\n");
  EXPECT_EQ(sh.Message(), "err");  // stderr first, trimmed
  auto only_out = RunProcess({"/bin/sh", "-c", "echo 'only out  '; exit 2"});
  EXPECT_EQ(only_out.Message(), "only out");
}

TEST(Process, StdinIsFedAndLargeOutputsDoNotDeadlock) {
  std::string big(1 << 20, 'x');  // larger than any pipe buffer, both ways
  for (size_t i = 0; i < big.size(); i += 1000) big[i] = '\n';
  auto r = RunProcess({"/bin/cat"}, big);
  ASSERT_TRUE(r.ok()) << r.Message();
  EXPECT_EQ(r.out, big);
  // A child that exits without reading its input: no SIGPIPE for us, its status is reported.
  auto q = RunProcess({"/bin/sh", "-c", "exit 4"}, big);
  EXPECT_EQ(q.status, 4);
}

TEST(Process, MissingProgramsAndSignals) {
  auto m = RunProcess({"mailward-no-such-program"});
  EXPECT_EQ(m.status, 127);
  EXPECT_NE(m.err.find("mailward-no-such-program"), std::string::npos) << m.err;
  ProcessResult nf;
  nf.status = 127;
  EXPECT_EQ(nf.Message(), "program not found");
  EXPECT_EQ(RunProcess({}).status, -1);
  auto killed = RunProcess({"/bin/sh", "-c", "kill -9 $$"});
  EXPECT_EQ(killed.status, -1);  // killed by a signal
  EXPECT_TRUE(HaveProgram("sh"));
  EXPECT_TRUE(HaveProgram("/bin/cat"));
  EXPECT_FALSE(HaveProgram("/bin/mailward-no-such-program"));
  EXPECT_FALSE(HaveProgram("mailward-no-such-program"));
}

}  // namespace
}  // namespace mw
