// The iptables backend against FakeEnv + FakeIptables: plan, apply, snapshot, restore, journal
// recovery and the failures part-way, with no kernel and no iptables on PATH.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "fakes/ruleset_yaml.h"
#include "fakes/fake_env.h"
#include "fakes/fake_iptables.h"
#include "fakes/fake_nft_transport.h"
#include "model/ruleset.h"
#include "policy/policy.h"

namespace mw {
namespace {

using testing::FakeEnv;
using testing::FakeIptables;

using testing::FromYaml;

const char* const kPolicy = testing::kOfficePolicy;

const char* kPolicy2 = R"(version: 1
allowlists:
  office: [198.51.100.0/25, 192.0.2.9]
ports:
  imap: {state: closed, allow: [office]}
  imaps: {state: open, rate_limit: 20/minute}
)";

class IptBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ipt_.Attach(&env_);
    env_.env_vars["MAILWARD_IPTABLES"] = "legacy";
  }
  std::unique_ptr<Backend> Make() {
    BackendConfig cfg;
    cfg.state_dir = "/var/lib/mailward";
    cfg.env = &env_;
    cfg.netlink = false;
    return MakeIptablesBackend(cfg);
  }
  std::unique_ptr<BackendPlan> PlanOf(Backend& b, const std::string& yaml) {
    auto p = b.Plan(FromYaml(yaml), PlanOptions{});
    EXPECT_TRUE(p.ok()) << p.status().message();
    return p.ok() ? std::move(*p) : nullptr;
  }
  FakeEnv env_;
  FakeIptables ipt_;
};

TEST_F(IptBackendTest, AppliesThenIsInSyncAndRollsBack) {
  auto b = Make();
  auto plan = PlanOf(*b, kPolicy);
  ASSERT_TRUE(plan);
  EXPECT_FALSE(plan->in_sync());
  auto snap = b->TakeSnapshot(*plan);
  ASSERT_TRUE(snap.ok());
  ASSERT_TRUE(b->Apply(*plan).ok());
  EXPECT_NE(ipt_.Save(0).find(":MAILWARD - [0:0]"), std::string::npos);
  EXPECT_NE(ipt_.Save(1).find("-A INPUT -m comment --comment \"mailward:jump\" -j MAILWARD"), std::string::npos)
      << ipt_.Save(1);
  EXPECT_TRUE(ipt_.ipsets.count("mw_office_hosts_v4") || !ipt_.ipsets.empty());
  EXPECT_FALSE(env_.Has("/var/lib/mailward/iptables.journal"));  // removed once all went in
  auto again = PlanOf(*b, kPolicy);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->in_sync()) << again->changes.size() << " " << again->changes[0].name;
  // A second policy, then the snapshot of the first state back.
  auto second = PlanOf(*b, kPolicy2);
  ASSERT_TRUE(second);
  EXPECT_FALSE(second->in_sync());
  ASSERT_TRUE(b->Apply(*second).ok());
  ASSERT_TRUE(b->Restore(snap->bytes, "").ok());
  EXPECT_EQ(ipt_.Save(0).find("MAILWARD"), std::string::npos);
  EXPECT_TRUE(ipt_.ipsets.empty());
}

TEST_F(IptBackendTest, AFailedIp6tablesRestorePutsEverythingBack) {
  auto b = Make();
  auto plan = PlanOf(*b, kPolicy);
  ASSERT_TRUE(plan);
  ipt_.fail["ip6tables-legacy-restore"] = "ip6tables-restore: line 3 failed";
  Status s = b->Apply(*plan);
  EXPECT_EQ(s.code(), Code::kFirewall);
  EXPECT_NE(s.message().find("everything was put back"), std::string::npos) << s.message();
  EXPECT_EQ(ipt_.Save(0).find("MAILWARD"), std::string::npos) << ipt_.Save(0);  // (legacy: empty tables stay)
  EXPECT_EQ(ipt_.Save(1).find("MAILWARD"), std::string::npos);
  EXPECT_TRUE(ipt_.ipsets.empty());
  EXPECT_FALSE(env_.Has("/var/lib/mailward/iptables.journal"));
}

