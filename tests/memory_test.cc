// sys/memory: the heap prepared for large allowlists holds a big block in transparent huge
// pages (where the kernel offers them), and small allocations work as before.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "sys/memory.h"
#include "util/fs.h"

namespace mw::sys {
namespace {

/// AnonHugePages (kB) of the mapping holding `p`, from /proc/self/smaps; -1 when not found.
long HugeKbAt(const void* p) {
  auto at = reinterpret_cast<uintptr_t>(p);
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool in = false;
  while (std::getline(f, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(" rw") != std::string::npos) {
      in = lo <= at && at < hi;
      continue;
    }
    long kb = 0;
    if (in && std::sscanf(line.c_str(), "AnonHugePages: %ld kB", &kb) == 1) return kb;
  }
  return -1;
}

TEST(Memory, LargeBlocksLandInHugePages) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the sanitizers keep their own heap";
#else
  // As mailward calls it: first thing in a fresh process (this test binary, run again for this
  // one test; in this process earlier tests have left big free blocks in the heap).
  if (!std::getenv("MW_MEMORY_TEST_CHILD")) {
    char self[4096] = {};
    ASSERT_GT(readlink("/proc/self/exe", self, sizeof self - 1), 0);
    std::string cmd = "MW_MEMORY_TEST_CHILD=1 " + std::string(self) + " --gtest_filter=Memory.LargeBlocksLandInHugePages >/dev/null 2>&1";
    int rc = std::system(cmd.c_str());
    ASSERT_TRUE(WIFEXITED(rc)) << cmd;
    EXPECT_EQ(WEXITSTATUS(rc), 0) << "the fresh process's check failed: run " << cmd;
    return;
  }
  auto thp = ReadFile("/sys/kernel/mm/transparent_hugepage/enabled");
  if (!thp.ok() || thp->find("[madvise]") == std::string::npos)
    GTEST_SKIP() << "transparent huge pages are not given on request here (never, or always for everyone)";
  PrepareLargeHeap(64 << 20);
  std::vector<char> small(100, 'x');
  // Blocks the size of a 100,000-address set (3 MB each), 24 MB in all.
  std::vector<std::vector<char>> blocks;
  for (int i = 0; i < 8; ++i) {
    blocks.emplace_back(3 << 20);
    std::memset(blocks.back().data(), 1, blocks.back().size());
  }
  EXPECT_EQ(small[99], 'x');
  // At least some of it in 2 MB pages (the kernel may be short of free huge pages for the rest).
  long huge = 0;
  for (const auto& b : blocks) huge = std::max(huge, HugeKbAt(b.data() + b.size() / 2));
  EXPECT_GT(huge, 0) << "the blocks were not given huge pages";
#endif
}

}  // namespace
}  // namespace mw::sys
