// The nftables backend against FakeNftKernel (tests/fakes/fake_nft_transport.h): plan, apply,
// verify read-back, snapshot, restore, remove, the generation check, the element cache and
// sharded sets, with no kernel and no netlink socket.
#include <gtest/gtest.h>

#include <algorithm>

#include "backend/backend.h"
#include "backend/host_view.h"
#include "backend/ipt/ipt_rules.h"
#include "analysis/judge.h"
#include "backend/nft/nft_codec.h"
#include "fakes/cidr.h"
#include "fakes/ruleset_yaml.h"
#include "fakes/fake_env.h"
#include "fakes/fake_nft_transport.h"
#include "model/ruleset.h"
#include "policy/policy.h"

namespace mw {
namespace {

using testing::FakeEnv;
using testing::FakeNftKernel;

using testing::FromYaml;

const char* const kPolicy = testing::kOfficePolicy;

const char* kPolicy2 = R"(version: 1
allowlists:
  office: [198.51.100.0/24, 203.0.113.7, 203.0.113.9, "2001:db8::/48"]
ports:
  imap: {state: closed, allow: [office]}
  imaps: {state: open}
  pop3: {state: closed, action: reject}
)";

const char* kPolicy3 = R"(version: 1
ports:
  imaps: {state: open, rate_limit: 20/minute}
  submission: {state: closed}
)";

class NftBackendTest : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> Make(const std::string& state_dir = "/var/lib/mailward") {
    BackendConfig cfg;
    cfg.state_dir = state_dir;
    cfg.env = &env_;
    cfg.nft_transport = kernel_.Factory();
    return MakeNftablesBackend(cfg);
  }
  std::unique_ptr<BackendPlan> PlanOf(Backend& b, const Ruleset& rs) {
    auto p = b.Plan(rs, PlanOptions{});
    EXPECT_TRUE(p.ok()) << p.status().message();
    return p.ok() ? std::move(*p) : nullptr;
  }
  std::string Snap(Backend& b) {
    auto p = b.Plan(Ruleset{}, PlanOptions{});
    EXPECT_TRUE(p.ok());
    auto s = b.TakeSnapshot(**p);
    EXPECT_TRUE(s.ok()) << s.status().message();
    return s.ok() ? s->bytes : "";
  }
  /// The content of a snapshot's attachment (mailward's element record, linked beside it).
  std::string Att(const Snapshot& s) { return s.attachment_path.empty() ? "" : env_.Get(s.attachment_path); }
  FakeEnv env_;
  FakeNftKernel kernel_;
};

TEST_F(NftBackendTest, AppliesThenIsInSync) {
  auto b = Make();
  Ruleset rs = FromYaml(kPolicy);
  auto plan = PlanOf(*b, rs);
  ASSERT_TRUE(plan);
  EXPECT_FALSE(plan->in_sync());
  ASSERT_TRUE(b->Apply(*plan).ok());
  ASSERT_EQ(kernel_.batches.size(), 1u);
  EXPECT_EQ(kernel_.batches[0].genid, plan->generation);
  EXPECT_EQ(kernel_.batches[0].Count(NFT_MSG_NEWTABLE), 1u);
  EXPECT_EQ(kernel_.batches[0].Count(NFT_MSG_NEWCHAIN), 1u);
  EXPECT_GE(kernel_.batches[0].Count(NFT_MSG_NEWRULE), 3u);
  EXPECT_TRUE(kernel_.HasTable(NFPROTO_INET, "mailward"));
  EXPECT_GE(kernel_.RuleCount("mailward", "prerouting"), 3u);
  // The verification read-back, and a second plan from a fresh backend (no element record).
  auto again = PlanOf(*b, rs);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->in_sync()) << ChangeOpName(again->changes[0].op) << " " << again->changes[0].name;
  FakeEnv other_env;
  BackendConfig cfg;
  cfg.env = &other_env;
  cfg.nft_transport = kernel_.Factory();
  auto fresh = MakeNftablesBackend(cfg);
  auto p3 = PlanOf(*fresh, rs);
  ASSERT_TRUE(p3);
  EXPECT_TRUE(p3->in_sync()) << ChangeOpName(p3->changes[0].op) << " " << ChangeObjectName(p3->changes[0].object) << " " << p3->changes[0].name << " "
                             << p3->changes[0].detail << " " << p3->changes[0].count << " " << (p3->changes[0].items.empty() ? "" : p3->changes[0].items[0]) << " n=" << p3->changes.size();
  // A no-op apply sends nothing.
  ASSERT_TRUE(b->Apply(*again).ok());
  EXPECT_EQ(kernel_.batches.size(), 1u);
}

