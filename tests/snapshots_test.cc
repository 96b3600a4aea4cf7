// The snapshot store (state/snapshots.h) on FakeEnv: numbering, retention, the uncommitted
// marker, attachments, and writes that fail part-way leaving nothing behind.
#include "state/snapshots.h"

#include <gtest/gtest.h>

#include "fakes/fake_env.h"

namespace mw {
namespace {

using testing::FakeEnv;

const std::string kDir = "/var/lib/mailward";

TEST(Snapshots, NumberedByASequenceThatOnlyGrowsAndTheNewestTenKept) {
  FakeEnv env;
  std::vector<std::string> paths;
  for (int i = 0; i < 12; ++i) {
    auto p = SaveSnapshot(kDir, Snapshot{"MWIPT2\n" + std::to_string(i), ""}, 7, SnapshotInfo{}, env);
    ASSERT_TRUE(p.ok()) << p.status().message();
    paths.push_back(*p);
  }
  EXPECT_EQ(paths[0], kDir + "/snapshots/00000000000000000001.snap");
  auto list = ListSnapshots(kDir, env);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), kSnapshotsKept);
  EXPECT_EQ(list->front().seq, 3u);
  EXPECT_EQ(list->back().seq, 12u);
  EXPECT_EQ(NextSnapshotSeq(*list), 13u);
  EXPECT_FALSE(env.Has(paths[0]));
  EXPECT_EQ(env.Get(paths[11]), "MWIPT2\n11");
  // Uncommitted until the apply says so.
  std::string marker = kDir + "/snapshots/00000000000000000012.uncommitted";
  EXPECT_EQ(env.Get(marker), "7\n");
  MarkCommitted(paths[11], env);
  EXPECT_FALSE(env.Has(marker));
  RemoveSnapshot(paths[11], env);
  EXPECT_FALSE(env.Has(paths[11]));
}

TEST(Snapshots, AnAttachmentIsLinkedAndReadBack) {
  FakeEnv env;
  env.Put(kDir + "/nft-elements.cache", "bulk");
  auto p = SaveSnapshot(kDir, Snapshot{"bytes", kDir + "/nft-elements.cache"}, 1, SnapshotInfo{}, env);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(AttachmentOf(*p), kDir + "/snapshots/00000000000000000001.elements");
  EXPECT_EQ(ReadAttachment(*p, env), "bulk");
  // A missing attachment: the snapshot is not kept half-made.
  auto q = SaveSnapshot(kDir, Snapshot{"bytes", kDir + "/gone"}, 1, SnapshotInfo{}, env);
  EXPECT_EQ(q.status().code(), Code::kIo);
  EXPECT_NE(q.status().message().find("cannot link"), std::string::npos);
  EXPECT_FALSE(env.Has(kDir + "/snapshots/00000000000000000002.uncommitted"));
}

TEST(Snapshots, AFailedWriteLeavesNothingAndAnUntrustedDirectoryIsRefused) {
  FakeEnv env;
  env.on_write = [](const std::string& path) {
    return path.size() > 5 && path.substr(path.size() - 5) == ".snap" ? Status::Io(path + ": No space left on device")
                                                                       : Status::Ok();
  };
  auto p = SaveSnapshot(kDir, Snapshot{"bytes", ""}, 1, SnapshotInfo{}, env);
  EXPECT_EQ(p.status().code(), Code::kIo);
  EXPECT_TRUE(env.ListFiles(kDir + "/snapshots", "")->empty());
  env.on_write = nullptr;
  env.untrusted.insert(kDir + "/snapshots");
  EXPECT_EQ(SaveSnapshot(kDir, Snapshot{"bytes", ""}, 1, SnapshotInfo{}, env).status().code(), Code::kRefused);
}

TEST(Snapshots, InfoSaysWhatMadeItAndWho) {
  FakeEnv env;
  env.Put("/etc/mailward/policy.yaml", "version: 1\n");
  SnapshotInfo info;
  info.command = "apply";
  info.user = "admin (sudo)";
  info.policy = "/etc/mailward/policy.yaml";
  info.policy_sha256 = HashFiles({"/etc/mailward/policy.yaml"}, env);
  EXPECT_EQ(info.policy_sha256.size(), 64u);
  EXPECT_EQ(HashFiles({"/missing"}, env), "");
  auto p = SaveSnapshot(kDir, Snapshot{"bytes", ""}, 1, info, env);
  ASSERT_TRUE(p.ok());
  SnapshotInfo back = ReadSnapshotInfo(*p, env);
  EXPECT_EQ(back.command, "apply");
  EXPECT_EQ(back.user, "admin (sudo)");
  EXPECT_EQ(back.policy_sha256, info.policy_sha256);
  env.Put(kDir + "/snapshots/00000000000000000001.info", "not json");
  EXPECT_EQ(ReadSnapshotInfo(*p, env).command, "");
  env.env_vars["SUDO_USER"] = "alice";
  EXPECT_EQ(CurrentUser(env), "alice (sudo)");
  env.env_vars = {{"INVOCATION_ID", "x"}};
  EXPECT_NE(CurrentUser(env).find("(systemd)"), std::string::npos);
}

TEST(Snapshots, NamesThatAreNotSequenceNumbersAreIgnored) {
  FakeEnv env;
  env.Put(kDir + "/snapshots/latest.snap", "x");
  env.Put(kDir + "/snapshots/00000000000000000004.snap", "x");
  env.Put(kDir + "/snapshots/123456789012345678901.snap", "x");  // 21 digits
  auto list = ListSnapshots(kDir, env);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->front().seq, 4u);
}

}  // namespace
}  // namespace mw
