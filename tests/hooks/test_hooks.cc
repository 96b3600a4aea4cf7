// Test-only hooks, never installed: tests/integration/test_safety.py preloads this library
// (LD_PRELOAD) into mailward. mailward calls the weak symbol mailward_test_pause_point at fixed
// points of an apply (null, so nothing, without this library); here it stops the process
// (SIGSTOP) when MAILWARD_TEST_PAUSE names the point, so a test can kill it exactly there.
#include <signal.h>
#include <stdlib.h>
#include <string.h>

extern "C" __attribute__((visibility("default"))) void mailward_test_pause_point(const char* point) {
  const char* want = getenv("MAILWARD_TEST_PAUSE");
  if (want && strcmp(want, point) == 0) raise(SIGSTOP);
}
