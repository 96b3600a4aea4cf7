// The state directory and the files in it: trusted only when root's own, never written through a
// planted symlink, never blocked on by a FIFO. Also the text helpers for errors and JSON.
#include "util/fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>

#include "util/text.h"

namespace mw {
namespace {

#define EXPECT_HAS(hay, needle) EXPECT_NE((hay).find(needle), std::string::npos) << (hay)

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mwfsXXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string Slurp(const std::string& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(StateDir, RootsOwnDirectoryIsTrusted) {
  if (geteuid() != 0) GTEST_SKIP() << "the checks apply to root only";
  TempDir d;
  EXPECT_TRUE(CheckTrusted(d.path(), TrustedKind::kStateDir).ok());
}

TEST(StateDir, GroupOrOtherWritableIsRefusedWithTheFix) {
  if (geteuid() != 0) GTEST_SKIP() << "the checks apply to root only";
  TempDir d;
  for (mode_t m : {0770, 0707, 0777, 01777}) {
    chmod(d.path().c_str(), m);
    Status s = CheckTrusted(d.path(), TrustedKind::kStateDir);
    ASSERT_FALSE(s.ok()) << std::oct << m;
    EXPECT_EQ(s.code(), Code::kRefused);
    EXPECT_HAS(s.message(), "writable by group or others");
    EXPECT_HAS(s.message(), "chown root:root " + d.path() + "; chmod 700 " + d.path());
  }
}

TEST(StateDir, NotOwnedByRootIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "the checks apply to root only";
  TempDir d;
  ASSERT_EQ(chown(d.path().c_str(), 65534, 65534), 0);
  Status s = CheckTrusted(d.path(), TrustedKind::kStateDir);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.message(), "owned by uid 65534, not root");
}

TEST(StateDir, AParentOthersCanWriteIsRefusedUnlessSticky) {
  if (geteuid() != 0) GTEST_SKIP() << "the checks apply to root only";
  TempDir d;
  std::string inner = d / "state";
  ASSERT_EQ(mkdir(inner.c_str(), 0700), 0);
  chmod(d.path().c_str(), 0777);  // someone could rename state away and put their own there
  Status s = CheckTrusted(inner, TrustedKind::kStateDir);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.message(), d.path() + " is writable by group or others");
  chmod(d.path().c_str(), 01777);  // like /tmp: others cannot rename what root owns
  EXPECT_TRUE(CheckTrusted(inner, TrustedKind::kStateDir).ok());
}

TEST(StateDir, ASymlinkToAnOthersDirectoryIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "the checks apply to root only";
  TempDir d;
  std::string theirs = d / "theirs";
  ASSERT_EQ(mkdir(theirs.c_str(), 0700), 0);
  ASSERT_EQ(chown(theirs.c_str(), 65534, 65534), 0);
  ASSERT_EQ(symlink(theirs.c_str(), (d / "state").c_str()), 0);
  Status s = CheckTrusted(d / "state", TrustedKind::kStateDir);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.message(), "owned by uid 65534");
}

TEST(StateDir, AtomicWriteReplacesAPlantedSymlinkAndNeverWritesThroughIt) {
  TempDir d;
  std::string victim = d / "victim";
  std::ofstream(victim) << "precious";
  std::string path = d / "pending-confirm";
  ASSERT_EQ(symlink(victim.c_str(), path.c_str()), 0);
  // The old predictable temporary names, planted too.
  for (int pid : {getpid(), getpid() + 1})
    ASSERT_EQ(symlink(victim.c_str(), (path + ".tmp." + std::to_string(pid)).c_str()), 0);
  ASSERT_TRUE(WriteFileAtomic(path, "new", Durability::kFsync).ok());
  EXPECT_EQ(Slurp(victim), "precious");
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(Slurp(path), "new");
  // No temporary left behind.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(d.path())) files += e.path().string().find(".tmp.") == std::string::npos;
  EXPECT_EQ(files, 2);  // victim and pending-confirm
}

