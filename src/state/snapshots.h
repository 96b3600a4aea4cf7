// state/: the state directory (rollback points, lock, pending confirm), trusted only when safe.
// The rollback points under STATE_DIR/snapshots: <seq>.snap (+ <seq>.elements, a hard link to
// the bulk of the allow sets), ordered by a sequence number that only grows, never by the clock;
// and <seq>.uncommitted beside a snapshot whose apply has not committed yet.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "sys/env.h"
#include "util/status.h"

namespace mw {

inline constexpr size_t kSnapshotsKept = 10;

struct SnapshotFile {
  uint64_t seq = 0;
  std::string path;
};

/// The snapshots, oldest first, by sequence number (names that are not a number are ignored).
Result<std::vector<SnapshotFile>> ListSnapshots(const std::string& state_dir, sys::Env& env = sys::RealEnv());

/// The next sequence number after `existing` (1 for none): one more than the largest, so a clock
/// step cannot reorder rollback points.
uint64_t NextSnapshotSeq(const std::vector<SnapshotFile>& existing);

/// What made a rollback point, shown by `mailward snapshots`: stored beside it as <seq>.info.
struct SnapshotInfo {
  std::string command;        ///< "apply" | "remove"
  std::string user;           ///< who ran it ("root", "alice (sudo)")
  std::string policy;         ///< the policy path given, "" when none was read
  std::string policy_sha256;  ///< of the policy files read, in order; "" when none
};
/// SHA-256 (hex) of the files' contents, in order (a policy and its drop-ins); "" on a read error.
std::string HashFiles(const std::vector<std::string>& files, sys::Env& env = sys::RealEnv());
/// The user running this process, as `snapshots` shows it.
std::string CurrentUser(sys::Env& env = sys::RealEnv());
/// Saves `snap` under the next sequence number, marked uncommitted with `generation` (the live
/// state's generation its plan was made against), with `info` beside it, and keeps the newest
/// kSnapshotsKept. REQUIRES: the caller holds the state directory's lock.
Result<std::string> SaveSnapshot(const std::string& state_dir, const Snapshot& snap, uint32_t generation,
                                 const SnapshotInfo& info = {}, sys::Env& env = sys::RealEnv());
/// The info saved beside a snapshot (all empty for snapshots from before it existed).
SnapshotInfo ReadSnapshotInfo(const std::string& snap_path, sys::Env& env = sys::RealEnv());

/// The apply that saved `snap_path` committed: the snapshot is a rollback point for good.
void MarkCommitted(const std::string& snap_path, sys::Env& env = sys::RealEnv());

/// Removes a snapshot with its attachment and its uncommitted marker.
void RemoveSnapshot(const std::string& snap_path, sys::Env& env = sys::RealEnv());

std::string AttachmentOf(const std::string& snap_path);
/// The attachment's content, or "" when the snapshot has none.
std::string ReadAttachment(const std::string& snap_path, sys::Env& env = sys::RealEnv());

/// Snapshots still marked uncommitted belong to applies killed between saving them and
/// committing. One whose backend still reads the generation it was taken at was never
/// committed: it is a no-op rollback point and is removed. Any other (the generation moved, or
/// it cannot be read) is kept as a rollback point. REQUIRES: the caller holds the state
/// directory's lock.
void ResolveUncommitted(const std::string& state_dir, sys::Env& env = sys::RealEnv());

}  // namespace mw