TEST_F(IptBackendTest, AFailedIpsetRestoreAppliesNothing) {
  auto b = Make();
  auto plan = PlanOf(*b, kPolicy);
  ASSERT_TRUE(plan);
  ipt_.fail["ipset -exist restore"] = "ipset v7: Kernel error";
  Status s = b->Apply(*plan);
  EXPECT_EQ(s.code(), Code::kFirewall);
  EXPECT_NE(s.message().find("nothing was applied"), std::string::npos) << s.message();
  EXPECT_EQ(ipt_.Save(0).find("MAILWARD"), std::string::npos);
}

TEST_F(IptBackendTest, AChangeSinceThePlanMovesTheGeneration) {
  auto b = Make();
  auto plan = PlanOf(*b, kPolicy);
  ASSERT_TRUE(plan);
  ipt_.fam[0]["filter"].Find("INPUT")->rules.push_back("-A INPUT -p tcp --dport 25 -j ACCEPT");
  EXPECT_EQ(b->Apply(*plan).code(), Code::kGenerationMoved);
}

TEST_F(IptBackendTest, AJournalLeftByAKilledApplyIsPutBackBeforeTheNextRead) {
  auto b = Make();
  auto plan = PlanOf(*b, kPolicy);
  ASSERT_TRUE(plan);
  auto before = b->TakeSnapshot(*plan);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(b->Apply(*plan).ok());
  // As if an apply was killed after its journal and part of its changes.
  env_.Put("/var/lib/mailward/iptables.journal", before->bytes);
  auto next = PlanOf(*b, kPolicy);
  ASSERT_TRUE(next);
  EXPECT_FALSE(env_.Has("/var/lib/mailward/iptables.journal"));
  EXPECT_EQ(ipt_.Save(0).find("MAILWARD"), std::string::npos);
  bool noted = false;
  for (const auto& n : next->notes) noted |= n.find("interrupted part-way") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST_F(IptBackendTest, ABusyJournalLockIsReportedAfterItsTimeout) {
  auto b = Make();
  auto plan = PlanOf(*b, kPolicy);
  ASSERT_TRUE(plan);
  env_.held_by_others.insert("/var/lib/mailward/iptables.journal.lock");
  Status s = b->Apply(*plan);
  EXPECT_EQ(s.code(), Code::kBusy);
  EXPECT_NE(s.message().find("still in progress"), std::string::npos);
  EXPECT_GE(env_.now_ms, 1'000'000 + 60'000);  // waited its 60 s on the fake clock
}

TEST_F(IptBackendTest, RestoreOwnCommitLeavesAnotherProcesssLaterChange) {
  auto b = Make();
  auto plan = PlanOf(*b, kPolicy);
  ASSERT_TRUE(plan);
  auto snap = b->TakeSnapshot(*plan);
  ASSERT_TRUE(snap.ok());
  ASSERT_TRUE(b->Apply(*plan).ok());
  ipt_.fam[0]["filter"].Find("INPUT")->rules.push_back("-A INPUT -p tcp --dport 25 -j ACCEPT");
  EXPECT_EQ(b->RestoreOwnCommit(*plan, snap->bytes, "").code(), Code::kGenerationMoved);
  ipt_.fam[0]["filter"].Find("INPUT")->rules.pop_back();
  EXPECT_TRUE(b->RestoreOwnCommit(*plan, snap->bytes, "").ok());
  EXPECT_EQ(ipt_.Save(0).find("MAILWARD"), std::string::npos);
}

TEST_F(IptBackendTest, DamagedSnapshotsAndMissingToolsAreErrorsNotCrashes) {
  auto b = Make();
  EXPECT_EQ(b->Restore("MWUFW2\n", "").code(), Code::kInvalidPolicy);
  EXPECT_FALSE(b->Restore("MWIPT2\nv4 nonsense chain 1\n", "").ok());
  EXPECT_FALSE(b->Restore("MWIPT2\nv4 filter rule -A INPUT -j ACCEPT\n", "").ok());
  ipt_.ipset_installed = false;
  auto p = b->Plan(FromYaml(kPolicy), PlanOptions{});
  EXPECT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("apt install ipset"), std::string::npos);
  ipt_.fail["iptables-legacy-save"] = "iptables-legacy-save: not found";
  EXPECT_EQ(b->Plan(FromYaml(kPolicy), PlanOptions{}).status().code(), Code::kFirewall);
}

TEST_F(IptBackendTest, FollowsTheHostsVariant) {
  env_.env_vars.clear();
  env_.programs.insert("iptables-legacy-save");
  env_.on_run = [this](const std::vector<std::string>& argv, const std::string& input) {
    if (argv[0] == "iptables-save" && argv.size() > 1)
      return FakeEnv::Ok("# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n");
    return ipt_.Run(argv, input);
  };
  auto plan = PlanOf(*Make(), kPolicy);
  ASSERT_TRUE(plan);
  EXPECT_NE(std::find(plan->notes.begin(), plan->notes.end(), "iptables variant: legacy"), plan->notes.end());
  EXPECT_EQ(env_.RunsOf("iptables-legacy-save").size(), 1u);
}

}  // namespace
}  // namespace mw

