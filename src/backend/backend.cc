#include "backend/backend.h"

namespace mw {

std::unique_ptr<Backend> BackendForSnapshot(const std::string& bytes, const BackendConfig& cfg) {
  if (bytes.rfind("MWIPT1\n", 0) == 0 || bytes.rfind("MWIPT2\n", 0) == 0) return MakeIptablesBackend(cfg);
  if (bytes.rfind("MWUFW1\n", 0) == 0 || bytes.rfind("MWUFW2\n", 0) == 0) return MakeUfwBackend(cfg);
  return MakeNftablesBackend(cfg);
}

}  // namespace mw
