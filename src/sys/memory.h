// sys/: how mailward's heap is laid out for large allowlists.
#pragma once

#include <cstddef>

namespace mw::sys {

/// Prepares the heap for a run that will hold large allowlists (hundreds of thousands of
/// addresses, several copies of them alive at once): blocks up to 4 MB come from the main heap
/// rather than one mmap each, freed memory stays for reuse, and the next `bytes` of the heap
/// are advised as transparent huge pages, so filling them costs one page fault per 2 MB
/// instead of one per 4 KB. Call once, early; a no-op under the sanitizers or if the
/// kernel declines (the heap then works exactly as before).
void PrepareLargeHeap(size_t bytes);

}  // namespace mw::sys
