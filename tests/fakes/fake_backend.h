// FakeBackend: a Backend (src/backend/backend.h) whose plans the test scripts, for the
// transactions in src/ops/. Records every Apply, Restore, RestoreOwnCommit and TakeSnapshot;
// fails Apply with Code::kGenerationMoved a set number of times; a verify mismatch is a second
// scripted plan that is still not in sync.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace mw::testing {

class FakeBackend : public Backend {
 public:
  /// The plans Plan returns, in order (the last one repeats); each is a list of changes.
  std::deque<std::vector<Change>> plans;
  int generation = 7;
  int moved_times = 0;          ///< Apply fails with kGenerationMoved this many times first
  Status apply_error;           ///< any other Apply failure
  Status restore_error;         ///< Restore / RestoreOwnCommit fail with this
  Status plan_error;
  std::vector<Change> remove_changes;  ///< what PlanRemove finds
  Status remove_plan_error;

  int plans_made = 0, applies = 0, snapshots = 0, restores = 0, own_restores = 0;
  std::vector<std::string> restored;  ///< the snapshot bytes restored

  std::string name() const override { return "fake"; }
  Result<std::unique_ptr<BackendPlan>> Plan(const Ruleset&, const PlanOptions&) override {
    if (!plan_error.ok()) return plan_error;
    ++plans_made;
    auto p = std::make_unique<BackendPlan>();
    if (!plans.empty()) {
      p->changes = plans.front();
      if (plans.size() > 1) plans.pop_front();
    }
    p->generation = generation;
    return p;
  }
  Status Apply(const BackendPlan&) override {
    ++applies;
    if (moved_times > 0) {
      --moved_times;
      ++generation;
      return Status::Error(Code::kGenerationMoved, "the ruleset changed since the plan");
    }
    return apply_error;
  }
  Result<Snapshot> TakeSnapshot(const BackendPlan&) override {
    ++snapshots;
    return Snapshot{"FAKE" + std::to_string(snapshots) + "\n", ""};
  }
  Status Restore(const std::string& bytes, const std::string&) override {
    ++restores;
    if (restore_error.ok()) restored.push_back(bytes);
    return restore_error;
  }
  Status RestoreOwnCommit(const BackendPlan&, const std::string& bytes, const std::string&) override {
    ++own_restores;
    if (restore_error.ok()) restored.push_back(bytes);
    return restore_error;
  }
  Result<std::unique_ptr<BackendPlan>> PlanRemove(const PlanOptions&) override {
    if (!remove_plan_error.ok()) return remove_plan_error;
    auto p = std::make_unique<BackendPlan>();
    p->changes = remove_changes;
    return p;
  }
  Result<std::vector<Change>> PlanRestore(const std::string& bytes, const std::string&, const PlanOptions&) override {
    return std::vector<Change>{{ChangeOp::kReplace, ChangeObject::kTable, "restore", bytes, 1, {}}};
  }
};

/// A change for scripted plans.
inline Change AddRule(const std::string& name = "r") { return Change{ChangeOp::kAdd, ChangeObject::kRule, name, "tcp dport 25 accept", 1, {}}; }

}  // namespace mw::testing
