// The UFW backend against FakeEnv + FakeIptables: UFW's files in memory, `ufw reload` loading
// them into the fake kernel, and the failures part-way, with no kernel and no ufw on PATH.
#include <gtest/gtest.h>

#include <sstream>

#include "backend/backend.h"
#include "fakes/ruleset_yaml.h"
#include "fakes/fake_env.h"
#include "fakes/fake_iptables.h"
#include "model/ruleset.h"
#include "policy/policy.h"

namespace mw {
namespace {

using testing::FakeEnv;
using testing::FakeIptables;

using testing::FromYaml;

const char* kPolicy = R"(version: 1
backend: ufw
allowlists:
  office: [198.51.100.0/24, "2001:db8::/48"]
ports:
  imap: {state: closed, allow: [office]}
  imaps: {state: open}
  pop3: {state: closed}
)";

const char* kUserRules = R"(*filter
:ufw-user-input - [0:0]
:ufw-user-output - [0:0]
:ufw-user-forward - [0:0]
:ufw-before-logging-input - [0:0]
:ufw-before-logging-output - [0:0]
:ufw-before-logging-forward - [0:0]
:ufw-user-logging-input - [0:0]
:ufw-user-logging-output - [0:0]
:ufw-user-logging-forward - [0:0]
:ufw-after-logging-input - [0:0]
:ufw-after-logging-output - [0:0]
:ufw-after-logging-forward - [0:0]
:ufw-logging-deny - [0:0]
:ufw-logging-allow - [0:0]
:ufw-user-limit - [0:0]
:ufw-user-limit-accept - [0:0]
### RULES ###

### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp --dport 22 -j ACCEPT

### END RULES ###

### LOGGING ###
-A ufw-after-logging-input -j LOG --log-prefix "[UFW BLOCK] " -m limit --limit 3/min --limit-burst 10
-A ufw-after-logging-forward -j LOG --log-prefix "[UFW BLOCK] " -m limit --limit 3/min --limit-burst 10
-I ufw-logging-deny -m conntrack --ctstate INVALID -j RETURN -m limit --limit 3/min --limit-burst 10
-A ufw-logging-deny -j LOG --log-prefix "[UFW BLOCK] " -m limit --limit 3/min --limit-burst 10
-A ufw-logging-allow -j LOG --log-prefix "[UFW ALLOW] " -m limit --limit 3/min --limit-burst 10
### END LOGGING ###

### RATE LIMITING ###
-A ufw-user-limit -m limit --limit 3/minute -j LOG --log-prefix "[UFW LIMIT BLOCK] "
-A ufw-user-limit -j REJECT
-A ufw-user-limit-accept -j ACCEPT
### END RATE LIMITING ###
COMMIT
)";

class UfwBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ipt_.Attach(&env_);
    env_.programs.insert("ufw");
    std::string v6 = kUserRules;
    for (std::string from : {"ufw-", "0.0.0.0/0"}) {
      std::string to = from == "ufw-" ? "ufw6-" : "::/0";
      for (size_t p = v6.find(from); p != std::string::npos; p = v6.find(from, p + to.size())) v6.replace(p, from.size(), to);
    }
    env_.Put("/etc/ufw/user.rules", kUserRules, 0640);
    env_.Put("/etc/ufw/user6.rules", v6, 0640);
    env_.Put("/etc/ufw/ufw.conf", "ENABLED=yes\nLOGLEVEL=low\n", 0644);
    env_.Put("/etc/default/ufw", "IPV6=yes\n", 0644);
    env_.on_run = [this](const std::vector<std::string>& argv, const std::string& input) {
      if (argv[0] == "ufw" && argv.size() > 1 && argv[1] == "reload") {
        if (fail_reloads > 0) {
          --fail_reloads;
          return FakeEnv::Fail("ERROR: problem running ufw-init");
        }
        Load();
        return FakeEnv::Ok("Firewall reloaded\n");
      }
      return ipt_.Run(argv, input);
    };
    Load();
  }
  /// What `ufw reload` does here: the files' ufw-user-input rules into the fake kernel.
  void Load() {
    const char* files[2] = {"/etc/ufw/user.rules", "/etc/ufw/user6.rules"};
    const char* chain[2] = {"ufw-user-input", "ufw6-user-input"};
    for (int f = 0; f < 2; ++f) {
      auto& t = ipt_.fam[f]["filter"];
      if (!t.Find(chain[f])) t.chains.push_back({chain[f], "-", {}});
      auto* c = t.Find(chain[f]);
      c->rules.clear();
      std::istringstream in(env_.Get(files[f]));
      std::string l;
      while (std::getline(in, l))
        if (l.rfind(std::string("-A ") + chain[f] + " ", 0) == 0) c->rules.push_back(l);
    }
  }
  std::unique_ptr<Backend> Make() {
    BackendConfig cfg;
    cfg.state_dir = "/var/lib/mailward";
    cfg.env = &env_;
    cfg.netlink = false;
    return MakeUfwBackend(cfg);
  }
  std::unique_ptr<BackendPlan> PlanOf(Backend& b, const std::string& yaml = kPolicy) {
    auto p = b.Plan(FromYaml(yaml), PlanOptions{});
    EXPECT_TRUE(p.ok()) << p.status().message();
    return p.ok() ? std::move(*p) : nullptr;
  }
  FakeEnv env_;
  FakeIptables ipt_;
  int fail_reloads = 0;
};

TEST_F(UfwBackendTest, WritesBothFilesReloadsOnceAndIsThenInSync) {
  auto b = Make();
  auto plan = PlanOf(*b);
  ASSERT_TRUE(plan);
  EXPECT_FALSE(plan->in_sync());
  auto snap = b->TakeSnapshot(*plan);
  ASSERT_TRUE(snap.ok());
  ASSERT_TRUE(b->Apply(*plan).ok());
  EXPECT_NE(env_.Get("/etc/ufw/user.rules").find(" comment=6d61696c77617264"), std::string::npos);
  EXPECT_NE(env_.Get("/etc/ufw/user.rules").find("-A ufw-user-input -p tcp --dport 22 -j ACCEPT"), std::string::npos);
  EXPECT_EQ(env_.FileMode("/etc/ufw/user.rules"), 0640u);  // the mode is kept
  EXPECT_EQ(env_.RunsOf("ufw reload").size(), 1u);
  EXPECT_NE(ipt_.Save(0).find("*mangle"), std::string::npos);  // the DNAT path's chains
  auto again = PlanOf(*b);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->in_sync()) << again->changes[0].name << ": " << again->changes[0].detail;
  // Rolled back: both files as they were, mailward's mangle and nat chains gone.
  ASSERT_TRUE(b->Restore(snap->bytes, "").ok());
  EXPECT_EQ(env_.Get("/etc/ufw/user.rules"), kUserRules);
  EXPECT_EQ(ipt_.Save(0).find("MAILWARD"), std::string::npos);
}

TEST_F(UfwBackendTest, AFailedReloadPutsTheFilesBack) {
  auto b = Make();
  auto plan = PlanOf(*b);
  ASSERT_TRUE(plan);
  fail_reloads = 1;
  Status s = b->Apply(*plan);
  EXPECT_EQ(s.code(), Code::kFirewall);
  EXPECT_NE(s.message().find("UFW's previous rules were put back and reloaded"), std::string::npos) << s.message();
  EXPECT_EQ(env_.Get("/etc/ufw/user.rules"), kUserRules);
  fail_reloads = 2;
  plan = PlanOf(*b);
  s = b->Apply(*plan);
  EXPECT_NE(s.message().find("putting the previous rules back failed too"), std::string::npos) << s.message();
}