TEST_F(NftBackendTest, OneElementEditSendsOneElementMessage) {
  auto b = Make();
  ASSERT_TRUE(b->Apply(*PlanOf(*b, FromYaml(kPolicy))).ok());
  Ruleset rs2 = FromYaml(kPolicy2);
  auto plan = PlanOf(*b, rs2);
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->changes.size(), 1u);
  EXPECT_EQ(plan->changes[0].object, ChangeObject::kElements);
  ASSERT_TRUE(b->Apply(*plan).ok());
  const auto& batch = kernel_.batches.back();
  ASSERT_EQ(batch.messages.size(), 1u);
  EXPECT_EQ(batch.messages[0].type, NFT_MSG_NEWSETELEM);
  // Decoded with libnftnl: one element, 203.0.113.9.
  nftnl_set* s = nftnl_set_alloc();
  ASSERT_EQ(nftnl_set_elems_nlmsg_parse(batch.messages[0].nlh(), s), 0);
  nftnl_set_elems_iter* it = nftnl_set_elems_iter_create(s);
  size_t n = 0;
  while (nftnl_set_elem* e = nftnl_set_elems_iter_next(it)) {
    uint32_t len = 0;
    auto* key = static_cast<const uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
    ASSERT_EQ(len, 4u);
    EXPECT_EQ(key[0], 203);
    EXPECT_EQ(key[3], 9);
    ++n;
  }
  nftnl_set_elems_iter_destroy(it);
  nftnl_set_free(s);
  EXPECT_EQ(n, 1u);
  EXPECT_TRUE(PlanOf(*b, rs2)->in_sync());
}

TEST_F(NftBackendTest, AForeignCommitBetweenPlanAndApplyMovesTheGeneration) {
  auto b = Make();
  Ruleset rs = FromYaml(kPolicy);  // outlives the plan, which points at it
  auto plan = PlanOf(*b, rs);
  ASSERT_TRUE(plan);
  kernel_.AddForeignTable(NFPROTO_INET, "filter");
  Status s = b->Apply(*plan);
  EXPECT_EQ(s.code(), Code::kGenerationMoved) << s.message();
  EXPECT_FALSE(kernel_.HasTable(NFPROTO_INET, "mailward"));
}

TEST_F(NftBackendTest, AMidBatchFailureLeavesNothing) {
  auto b = Make();
  Ruleset rs = FromYaml(kPolicy);  // outlives the plan, which points at it
  auto plan = PlanOf(*b, rs);
  ASSERT_TRUE(plan);
  uint32_t gen = kernel_.generation;
  kernel_.fail_message = {{3, ENOENT}};
  Status s = b->Apply(*plan);
  EXPECT_EQ(s.code(), Code::kNetlink);
  EXPECT_NE(s.message().find("nothing was applied"), std::string::npos) << s.message();
  EXPECT_FALSE(kernel_.HasTable(NFPROTO_INET, "mailward"));
  EXPECT_EQ(kernel_.generation, gen);
}

TEST_F(NftBackendTest, SnapshotRestoresByteIdentical) {
  auto b = Make();
  ASSERT_TRUE(b->Apply(*PlanOf(*b, FromYaml(kPolicy))).ok());
  std::string before = Snap(*b);
  ASSERT_FALSE(before.empty());
  Ruleset rs3 = FromYaml(kPolicy3);
  auto plan3 = PlanOf(*b, rs3);
  ASSERT_TRUE(plan3);
  auto snap = b->TakeSnapshot(*plan3);  // what plan3 was made against: the first state
  ASSERT_TRUE(snap.ok());
  std::string att = Att(*snap);  // the record is linked beside the snapshot when it is taken
  ASSERT_TRUE(b->Apply(*plan3).ok());
  EXPECT_NE(Snap(*b), before);
  // rollback --dry-run: lists changes, changes nothing.
  uint32_t gen = kernel_.generation;
  size_t sent = kernel_.batches.size();
  auto dry = b->PlanRestore(snap->bytes, att, PlanOptions{});
  ASSERT_TRUE(dry.ok()) << dry.status().message();
  EXPECT_FALSE(dry->empty());
  EXPECT_EQ(kernel_.generation, gen);
  EXPECT_EQ(kernel_.batches.size(), sent);
  ASSERT_TRUE(b->Restore(snap->bytes, att).ok());
  EXPECT_EQ(Snap(*b), before);
  EXPECT_TRUE(PlanOf(*b, FromYaml(kPolicy))->in_sync());
}

