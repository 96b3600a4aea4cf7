#include "util/status.h"

#include <cstdio>
#include <cstdlib>

namespace mw {

void DieValueOfError(const Status& status) {
  std::fprintf(stderr, "mailward: internal error: Result::value() on an error: %s\n", status.message().c_str());
  std::abort();
}

}  // namespace mw
