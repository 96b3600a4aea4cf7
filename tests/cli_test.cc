// cli/commands.h: the commands that need neither a firewall nor a kernel (validate, snapshots,
// confirm with nothing pending, rollback --dry-run with nothing saved, errors), text and JSON.
#include "cli/commands.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>

#include "state/snapshots.h"
#include "util/fs.h"

namespace mw {
namespace {

using json = nlohmann::json;

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mwcliXXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    g.policy = dir_ + "/policy.yaml";
    g.state_dir = dir_ + "/state";
    g.lock_timeout = 0;
    std::ofstream(g.policy) << "version: 1\nallowlists:\n  office: [198.51.100.0/24]\nports:\n"
                               "  smtp: {state: closed, allow: [office], rate_limit: 10/minute}\n  imaps: {state: open}\n";
  }
  void TearDown() override { (void)!std::system(("rm -rf '" + dir_ + "'").c_str()); }
  /// Runs a command, capturing its stdout.
  template <class F>
  std::pair<int, std::string> Run(F f) {
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    int rc = f();
    std::string out = ::testing::internal::GetCapturedStdout();
    err = ::testing::internal::GetCapturedStderr();
    return {rc, out};
  }
  std::string dir_, err;
  GlobalOptions g;
};

TEST_F(Cli, ValidateTextAndJson) {
  auto [rc, out] = Run([&] { return CmdValidate(g); });
  EXPECT_EQ(rc, exit_code::kOk);
  EXPECT_NE(out.find("valid: 1 file, 2 ports, 1 allowlist"), std::string::npos) << out;
  EXPECT_NE(out.find("smtp 25/tcp closed allow office rate_limit 10/minute"), std::string::npos) << out;
  g.format = "json";
  std::tie(rc, out) = Run([&] { return CmdValidate(g); });
  auto j = json::parse(out);
  EXPECT_EQ(j["command"], "validate");
  EXPECT_EQ(j["valid"], true);
  std::ofstream(g.policy) << "version: 1\nports:\n  smtp: {state: ajar}\n";
  std::tie(rc, out) = Run([&] { return CmdValidate(g); });
  EXPECT_EQ(rc, exit_code::kError);
  j = json::parse(out);
  EXPECT_EQ(j["valid"], false);
  EXPECT_FALSE(j["errors"].empty());
}

TEST_F(Cli, SnapshotsListsRollbackPoints) {
  auto [rc, out] = Run([&] { return CmdSnapshots(g); });
  EXPECT_EQ(rc, exit_code::kOk);
  EXPECT_NE(out.find("no snapshots in " + g.state_dir + "/snapshots"), std::string::npos) << out;
  ASSERT_TRUE(MakeDirs(g.state_dir).ok());
  auto one = SaveSnapshot(g.state_dir, Snapshot{"MWIPT1\n", ""}, 1, SnapshotInfo{"apply", "root", g.policy, "abcdef0123456789"});
  ASSERT_TRUE(one.ok()) << one.status().message();
  MarkCommitted(*one);
  ASSERT_TRUE(SaveSnapshot(g.state_dir, Snapshot{"MWIPT1\n", ""}, 2).ok());  // its apply never committed
  std::tie(rc, out) = Run([&] { return CmdSnapshots(g); });
  EXPECT_NE(out.find("abcdef012345"), std::string::npos) << out;
  EXPECT_NE(out.find("(its apply never committed)"), std::string::npos) << out;
  g.format = "json";
  std::tie(rc, out) = Run([&] { return CmdSnapshots(g); });
  auto j = json::parse(out);
  ASSERT_EQ(j["snapshots"].size(), 2u);
  EXPECT_EQ(j["snapshots"][0]["committed"], true);
  EXPECT_EQ(j["snapshots"][0]["made_by"], "apply");
  EXPECT_EQ(j["snapshots"][1]["committed"], false);
  EXPECT_TRUE(j["snapshots"][1]["user"].is_null());
}

TEST_F(Cli, ConfirmWithNothingPendingIsRefused) {
  g.format = "json";
  auto [rc, out] = Run([&] { return CmdConfirm(g); });
  EXPECT_EQ(rc, exit_code::kError);
  auto j = json::parse(out);
  EXPECT_EQ(j["command"], "confirm");
  EXPECT_EQ(j["error"]["kind"], "refused");
  EXPECT_NE(err.find("nothing to confirm"), std::string::npos) << err;
}

TEST_F(Cli, RollbackDryRunWithNothingSaved) {
  if (!HaveNetAdmin()) GTEST_SKIP() << "rollback needs CAP_NET_ADMIN";
  g.format = "json";
  auto [rc, out] = Run([&] { return CmdRollback(g, RollbackOptions{std::nullopt, true}); });
  EXPECT_EQ(rc, exit_code::kError);
  EXPECT_EQ(json::parse(out)["error"]["kind"], "not_found");
  EXPECT_TRUE(RequireNetAdmin("plan").ok());
}

TEST_F(Cli, CheckRefusesAMissingMetricsDirectory) {
  CheckOptions o;
  o.metrics_file = dir_ + "/nope/mailward.prom";
  auto [rc, out] = Run([&] { return CmdCheck(g, o); });
  EXPECT_EQ(rc, exit_code::kError);
  EXPECT_NE(err.find("the metrics directory does not exist"), std::string::npos) << err;
}

}  // namespace
}  // namespace mw