TEST_F(NftBackendTest, DamagedSnapshotsAreRefusedAlikeByRestoreAndItsDryRun) {
  const Ruleset rs = FromYaml(kPolicy);
  ASSERT_TRUE(Make()->Apply(*PlanOf(*Make(), rs)).ok());
  auto b = Make();  // another run: it plans from the record file, so the snapshot links it
  const Ruleset rs3 = FromYaml(kPolicy3);  // outlives the plan, which refers to it
  auto plan = PlanOf(*b, rs3);
  auto snap = b->TakeSnapshot(*plan);
  ASSERT_TRUE(snap.ok());
  const std::string att = Att(*snap);
  ASSERT_FALSE(att.empty());  // the sets are in the linked record
  ASSERT_TRUE(b->Apply(*plan).ok());
  const std::string good = snap->bytes;
  std::string bad_type = good;
  bad_type[7] = 0x42;  // the first record's type
  std::string bad_kind = good;
  // A set's element record: type (2 bytes, 0xfff1 little-endian), length (4), family, kind,
  // name length (4), name: the kind is 5 bytes before the name.
  size_t at = good.find("allow_office");
  while (at != std::string::npos && !(at >= 12 && static_cast<uint8_t>(good[at - 12]) == 0xf1 &&
                                      static_cast<uint8_t>(good[at - 11]) == 0xff))
    at = good.find("allow_office", at + 1);
  ASSERT_NE(at, std::string::npos) << "no element record in the snapshot";
  bad_kind[at - 5] = 9;
  struct Case {
    std::string snap, att, message;
  };
  for (const Case& c : {Case{"MWSN1\n\x01", att, "not a mailward nftables snapshot"},
                        Case{good.substr(0, good.size() - 3), att, "truncated snapshot"},
                        Case{bad_type, att, "unexpected message type"},
                        Case{bad_kind, att, "corrupt snapshot"},
                        Case{good, "", "element file is missing or corrupt"}}) {
    uint32_t gen = kernel_.generation;
    auto dry = b->PlanRestore(c.snap, c.att, PlanOptions{});
    ASSERT_FALSE(dry.ok()) << c.message;
    EXPECT_NE(dry.status().message().find(c.message), std::string::npos) << dry.status().message();
    Status real = b->Restore(c.snap, c.att);
    ASSERT_FALSE(real.ok()) << c.message;
    EXPECT_NE(real.message().find(c.message), std::string::npos) << real.message();
    EXPECT_EQ(kernel_.generation, gen);  // nothing was sent
  }
  // The intact one still restores.
  ASSERT_TRUE(b->Restore(good, att).ok());
  EXPECT_TRUE(PlanOf(*b, FromYaml(kPolicy))->in_sync());
}

TEST_F(NftBackendTest, RestoreOwnCommitRefusesAfterAForeignCommit) {
  auto b = Make();
  Ruleset rs = FromYaml(kPolicy);  // outlives the plan, which points at it
  auto plan = PlanOf(*b, rs);
  auto snap = b->TakeSnapshot(*plan);
  ASSERT_TRUE(snap.ok());
  std::string att = Att(*snap);
  ASSERT_TRUE(b->Apply(*plan).ok());
  kernel_.AddForeignTable(NFPROTO_IPV4, "other");
  EXPECT_EQ(b->RestoreOwnCommit(*plan, snap->bytes, att).code(), Code::kGenerationMoved);
  EXPECT_TRUE(kernel_.HasTable(NFPROTO_INET, "mailward"));
}

TEST_F(NftBackendTest, RestoreOwnCommitUndoesItsOwnApply) {
  auto b = Make();
  Ruleset rs = FromYaml(kPolicy);  // outlives the plan, which points at it
  auto plan = PlanOf(*b, rs);
  auto snap = b->TakeSnapshot(*plan);
  ASSERT_TRUE(snap.ok());
  std::string att = Att(*snap);
  ASSERT_TRUE(b->Apply(*plan).ok());
  ASSERT_TRUE(b->RestoreOwnCommit(*plan, snap->bytes, att).ok());
  EXPECT_FALSE(kernel_.HasTable(NFPROTO_INET, "mailward"));
}