namespace mw {
namespace {

/// iptables-nft keeps each iptables table in an nftables table of the same name, created on
/// first use: a restore to a snapshot that had none deletes the empty ones (over the netlink
/// transport, here FakeNftKernel) and keeps one that holds anything.
TEST(IptBackendNft, ARestoreDeletesTheEmptyNftTablesTheApplyCreated) {
  testing::FakeEnv env;
  testing::FakeIptables ipt;
  testing::FakeNftKernel kernel;
  ipt.Attach(&env);
  env.env_vars["MAILWARD_IPTABLES"] = "nft";
  BackendConfig cfg;
  cfg.state_dir = "/var/lib/mailward";
  cfg.env = &env;
  cfg.nft_transport = kernel.Factory();
  auto b = MakeIptablesBackend(cfg);
  Ruleset rs = FromYaml(kPolicy);
  auto plan = b->Plan(rs, PlanOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  auto snap = b->TakeSnapshot(**plan);
  ASSERT_TRUE(snap.ok());
  ASSERT_TRUE(b->Apply(**plan).ok());
  // What iptables-nft made: filter with its empty built-in chains, mangle with a rule.
  auto add_chain = [&](const char* table, const char* name, uint32_t hook) {
    auto c = std::shared_ptr<nftnl_chain>(nftnl_chain_alloc(), nftnl_chain_free);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_IPV4);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, hook);
    nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, 0);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
    kernel.state.chains[{NFPROTO_IPV4, table, name}] = c;
  };
  kernel.AddForeignTable(NFPROTO_IPV4, "filter");
  add_chain("filter", "INPUT", NF_INET_LOCAL_IN);
  add_chain("filter", "OUTPUT", NF_INET_LOCAL_OUT);
  kernel.AddForeignTable(NFPROTO_IPV4, "mangle");
  add_chain("mangle", "PREROUTING", NF_INET_PRE_ROUTING);
  auto r = std::shared_ptr<nftnl_rule>(nftnl_rule_alloc(), nftnl_rule_free);
  nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_IPV4);
  nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, "mangle");
  nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, "PREROUTING");
  nftnl_rule_set_u64(r.get(), NFTNL_RULE_HANDLE, 5);
  kernel.state.rules[{NFPROTO_IPV4, "mangle", "PREROUTING"}].push_back(r);

  ASSERT_TRUE(b->Restore(snap->bytes, "").ok());
  EXPECT_FALSE(kernel.HasTable(NFPROTO_IPV4, "filter"));
  EXPECT_TRUE(kernel.HasTable(NFPROTO_IPV4, "mangle"));
  ASSERT_FALSE(kernel.batches.empty());
  EXPECT_EQ(kernel.batches.back().Count(NFT_MSG_DELTABLE), 1u);
}

}  // namespace
}  // namespace mw