TEST_F(UfwBackendTest, AFailedIp6tablesRestorePutsTheFilesAndIpv4Back) {
  auto b = Make();
  auto plan = PlanOf(*b);
  ASSERT_TRUE(plan);
  ipt_.fail["ip6tables-restore"] = "ip6tables-restore: line 2 failed";
  Status s = b->Apply(*plan);
  EXPECT_EQ(s.code(), Code::kFirewall);
  EXPECT_NE(s.message().find("put back"), std::string::npos) << s.message();
  EXPECT_EQ(env_.Get("/etc/ufw/user.rules"), kUserRules);
  EXPECT_EQ(ipt_.Save(0).find("MAILWARD"), std::string::npos);
}

TEST_F(UfwBackendTest, AFailedWriteAppliesNothing) {
  auto b = Make();
  auto plan = PlanOf(*b);
  ASSERT_TRUE(plan);
  env_.on_write = [](const std::string& path) {
    return path == "/etc/ufw/user6.rules" ? Status::Io(path + ": No space left on device") : Status::Ok();
  };
  Status s = b->Apply(*plan);
  EXPECT_NE(s.message().find("nothing was applied"), std::string::npos) << s.message();
  env_.on_write = nullptr;
  EXPECT_EQ(env_.Get("/etc/ufw/user.rules"), kUserRules);
  EXPECT_TRUE(env_.RunsOf("ufw reload").empty());
}

TEST_F(UfwBackendTest, FilesChangedSinceThePlanMoveTheGeneration) {
  auto b = Make();
  auto plan = PlanOf(*b);
  ASSERT_TRUE(plan);
  env_.Put("/etc/ufw/user.rules", std::string(kUserRules) + "\n", 0640);
  EXPECT_EQ(b->Apply(*plan).code(), Code::kGenerationMoved);
}

TEST_F(UfwBackendTest, DisabledUfwIsAConflictForEveryClosedPort) {
  env_.Put("/etc/ufw/ufw.conf", "ENABLED=no\n", 0644);
  env_.Put("/etc/default/ufw", "IPV6=no\n", 0644);
  auto plan = PlanOf(*Make());
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->conflicts.size(), 2u);  // imap and pop3, IPv4 only (IPV6=no)
  EXPECT_EQ(plan->conflicts[0].fix, "ufw enable");
  EXPECT_EQ(plan->conflicts[0].kind, analysis::ConflictKind::kClosedPortReachable);
  EXPECT_STREQ(CertaintyName(plan->conflicts[0]), "reaches");
  EXPECT_GE(plan->notes.size(), 2u);
}

TEST_F(UfwBackendTest, LoadedRulesThatDifferFromTheFilesAreReloaded) {
  auto b = Make();
  auto plan = PlanOf(*b);
  ASSERT_TRUE(b->Apply(*plan).ok());
  ipt_.fam[0]["filter"].Find("ufw-user-input")->rules.clear();  // someone flushed UFW's chain
  auto again = PlanOf(*b);
  ASSERT_TRUE(again);
  ASSERT_EQ(again->changes.size(), 1u);
  EXPECT_EQ(again->changes[0].name, "ufw loaded rules");
  ASSERT_TRUE(b->Apply(*again).ok());
  EXPECT_EQ(env_.RunsOf("ufw reload").size(), 2u);
  EXPECT_TRUE(PlanOf(*b)->in_sync());
}

TEST_F(UfwBackendTest, MissingUfwAndDamagedSnapshotsAreErrors) {
  auto b = Make();
  EXPECT_EQ(b->Restore("MWIPT2\n", "").code(), Code::kInvalidPolicy);
  EXPECT_EQ(b->Restore("MWUFW2\nxx\n", "").code(), Code::kIo);
  EXPECT_EQ(b->Restore("MWUFW2\n99999\nabc", "").code(), Code::kIo);
  EXPECT_EQ(b->Restore("MWUFW2\n0\n0\nv4 bogus chain 1\n", "").code(), Code::kIo);
  env_.files.erase("/etc/ufw/user6.rules");
  EXPECT_EQ(b->Plan(FromYaml(kPolicy), PlanOptions{}).status().code(), Code::kIo);
  env_.programs.erase("ufw");
  EXPECT_EQ(b->Plan(FromYaml(kPolicy), PlanOptions{}).status().code(), Code::kFirewall);
}

}  // namespace
}  // namespace mw