TEST_F(NftBackendTest, PlanRemoveThenApplyLeavesNoTable) {
  auto b = Make();
  auto none = b->PlanRemove(PlanOptions{});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE((*none)->in_sync());
  size_t sent = kernel_.batches.size();
  ASSERT_TRUE(b->Apply(**none).ok());  // nothing to remove: nothing sent, nothing recorded
  EXPECT_EQ(kernel_.batches.size(), sent);
  ASSERT_TRUE(b->Apply(*PlanOf(*b, FromYaml(kPolicy))).ok());
  auto rm = b->PlanRemove(PlanOptions{});
  ASSERT_TRUE(rm.ok());
  EXPECT_FALSE((*rm)->in_sync());
  ASSERT_TRUE(b->Apply(**rm).ok());
  EXPECT_FALSE(kernel_.HasTable(NFPROTO_INET, "mailward"));
  EXPECT_EQ(kernel_.batches.back().Count(NFT_MSG_DELTABLE), 1u);
  EXPECT_FALSE(env_.Has("/var/lib/mailward/nft-elements.cache"));
}

TEST_F(NftBackendTest, DriftIsSeen) {
  auto b = Make();
  Ruleset rs = FromYaml(kPolicy);
  ASSERT_TRUE(b->Apply(*PlanOf(*b, rs)).ok());
  std::string set;
  for (const auto& n : kernel_.SetNames("mailward"))
    if (kernel_.ElementCount("mailward", n) > 0) set = n;
  ASSERT_FALSE(set.empty());
  ASSERT_TRUE(kernel_.RemoveFirstElement("mailward", set));
  auto plan = PlanOf(*b, rs);
  ASSERT_TRUE(plan);
  EXPECT_FALSE(plan->in_sync());
  ASSERT_TRUE(b->Apply(*plan).ok());
  EXPECT_TRUE(PlanOf(*b, rs)->in_sync());
}

TEST_F(NftBackendTest, TheElementCacheIsTrustedOnlyAtTheSameGeneration) {
  auto b = Make();
  Ruleset rs = FromYaml(kPolicy);
  ASSERT_TRUE(b->Apply(*PlanOf(*b, rs)).ok());
  ASSERT_TRUE(env_.Has("/var/lib/mailward/nft-elements.cache"));
  // A new backend (another run) at the same generation plans from the record: no element dump.
  auto count_elem_dumps = [&](Backend& be) {
    size_t dumps = 0;
    auto inner = kernel_.Factory();
    BackendConfig cfg;
    cfg.state_dir = "/var/lib/mailward";
    cfg.env = &env_;
    (void)be;
    cfg.nft_transport = [&]() -> Result<std::unique_ptr<nft::Transport>> {
      struct Counting : nft::Transport {
        FakeNftKernel* k;
        size_t* n;
        Status Request(const std::function<nlmsghdr*(char*, uint32_t)>& build,
                       const std::function<int(const nlmsghdr*)>& cb) override {
          return k->Request(
              [&](char* buf, uint32_t seq) {
                nlmsghdr* nlh = build(buf, seq);
                if ((nlh->nlmsg_type & 0xff) == NFT_MSG_GETSETELEM) ++*n;
                return nlh;
              },
              cb);
        }
        Status Send(const nft::Batch& batch) override { return k->Apply(batch); }
      };
      auto t = std::make_unique<Counting>();
      t->k = &kernel_;
      t->n = &dumps;
      return std::unique_ptr<nft::Transport>(std::move(t));
    };
    auto fresh = MakeNftablesBackend(cfg);
    auto p = fresh->Plan(rs, PlanOptions{});
    EXPECT_TRUE(p.ok());
    EXPECT_TRUE((*p)->in_sync());
    return dumps;
  };
  EXPECT_EQ(count_elem_dumps(*b), 0u);
  // A foreign commit: the record is not trusted, the elements are dumped.
  kernel_.AddForeignTable(NFPROTO_IPV4, "other");
  EXPECT_GT(count_elem_dumps(*b), 0u);
}

