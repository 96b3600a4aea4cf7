// File helpers: what a wrong kind of path gives (a directory, a symlink, a missing parent),
// files whose size stat does not know (/proc), atomic replacement, directory listings.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "util/fs.h"

namespace mw {
namespace {

#define EXPECT_HAS(hay, needle) EXPECT_NE((hay).find(needle), std::string::npos) << (hay)

class Dir {
 public:
  Dir() {
    char tmpl[] = "/tmp/mw-fs-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~Dir() { std::filesystem::remove_all(path); }
  std::string path;
};

TEST(Fs, ReadFileRefusesDirectoriesMissingFilesAndSymlinksWhenAsked) {
  Dir d;
  auto dir = ReadFile(d.path);
  ASSERT_FALSE(dir.ok());
  EXPECT_HAS(dir.status().message(), d.path + ": is a directory");
  auto missing = ReadFile(d.path + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_HAS(missing.status().message(), d.path + "/nope: cannot open: ");
  ASSERT_TRUE(WriteFileAtomic(d.path + "/real", "content\n", Durability::kFsync, 0644).ok());
  ASSERT_EQ(symlink((d.path + "/real").c_str(), (d.path + "/link").c_str()), 0);
  EXPECT_EQ(*ReadFile(d.path + "/link"), "content\n");  // followed by default
  auto link = ReadFile(d.path + "/link", Follow::kNoSymlinks);
  ASSERT_FALSE(link.ok());
  EXPECT_HAS(link.status().message(), "is a symlink, refused here");
  EXPECT_TRUE(WorldReadable(d.path + "/real"));
  EXPECT_FALSE(WorldReadable(d.path + "/nope"));
}

TEST(Fs, ProcFilesAreReadToTheEndThoughStatSaysZero) {
  auto status = ReadFile("/proc/self/status");
  ASSERT_TRUE(status.ok()) << status.status().message();
  EXPECT_HAS(*status, "Name:");
  EXPECT_HAS(*status, "VmPeak");  // well past the first line
}

TEST(Fs, AtomicWriteErrorsNameThePath) {
  Dir d;
  Status no_dir = WriteFileAtomic(d.path + "/missing/x", "a", Durability::kNoFsync);
  ASSERT_FALSE(no_dir.ok());
  EXPECT_HAS(no_dir.message(), d.path + "/missing/x: cannot create a temporary file beside it");
  // A non-empty directory where the file should go: the rename fails, no temporary is left.
  ASSERT_TRUE(MakeDirs(d.path + "/taken/inner").ok());
  Status taken = WriteFileAtomic(d.path + "/taken", "a", Durability::kFsync);
  ASSERT_FALSE(taken.ok());
  EXPECT_HAS(taken.message(), d.path + "/taken: rename failed");
  auto left = ListFiles(d.path, "");
  EXPECT_FALSE(left.ok());  // only the directory "taken" is there: not a regular file
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(d.path)) entries += e.path().filename() != "taken";
  EXPECT_EQ(entries, 0);
}

TEST(Fs, MakeDirsAndListFiles) {
  Dir d;
  ASSERT_TRUE(MakeDirs(d.path + "/a/b/c").ok());
  EXPECT_TRUE(IsDirectory(d.path + "/a/b/c"));
  struct stat st {};
  ASSERT_EQ(stat((d.path + "/a/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  std::ofstream(d.path + "/file") << "x";
  Status over = MakeDirs(d.path + "/file/sub");
  ASSERT_FALSE(over.ok());
  EXPECT_HAS(over.message(), d.path + "/file/sub: cannot create directory");
  Status onto = MakeDirs(d.path + "/file");
  ASSERT_FALSE(onto.ok());
  EXPECT_HAS(onto.message(), d.path + "/file: not a directory");

  auto none = ListFiles(d.path + "/absent", ".yaml");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto not_dir = ListFiles(d.path + "/file", ".yaml");
  ASSERT_FALSE(not_dir.ok());
  EXPECT_HAS(not_dir.status().message(), d.path + "/file: cannot list");
  std::ofstream(d.path + "/a/z.yaml") << "";
  std::ofstream(d.path + "/a/m.yaml") << "";
  std::ofstream(d.path + "/a/.hidden.yaml") << "";
  std::ofstream(d.path + "/a/notes.txt") << "";
  auto list = ListFiles(d.path + "/a", ".yaml");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<std::string>{d.path + "/a/m.yaml", d.path + "/a/z.yaml"}));
  ASSERT_TRUE(MakeDirs(d.path + "/a/dir.yaml").ok());
  auto with_dir = ListFiles(d.path + "/a", ".yaml");
  ASSERT_FALSE(with_dir.ok());
  EXPECT_HAS(with_dir.status().message(), "dir.yaml: not a regular file (remove it or rename it so it does not end in .yaml)");
}

TEST(Fs, PathsAndWords) {
  EXPECT_EQ(DirOf("a/b"), "a");
  EXPECT_EQ(DirOf("b"), ".");
  EXPECT_EQ(DirOf("/b"), "/");
  EXPECT_EQ(SplitWords(" a\tb  c "), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(SplitWords("a,b, c", true), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(SplitWords("a,b", false), (std::vector<std::string>{"a,b"}));
  EXPECT_TRUE(Exists("/proc/self"));
  EXPECT_FALSE(Exists("/proc/self/mailward-nothing"));
}

}  // namespace
}  // namespace mw
