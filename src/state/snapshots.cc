#include "state/snapshots.h"

#include <openssl/evp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

#include "model/ruleset.h"
#include "util/fs.h"

namespace mw {
namespace {

std::string Stem(const std::string& snap_path) { return snap_path.substr(0, snap_path.size() - 5); }
std::string MarkerOf(const std::string& snap_path) { return Stem(snap_path) + ".uncommitted"; }

/// "00000000000000000042.snap" -> 42; false for anything but digits.
bool SeqOf(const std::string& path, uint64_t* seq) {
  size_t slash = path.rfind('/');
  std::string name = path.substr(slash == std::string::npos ? 0 : slash + 1);
  if (name.size() <= 5) return false;
  std::string digits = name.substr(0, name.size() - 5);
  if (digits.empty() || digits.size() > 20 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return false;
  errno = 0;
  unsigned long long v = std::strtoull(digits.c_str(), nullptr, 10);
  if (errno == ERANGE) return false;
  *seq = v;
  return true;
}

}  // namespace

std::string AttachmentOf(const std::string& snap_path) { return Stem(snap_path) + ".elements"; }

std::string ReadAttachment(const std::string& snap_path, sys::Env& env) {
  auto a = env.ReadFile(AttachmentOf(snap_path), Follow::kNoSymlinks);
  return a.ok() ? *a : "";
}

Result<std::vector<SnapshotFile>> ListSnapshots(const std::string& state_dir, sys::Env& env) {
  auto files = env.ListFiles(state_dir + "/snapshots", ".snap");
  if (!files.ok()) return files.status();
  std::vector<SnapshotFile> out;
  for (const auto& f : *files) {
    SnapshotFile s;
    if (!SeqOf(f, &s.seq)) continue;
    s.path = f;
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const SnapshotFile& a, const SnapshotFile& b) { return a.seq < b.seq; });
  return out;
}

uint64_t NextSnapshotSeq(const std::vector<SnapshotFile>& existing) {
  return existing.empty() ? 1 : existing.back().seq + 1;
}

std::string InfoOf(const std::string& snap_path) { return snap_path.substr(0, snap_path.size() - 5) + ".info"; }

std::string HashFiles(const std::vector<std::string>& files, sys::Env& env) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    return "";
  }
  for (const auto& f : files) {
    auto data = env.ReadFile(f);
    if (!data.ok()) {
      EVP_MD_CTX_free(ctx);
      return "";
    }
    EVP_DigestUpdate(ctx, data->data(), data->size());
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, md, &n);
  EVP_MD_CTX_free(ctx);
  static const char* d = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) {
    hex += d[md[i] >> 4];
    hex += d[md[i] & 15];
  }
  return hex;
}

std::string CurrentUser(sys::Env& env) {
  if (auto sudo = env.GetEnv("SUDO_USER"); sudo && !sudo->empty()) return *sudo + " (sudo)";
  // root without a name-service lookup (it costs milliseconds on every apply).
  std::string name = getuid() == 0 ? "root" : std::to_string(getuid());
  if (getuid() != 0)
    if (passwd* pw = getpwuid(getuid())) name = pw->pw_name;
  if (env.GetEnv("INVOCATION_ID")) return name + " (systemd)";
  return name;
}

SnapshotInfo ReadSnapshotInfo(const std::string& snap_path, sys::Env& env) {
  SnapshotInfo info;
  auto text = env.ReadFile(InfoOf(snap_path), Follow::kNoSymlinks);
  if (!text.ok()) return info;
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object()) return info;
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  info.command = str("command");
  info.user = str("user");
  info.policy = str("policy");
  info.policy_sha256 = str("policy_sha256");
  return info;
}

Result<std::string> SaveSnapshot(const std::string& state_dir, const Snapshot& snap, uint32_t generation,
                                 const SnapshotInfo& info, sys::Env& env) {
  std::string dir = state_dir + "/snapshots";
  MW_RETURN_IF_ERROR(env.MakeDirs(dir));
  MW_RETURN_IF_ERROR(env.CheckTrusted(dir, TrustedKind::kStateDir));
  auto existing = ListSnapshots(state_dir, env);
  if (!existing.ok()) return existing.status();
  char name[64];
  std::snprintf(name, sizeof name, "/%020llu.snap", static_cast<unsigned long long>(NextSnapshotSeq(*existing)));
  std::string path = dir + name;
  RemoveSnapshot(path, env);  // leftovers of a number freed by a rollback
  // The marker first: once the snapshot exists, it is known to be uncommitted until the apply says so.
  MW_RETURN_IF_ERROR(env.WriteFileAtomic(MarkerOf(path), std::to_string(generation) + "\n", Durability::kNoFsync));
  if (!snap.attachment_path.empty()) {
    std::string att = AttachmentOf(path);
    if (Status l = env.Link(snap.attachment_path, att); !l.ok()) {
      RemoveSnapshot(path, env);
      return l;
    }
  }
  Status w = env.WriteFileAtomic(path, snap.bytes, Durability::kFsync);
  if (!w.ok()) {
    RemoveSnapshot(path, env);
    return w;
  }
  // What made it: for people reading `mailward snapshots`; losing it loses nothing else.
  nlohmann::json j = {{"command", info.command}, {"user", info.user}, {"policy", info.policy},
                      {"policy_sha256", info.policy_sha256}};
  (void)env.WriteFileAtomic(InfoOf(path), j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                        Durability::kNoFsync);
  for (size_t i = 0; i + kSnapshotsKept < existing->size() + 1; ++i) RemoveSnapshot((*existing)[i].path, env);
  return path;
}

void MarkCommitted(const std::string& snap_path, sys::Env& env) { (void)env.RemoveFile(MarkerOf(snap_path)); }

void RemoveSnapshot(const std::string& snap_path, sys::Env& env) {
  (void)env.RemoveFile(snap_path);
  (void)env.RemoveFile(AttachmentOf(snap_path));
  (void)env.RemoveFile(MarkerOf(snap_path));
  (void)env.RemoveFile(InfoOf(snap_path));
}

void ResolveUncommitted(const std::string& state_dir, sys::Env& env) {
  auto markers = env.ListFiles(state_dir + "/snapshots", ".uncommitted");
  if (!markers.ok()) return;
  for (const auto& m : *markers) {
    std::string snap = m.substr(0, m.size() - 12) + ".snap";
    auto bytes = env.ReadFile(snap, Follow::kNoSymlinks);
    auto gen_text = env.ReadFile(m, Follow::kNoSymlinks);
    if (!bytes.ok()) {  // a marker without its snapshot: nothing to keep
      RemoveSnapshot(snap, env);
      continue;
    }
    if (!gen_text.ok()) continue;
    char* end = nullptr;
    unsigned long long want = std::strtoull(gen_text->c_str(), &end, 10);
    if (end == gen_text->c_str()) continue;
    PlanOptions o;
    o.analyze_conflicts = false;
    o.max_items = 1;
    BackendConfig cfg{state_dir};
    cfg.env = &env;
    auto plan = BackendForSnapshot(*bytes, cfg)->Plan(Ruleset{}, o);
    if (!plan.ok()) continue;  // cannot tell: keep it, and the marker, for a later look
    if ((*plan)->generation == want) RemoveSnapshot(snap, env);  // never committed
    else MarkCommitted(snap, env);
  }
}

}  // namespace mw