TEST_F(NftBackendTest, ShardedSetsRoundTrip) {
  std::string yaml = "version: 1\nallowlists:\n  many: [";
  const int kHosts = 40000;
  for (int i = 0; i < kHosts; ++i)
    yaml += (i ? "," : "") + std::string("10.") + std::to_string(1 + i / 65536) + "." + std::to_string((i / 256) % 256) + "." +
            std::to_string(i % 256);
  yaml += "]\nports:\n  imap: {state: closed, allow: [many]}\n";
  Ruleset rs = FromYaml(yaml);
  auto b = Make();
  auto plan = PlanOf(*b, rs);
  ASSERT_TRUE(plan);
  ASSERT_TRUE(b->Apply(*plan).ok());
  size_t total = 0, sets_with = 0;
  for (const auto& n : kernel_.SetNames("mailward")) {
    size_t c = kernel_.ElementCount("mailward", n);
    total += c;
    sets_with += c > 0;
  }
  EXPECT_EQ(total, static_cast<size_t>(kHosts));
  EXPECT_GT(sets_with, 1u);  // sharded
  EXPECT_TRUE(PlanOf(*b, rs)->in_sync());
  // From the kernel (no record), across multipart dumps.
  env_.files.clear();
  auto fresh = Make();
  EXPECT_TRUE(PlanOf(*fresh, rs)->in_sync());
  // Snapshot and restore of the sharded sets.
  Ruleset small = FromYaml(kPolicy);
  auto to_small = PlanOf(*fresh, small);
  auto snap = fresh->TakeSnapshot(*to_small);
  ASSERT_TRUE(snap.ok());
  std::string att = Att(*snap);
  ASSERT_TRUE(fresh->Apply(*to_small).ok());
  ASSERT_TRUE(fresh->Restore(snap->bytes, att).ok());
  EXPECT_TRUE(PlanOf(*fresh, rs)->in_sync());
}

TEST_F(NftBackendTest, TheVerificationReadBackTakesItsOwnWriteAsRead) {
  // 40,000 hosts (sharded, the backend's own copy) and the small policy (the caller's ruleset).
  std::string yaml = "version: 1\nallowlists:\n  many: [";
  for (int i = 0; i < 40000; ++i)
    yaml += (i ? "," : "") + std::string("10.1.") + std::to_string(i / 256) + "." + std::to_string(i % 256);
  yaml += "]\nports:\n  imap: {state: closed, allow: [many]}\n";
  for (const std::string& text : {yaml, std::string(kPolicy)}) {
    SCOPED_TRACE(text.size() > 1000 ? "40,000 hosts" : "small policy");
    kernel_ = FakeNftKernel();
    env_.files.clear();
    auto b = Make();
    auto rs = std::make_unique<Ruleset>(FromYaml(text));
    ASSERT_TRUE(b->Apply(*PlanOf(*b, *rs)).ok());
    PlanOptions verify;
    verify.verify_read_back = true;
    // (1) Another ruleset under the flag, while the record of the write is held: compared, not
    // taken as read (one address more shows).
    Ruleset other = *rs;
    for (auto& set : other.sets)
      if (set.spec.kind == SetSpec::Kind::kAllowHosts && set.spec.family == Family::kV4 && !set.intervals.empty()) {
        Interval iv = HostInterval(Family::kV4, testing::C("192.0.2.200").addr);
        set.intervals.insert(std::upper_bound(set.intervals.begin(), set.intervals.end(), iv), iv);  // canonical: sorted
        break;
      }
    auto d = b->Plan(other, verify);
    ASSERT_TRUE(d.ok());
    ASSERT_FALSE((*d)->in_sync());
    EXPECT_EQ((*d)->changes[0].object, ChangeObject::kElements);
    EXPECT_EQ((*d)->changes[0].count, 1u);
    // (2) The very ruleset just applied: in sync with no element dump, and a snapshot of that
    // plan still holds every element (taken from the plan's own sets).
    auto rs2 = std::make_unique<Ruleset>(other);
    ASSERT_TRUE(b->Apply(*PlanOf(*b, *rs2)).ok());
    auto elem_dumps = [&] {
      size_t n = 0;
      for (uint16_t t : kernel_.requests) n += t == NFT_MSG_GETSETELEM;
      return n;
    };
    size_t before = elem_dumps();
    auto v = b->Plan(*rs2, verify);
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE((*v)->in_sync());
    EXPECT_EQ(elem_dumps(), before);
    auto snap = b->TakeSnapshot(**v);
    ASSERT_TRUE(snap.ok()) << snap.status().message();
    // (3) The caller's ruleset may go while the backend holds the record of its write.
    const Ruleset keep = *rs2;
    ASSERT_TRUE(b->Apply(*PlanOf(*b, *rs2)).ok());  // a no-op apply: the record is made again
    rs2.reset();
    auto again = b->Plan(keep, verify);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE((*again)->in_sync());
    // (4) The snapshot restores the whole table after it is emptied.
    ASSERT_TRUE(b->Apply(*PlanOf(*b, Ruleset{})).ok());
    ASSERT_TRUE(b->Restore(snap->bytes, Att(*snap)).ok());
    auto fresh = Make("");
    auto last = PlanOf(*fresh, keep);
    EXPECT_TRUE(last->in_sync()) << ChangeOpName(last->changes[0].op) << " " << ChangeObjectName(last->changes[0].object)
                                 << " " << last->changes[0].name << " " << last->changes[0].detail;
  }
}

