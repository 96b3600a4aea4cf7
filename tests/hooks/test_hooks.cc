// Test-only hooks, never installed: the integration tests preload this library (LD_PRELOAD)
// into mailward. mailward calls its weak symbols at fixed points (src/sys/test_hooks.h);
// without this library they are null and nothing happens.
//  - MAILWARD_TEST_PAUSE=<point>: stops the process (SIGSTOP) at that point, so a test can kill
//    it exactly there.
//  - MAILWARD_TEST_FAULT=ip6tables-restore: the first ip6tables*-restore mailward runs fails.
//  - MAILWARD_TEST_FAULT=ufw-reload: the first `ufw reload` mailward runs fails.
//  - MAILWARD_TEST_FAULT=state-dir: the state directory counts as unwritable before an apply.
//  - MAILWARD_TEST_FAULT=netlink-midbatch: the nftables batch carries a change the kernel refuses.
//  - MAILWARD_TEST_FAULT=pause-after-commit: after a backend's commit, creates
//    STATE_DIR/paused-after-commit and waits (at most 60 s) until the test removes it.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MW_HOOK extern "C" __attribute__((visibility("default")))

namespace {

bool FaultIs(const char* name) {
  const char* want = getenv("MAILWARD_TEST_FAULT");
  return want && strcmp(want, name) == 0;
}

bool EndsWith(const char* s, const char* suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

}  // namespace

MW_HOOK void mailward_test_pause_point(const char* point) {
  const char* want = getenv("MAILWARD_TEST_PAUSE");
  if (want && strcmp(want, point) == 0) raise(SIGSTOP);
}

MW_HOOK const char* mailward_test_fail_run(const char* const* argv, int argc) {
  static bool failed = false;  // only the first matching run fails: undoing it must work
  if (failed || argc < 1) return nullptr;
  const char* base = strrchr(argv[0], '/');
  base = base ? base + 1 : argv[0];
  if (FaultIs("ip6tables-restore") && strncmp(base, "ip6tables", 9) == 0 && EndsWith(base, "-restore")) {
    failed = true;
    return "injected failure (MAILWARD_TEST_FAULT=ip6tables-restore)";
  }
  if (FaultIs("ufw-reload") && strcmp(base, "ufw") == 0 && argc > 1 && strcmp(argv[1], "reload") == 0) {
    failed = true;
    return "injected failure (MAILWARD_TEST_FAULT=ufw-reload)";
  }
  return nullptr;
}

MW_HOOK int mailward_test_fault(const char* name) { return FaultIs(name) ? 1 : 0; }

MW_HOOK void mailward_test_after_commit(const char* state_dir) {
  if (!FaultIs("pause-after-commit")) return;
  char flag[4096];
  snprintf(flag, sizeof flag, "%s/paused-after-commit", state_dir);
  FILE* f = fopen(flag, "w");
  if (!f) return;
  fclose(f);
  for (int i = 0; i < 3000 && access(flag, F_OK) == 0; ++i) usleep(20000);
}
