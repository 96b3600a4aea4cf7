#include "backend/backend.h"

namespace mw {

const char* CertaintyName(const Conflict& c) {
  if (c.kind == analysis::ConflictKind::kClosedPortReachable) return c.maybe ? "may reach" : "reaches";
  return c.maybe ? "may block" : "blocks";
}

const char* ChangeOpName(ChangeOp op) {
  switch (op) {
    case ChangeOp::kAdd: return "add";
    case ChangeOp::kDelete: return "delete";
    case ChangeOp::kReplace: return "replace";
  }
  return "?";
}

const char* ChangeObjectName(ChangeObject object) {
  switch (object) {
    case ChangeObject::kTable: return "table";
    case ChangeObject::kChain: return "chain";
    case ChangeObject::kSet: return "set";
    case ChangeObject::kElements: return "elements";
    case ChangeObject::kRule: return "rule";
  }
  return "?";
}


std::unique_ptr<Backend> BackendForSnapshot(const std::string& bytes, const BackendConfig& cfg) {
  if (bytes.rfind("MWIPT1\n", 0) == 0 || bytes.rfind("MWIPT2\n", 0) == 0) return MakeIptablesBackend(cfg);
  if (bytes.rfind("MWUFW1\n", 0) == 0 || bytes.rfind("MWUFW2\n", 0) == 0) return MakeUfwBackend(cfg);
  return MakeNftablesBackend(cfg);
}

}  // namespace mw