TEST_F(NftBackendTest, NoPermissionIsAnError) {
  kernel_.fail_requests = EPERM;
  auto b = Make();
  auto p = b->Plan(FromYaml(kPolicy), PlanOptions{});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("Operation not permitted"), std::string::npos) << p.status().message();
}

TEST_F(NftBackendTest, HostViewReadsThroughTheFakes) {
  auto b = Make();
  ASSERT_TRUE(b->Apply(*PlanOf(*b, FromYaml(kPolicy))).ok());
  kernel_.AddForeignTable(NFPROTO_INET, "filter");
  env_.files["/proc/sys/net/ipv4/ip_forward"] = {"0\n", 0644};
  env_.files["/proc/sys/net/ipv6/conf/all/forwarding"] = {"1\n", 0644};
  BackendConfig cfg;
  cfg.env = &env_;
  cfg.nft_transport = kernel_.Factory();
  HostViewOptions opts;
  opts.backend = &cfg;
  auto hv = ReadHostView(opts);
  ASSERT_TRUE(hv.ok()) << hv.status().message();
  EXPECT_FALSE(hv->forwarding[0]);
  EXPECT_TRUE(hv->forwarding[1]);
  EXPECT_FALSE(hv->topo.tables.empty());
}

}  // namespace
}  // namespace mw

namespace mw {
namespace {

TEST(HostView, ReadsIptablesAndIpsetsThroughTheEnv) {
  testing::FakeEnv env;
  testing::FakeNftKernel kernel;
  env.programs = {"iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ipset"};
  env.files["/proc/net/ip_tables_names"] = {"filter\n", 0444};
  env.on_run = [](const std::vector<std::string>& argv, const std::string&) {
    ProcessResult r;
    r.status = 0;
    if (argv[0] == "iptables-nft-save") {
      r.out = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -m set --match-set blk src -m tcp --dport 143 -j DROP\nCOMMIT\n";
    } else if (argv[0] == "iptables-legacy-save") {
      r.out = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
    } else if (argv[0] == "ipset") {
      r.out = "create blk hash:ip family inet hashsize 1024 maxelem 65536\nadd blk 192.0.2.1\n";
    } else {
      r.status = 1;
      r.err = "cannot initialize ip6tables table";
    }
    return r;
  };
  BackendConfig cfg;
  cfg.env = &env;
  cfg.nft_transport = kernel.Factory();
  HostViewOptions opts;
  opts.backend = &cfg;
  auto hv = ReadHostView(opts);
  ASSERT_TRUE(hv.ok()) << hv.status().message();
  EXPECT_FALSE(hv->topo.tables.empty());
  ASSERT_EQ(hv->notes.size(), 1u);
  EXPECT_NE(hv->notes[0].find("ip6tables-nft-save failed"), std::string::npos) << hv->notes[0];
  EXPECT_EQ(env.RunsOf("ipset save blk").size(), 1u);
  // nftables unreadable: a note, since iptables could be read.
  kernel.fail_requests = EPERM;
  auto hv2 = ReadHostView(opts);
  ASSERT_TRUE(hv2.ok());
  EXPECT_NE(hv2->notes.back().find("nftables could not be read"), std::string::npos);
  // Nothing readable at all: the error.
  env.programs.clear();
  EXPECT_FALSE(ReadHostView(opts).ok());
}

TEST(HostView, ClaimsAndConflicts) {
  auto p = ParsePolicyText(kPolicy, "test.yaml");
  ASSERT_TRUE(p.ok());
  auto claims = ClaimsOf(*p);
  ASSERT_EQ(claims.size(), 3u);
  bool imap_with_office = false;
  for (const auto& c : claims) imap_with_office |= c.port == 143 && !c.open && c.allowlists.size() == 1;
  EXPECT_TRUE(imap_with_office);
  analysis::Judgement j;
  analysis::Violation mine;  // mailward's own drift: the plan's business
  mine.owner = "mailward";
  j.violations.push_back(mine);
  analysis::Violation v;
  v.kind = analysis::ConflictKind::kClosedPortReachable;
  v.port = 143;
  v.family = Family::kV6;
  v.certainty = analysis::Tri::kMaybe;
  v.owner = "Docker";
  v.destination = "172.17.0.2:143";
  j.violations.push_back(v);
  auto cs = ToConflicts(j);
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].family, "ipv6");
  EXPECT_STREQ(CertaintyName(cs[0]), "may reach");
  EXPECT_EQ(cs[0].kind, analysis::ConflictKind::kClosedPortReachable);
  EXPECT_EQ(cs[0].destination, "172.17.0.2:143");
}

}  // namespace
}  // namespace mw

