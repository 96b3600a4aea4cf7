// Small filesystem helpers: whole-file reads and atomic writes.
#pragma once

#include <string>
#include <vector>

#include "util/status.h"

namespace mw {

enum class Follow { kSymlinks, kNoSymlinks };

/// Reads a whole regular file (at most 1 GiB). Fails with Code::kIo naming the path and the
/// problem; devices and FIFOs are refused at once, never waited on or read forever. With
/// Follow::kNoSymlinks a symlink at `path` is refused (O_NOFOLLOW): for files in the state dir.
Result<std::string> ReadFile(const std::string& path, Follow follow = Follow::kSymlinks);

/// Whether others than root can read the file (mode o+r). False when it cannot be stat'ed.
bool WorldReadable(const std::string& path);

enum class TrustedKind { kStateDir, kPolicy };

/// As root (euid 0), whether `path` may be trusted, like sshd's StrictModes: the path (after
/// symlinks) and every directory above it are owned by root and not writable by group or
/// others; a directory above it may be writable by others only with the sticky bit (/tmp).
/// The directories holding a symlink along the way are checked too. A failure says which path,
/// why, and the commands that fix it (Code::kRefused). Not root: always OK (nothing to protect).
Status CheckTrusted(const std::string& path, TrustedKind kind);

/// Opens (creating with mode 0600 when missing) a file in the state directory without
/// following a symlink at `path`; -1 with errno on failure. `flags` adds to O_CLOEXEC|O_NOFOLLOW.
int OpenStateFile(const std::string& path, int flags);

enum class Durability { kFsync, kNoFsync };

/// Writes `data` to `path` atomically: a new temporary file in the same directory (created
/// O_EXCL under an unpredictable name, never through a symlink), then rename, which replaces
/// a symlink at `path` rather than writing through it.
/// With Durability::kFsync the file and the directory are fsynced, so after a crash the path
/// holds either the old or the new content.
Status WriteFileAtomic(const std::string& path, const std::string& data, Durability durability,
                       unsigned mode = 0600);

/// Creates a directory and its parents (mode 0700 for new ones).
Status MakeDirs(const std::string& path);

/// The regular files in `dir` whose names end with `suffix`, sorted by name. A missing
/// directory is an empty list. An entry with that suffix that is not a regular file (a
/// dangling symlink, a directory, a FIFO) is an error naming it: it is never skipped silently.
Result<std::vector<std::string>> ListFiles(const std::string& dir, const std::string& suffix);

bool IsDirectory(const std::string& path);

/// The directory part of a path: "a/b" -> "a", "b" -> ".", "/b" -> "/".
std::string DirOf(const std::string& path);

/// Splits on blanks (spaces and tabs; commas too when `commas`), dropping empty words.
std::vector<std::string> SplitWords(const std::string& s, bool commas = false);
bool Exists(const std::string& path);

}  // namespace mw
