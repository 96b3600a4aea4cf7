#include "sys/memory.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

namespace mw::sys {

void PrepareLargeHeap(size_t bytes) {
#if defined(__SANITIZE_ADDRESS__)
  (void)bytes;
#else
  static bool done = false;
  if (done || bytes == 0) return;
  done = true;
  constexpr uintptr_t kHuge = 2u << 20;
  // Blocks up to 4 MB (a set of 100,000 addresses is 3.3 MB) from the heap, and no trimming:
  // a vector freed by one step is the memory the next step fills, where glibc would map and
  // unmap it and every page of the next one would fault in again. Bigger blocks (a million
  // addresses) keep their own mappings, given back when freed: kept in the heap they raised
  // the peak RSS of a 1,000,000-address iptables apply from ~200 to 235 MB.
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  // Grow the heap once by `bytes`: take 1 MB blocks until one comes from new space (at start
  // the free top is small; later it may hold what earlier steps freed), then give them back.
  // glibc keeps the growth as its free top, none of it touched yet.
  mallopt(M_TOP_PAD, static_cast<int>(bytes + kHuge));
  auto before = reinterpret_cast<uintptr_t>(sbrk(0)), after = before;
  std::vector<void*> taken;
  taken.reserve(64);
  while (after == before && taken.size() < 64) {
    void* p = std::malloc(1 << 20);
    if (!p) break;
    taken.push_back(p);
    after = reinterpret_cast<uintptr_t>(sbrk(0));
  }
  for (void* p : taken) std::free(p);
  mallopt(M_TOP_PAD, 128 << 10);  // later growth in glibc's default steps (DEFAULT_TOP_PAD)
  // No growth (sbrk refused: glibc mapped the blocks instead): nothing to advise.
  if (before == static_cast<uintptr_t>(-1) || after <= before) return;
  uintptr_t from = (before + kHuge - 1) & ~(kHuge - 1), to = after & ~(kHuge - 1);
  if (to > from) (void)madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
#endif
}

}  // namespace mw::sys