TEST(StateDir, AtomicWriteKeepsTheAskedMode) {
  TempDir d;
  ASSERT_TRUE(WriteFileAtomic(d / "metrics.prom", "x 1\n", Durability::kNoFsync, 0644).ok());
  struct stat st;
  ASSERT_EQ(stat((d / "metrics.prom").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST(StateDir, StateFilesAreNeverOpenedThroughASymlink) {
  TempDir d;
  std::string victim = d / "victim";
  std::ofstream(victim) << "precious";
  ASSERT_EQ(symlink(victim.c_str(), (d / "lock").c_str()), 0);
  int fd = OpenStateFile(d / "lock", O_RDWR | O_CREAT);
  EXPECT_LT(fd, 0);
  if (fd >= 0) close(fd);
  ASSERT_EQ(symlink(victim.c_str(), (d / "confirm.log").c_str()), 0);
  fd = OpenStateFile(d / "confirm.log", O_WRONLY | O_CREAT | O_APPEND);
  EXPECT_LT(fd, 0);
  if (fd >= 0) close(fd);
  EXPECT_EQ(Slurp(victim), "precious");
  auto r = ReadFile(d / "lock", Follow::kNoSymlinks);
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), "is a symlink");
  // A FIFO planted at a state file: refused at once.
  ASSERT_EQ(mkfifo((d / "fifo").c_str(), 0600), 0);
  EXPECT_LT(OpenStateFile(d / "fifo", O_RDWR | O_CREAT), 0);
  // A regular file opens.
  fd = OpenStateFile(d / "real", O_RDWR | O_CREAT);
  EXPECT_GE(fd, 0);
  if (fd >= 0) close(fd);
}

TEST(ReadFile, AFifoIsRefusedAtOnceNotWaitedOn) {
  TempDir d;
  ASSERT_EQ(mkfifo((d / "fifo").c_str(), 0600), 0);
  auto fut = std::async(std::launch::async, [&] { return ReadFile(d / "fifo"); });
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(5)), std::future_status::ready) << "ReadFile blocked on a FIFO";
  auto r = fut.get();
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), "not a regular file");
  auto dev = ReadFile("/dev/zero");
  ASSERT_FALSE(dev.ok());
  EXPECT_HAS(dev.status().message(), "not a regular file");
}

TEST(ListFiles, ADanglingSymlinkIsAnErrorNotSkipped) {
  TempDir d;
  std::ofstream(d / "10-a.yaml") << "version: 1\n";
  ASSERT_EQ(symlink((d / "missing.yaml").c_str(), (d / "20-pop3.yaml").c_str()), 0);
  auto r = ListFiles(d.path(), ".yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.status().message(), d / "20-pop3.yaml");
  EXPECT_HAS(r.status().message(), "dangling symlink");
  // Other names are not looked at.
  unlink((d / "20-pop3.yaml").c_str());
  ASSERT_EQ(symlink((d / "missing").c_str(), (d / "README").c_str()), 0);
  auto ok = ListFiles(d.path(), ".yaml");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->size(), 1u);
}

TEST(Text, ExcerptIsShortAndEscaped) {
  std::string huge(20u << 20, 'a');
  std::string e = Excerpt(huge);
  EXPECT_EQ(e.size(), 83u);
  EXPECT_EQ(e.substr(80), "...");
  EXPECT_EQ(Excerpt("a\nb\x1b[31m\t\\\x00z", 80), "a\\nb\\x1b[31m\\t\\\\");
  EXPECT_EQ(Excerpt(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(Excerpt("caf\xe9"), "caf\\xe9");    // Latin-1: escaped
  EXPECT_EQ(Excerpt("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8: kept
}

TEST(Text, TruncateCutsOnACharacterBoundary) {
  EXPECT_EQ(Truncate("short", 10), "short");
  EXPECT_EQ(Truncate(std::string(5u << 20, 'v'), 1024), std::string(1024, 'v') + "...");
  EXPECT_EQ(Truncate("ab\xc3\xa9", 3), "ab...");  // never half of the 2-byte \xc3\xa9
}

TEST(Text, InvalidUtf8IsReplaced) {
  EXPECT_TRUE(IsValidUtf8("plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  for (const char* bad : {"\xe9", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\xff"})
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  EXPECT_EQ(ToValidUtf8("caf\xe9!"), "caf\xef\xbf\xbd!");
  EXPECT_EQ(ToValidUtf8("ok \xc3\xa9"), "ok \xc3\xa9");
}

}  // namespace
}  // namespace mw
