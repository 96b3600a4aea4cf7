// Small filesystem helpers: whole-file reads and atomic writes.
#pragma once

#include <string>
#include <vector>

#include "util/status.h"

namespace mw {

/// Reads a whole regular file (at most 1 GiB). Fails with Code::kIo naming the path and the
/// problem; devices and FIFOs are refused rather than read forever.
Result<std::string> ReadFile(const std::string& path);

enum class Durability { kFsync, kNoFsync };

/// Writes `data` to `path` atomically: a temporary file in the same directory, then rename.
/// With Durability::kFsync the file and the directory are fsynced, so after a crash the path
/// holds either the old or the new content.
Status WriteFileAtomic(const std::string& path, const std::string& data, Durability durability,
                       unsigned mode = 0600);

/// Creates a directory and its parents (mode 0700 for new ones).
Status MakeDirs(const std::string& path);

/// The regular files in `dir` whose names end with `suffix`, sorted by name. A missing
/// directory is an empty list.
Result<std::vector<std::string>> ListFiles(const std::string& dir, const std::string& suffix);

bool IsDirectory(const std::string& path);

/// The directory part of a path: "a/b" -> "a", "b" -> ".", "/b" -> "/".
std::string DirOf(const std::string& path);

/// Splits on blanks (spaces and tabs; commas too when `commas`), dropping empty words.
std::vector<std::string> SplitWords(const std::string& s, bool commas = false);
bool Exists(const std::string& path);

}  // namespace mw