namespace mw {
namespace {

TEST(BackendForSnapshot, EachSnapshotGoesBackToItsBackend) {
  testing::FakeEnv env;
  BackendConfig cfg;
  cfg.env = &env;
  cfg.netlink = false;
  EXPECT_EQ(BackendForSnapshot("MWIPT2\n...", cfg)->name(), "iptables");
  EXPECT_EQ(BackendForSnapshot("MWUFW1\n...", cfg)->name(), "ufw");
  EXPECT_EQ(BackendForSnapshot("MWSN2\n\x01", cfg)->name(), "nftables");
}

}  // namespace
}  // namespace mw

namespace mw {
namespace {

/// Another program's table inet filter: a base input chain whose rule drops sources in its own
/// set "blocked" (mailward's allowlist rule, moved there); the engine looks the set up through
/// the transport when it judges a claim.
TEST(HostView, ForeignSetsAreDumpedWhenTheEngineLooksThemUp) {
  testing::FakeEnv env;
  testing::FakeNftKernel kernel;
  kernel.AddForeignTable(NFPROTO_INET, "filter");
  auto chain = std::shared_ptr<nftnl_chain>(nftnl_chain_alloc(), nftnl_chain_free);
  nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
  nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_TABLE, "filter");
  nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_NAME, "input");
  nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_HOOKNUM, NF_INET_LOCAL_IN);
  nftnl_chain_set_s32(chain.get(), NFTNL_CHAIN_PRIO, 0);
  nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_TYPE, "filter");
  nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
  FakeNftKernel::Key ck{NFPROTO_INET, "filter", "input"};
  kernel.state.chains[ck] = chain;

  Ruleset rs = FromYaml(kPolicy);
  // The allowlist's IPv4 set of `kind` and the rule that looks it up, in table filter's input.
  auto plant = [&](SetSpec::Kind kind, uint64_t handle) {
    const SetSpec* spec = nullptr;
    for (const auto& s : rs.sets)
      if (s.spec.kind == kind && s.spec.family == Family::kV4) spec = &s.spec;
    EXPECT_TRUE(spec);
    const RuleSpec* lookup = nullptr;
    for (const auto& r : rs.rules)
      if (spec && r.saddr_set == spec->name) lookup = &r;
    EXPECT_TRUE(lookup);
    FakeNftKernel::Key key{NFPROTO_INET, "filter", spec ? spec->name : ""};
    if (!spec || !lookup) return key;
    nft::SetPtr set = nft::BuildSet(*spec);
    nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, "filter");
    nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    kernel.state.sets[key] = std::shared_ptr<nftnl_set>(set.release(), nftnl_set_free);
    nft::RulePtr rule = nft::BuildRule(*lookup);
    nftnl_rule_set_str(rule.get(), NFTNL_RULE_TABLE, "filter");
    nftnl_rule_set_str(rule.get(), NFTNL_RULE_CHAIN, "input");
    nftnl_rule_set_u32(rule.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    nftnl_rule_set_u64(rule.get(), NFTNL_RULE_HANDLE, handle);
    kernel.state.rules[ck].push_back(std::shared_ptr<nftnl_rule>(rule.release(), nftnl_rule_free));
    return key;
  };
  FakeNftKernel::Key sk = plant(SetSpec::Kind::kAllowHosts, 99);
  FakeNftKernel::Elem e;
  e.key = {203, 0, 113, 7};
  kernel.state.elements[sk][{e.key, false}] = e;

  // And the interval set of the allowlist's networks, with its rule.
  FakeNftKernel::Key nk = plant(SetSpec::Kind::kAllowNets, 100);
  FakeNftKernel::Elem start, end;
  start.key = {198, 51, 100, 0};
  end.key = {198, 51, 101, 0};
  end.flags = NFT_SET_ELEM_INTERVAL_END;
  kernel.state.elements[nk][{start.key, false}] = start;
  kernel.state.elements[nk][{end.key, true}] = end;

  BackendConfig cfg;
  cfg.env = &env;
  cfg.nft_transport = kernel.Factory();
  HostViewOptions opts;
  opts.backend = &cfg;
  auto hv = ReadHostView(opts);
  ASSERT_TRUE(hv.ok()) << hv.status().message();
  auto p = ParsePolicyText(kPolicy, "test.yaml");
  ASSERT_TRUE(p.ok());
  auto dumps = [&] { return std::count(kernel.requests.begin(), kernel.requests.end(), NFT_MSG_GETSETELEM); };
  EXPECT_EQ(dumps(), 0);  // the foreign set's elements: only when looked up
  analysis::Interface eth0;  // this machine's own interfaces do not matter
  eth0.name = "eth0";
  Cidr c;
  c.addr.b[0] = 198, c.addr.b[1] = 51, c.addr.b[2] = 100, c.addr.b[3] = 1;
  c.prefix = 24;
  eth0.addresses.push_back(c);
  (void)analysis::Judge(hv->topo, {eth0}, ClaimsOf(*p), hv->forwarding);
  EXPECT_EQ(dumps(), 2);  // each set dumped once, then cached
  EXPECT_TRUE(kernel.batches.empty());  // read only
}

}  // namespace
}  // namespace mw

namespace mw {
namespace {

TEST(HostView, MailwardsIpsetsComeFromTheDesiredRuleset) {
  testing::FakeEnv env;
  testing::FakeNftKernel kernel;
  Ruleset rs = FromYaml(kPolicy);
  std::string name;
  for (const auto& s : rs.sets)
    if (s.spec.is_allow() && s.spec.family == Family::kV4 && !s.intervals.empty()) name = ipt::IpsetName(s.spec.name);
  ASSERT_FALSE(name.empty());
  env.programs = {"iptables-nft-save", "ipset"};
  env.on_run = [&](const std::vector<std::string>& argv, const std::string&) {
    ProcessResult r;
    r.status = argv[0] == "iptables-nft-save" ? 0 : 1;
    if (r.status == 0)
      r.out = "*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -m set --match-set " + name +
              " src -m tcp --dport 143 -j ACCEPT\nCOMMIT\n";
    return r;
  };
  BackendConfig cfg;
  cfg.env = &env;
  cfg.nft_transport = kernel.Factory();
  HostViewOptions opts;
  opts.backend = &cfg;
  opts.desired_ipsets = &rs;
  auto hv = ReadHostView(opts);
  ASSERT_TRUE(hv.ok()) << hv.status().message();
  EXPECT_TRUE(env.RunsOf("ipset").empty());  // not dumped: taken from the ruleset
}

}  // namespace
}  // namespace mw

namespace mw {
namespace {

TEST_F(NftBackendTest, ARefusedBatchPlannedFromTheRecordDropsTheRecord) {
  Ruleset rs = FromYaml(kPolicy);
  {
    auto b = Make();
    ASSERT_TRUE(b->Apply(*PlanOf(*b, rs)).ok());
  }
  ASSERT_TRUE(env_.Has("/var/lib/mailward/nft-elements.cache"));
  auto b = Make();  // another run: plans from the record
  Ruleset rs2 = FromYaml(kPolicy2);
  auto plan = PlanOf(*b, rs2);
  ASSERT_TRUE(plan);
  kernel_.fail_message = {{0, ENOENT}};
  Status s = b->Apply(*plan);
  EXPECT_EQ(s.code(), Code::kNetlink);
  EXPECT_NE(s.message().find("is now dropped"), std::string::npos) << s.message();
  EXPECT_FALSE(env_.Has("/var/lib/mailward/nft-elements.cache"));
}

TEST_F(NftBackendTest, TheHostViewJudgesMailwardsTableAsPlanned) {
  Ruleset rs = FromYaml(kPolicy);
  BackendConfig cfg;
  cfg.env = &env_;
  cfg.nft_transport = kernel_.Factory();
  HostViewOptions opts;
  opts.backend = &cfg;
  opts.desired_nft = &rs;
  auto hv = ReadHostView(opts);
  ASSERT_TRUE(hv.ok()) << hv.status().message();
  // Nothing applied, yet mailward's chain is there as the plan would make it.
  ASSERT_FALSE(hv->topo.tables.empty());
  bool own = false;
  for (const auto& t : hv->topo.tables) own |= t.Label().find("mailward") != std::string::npos;
  EXPECT_TRUE(own);
  EXPECT_FALSE(kernel_.HasTable(NFPROTO_INET, "mailward"));
}

}  // namespace
}  // namespace mw
