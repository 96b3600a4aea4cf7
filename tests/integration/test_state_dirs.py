"""Several mailwards (several state directories, so no shared lock) on one network namespace:
an apply whose read-back saw another process's later commit must not undo that commit by
restoring its own snapshot."""
import os
import subprocess
import time
import unittest

from mwtest import MAILWARD, TEST_HOOKS, MailwardCase, Sandbox

POLICY_A = """\
version: 1
backend: nftables
ports:
  imap: {state: closed}
"""

POLICY_B = """\
version: 1
backend: nftables
ports:
  imap: {state: open}
  pop3: {state: closed, action: reject}
"""


def wait_for(pred, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class SeveralStateDirs(MailwardCase):
    backend = "nftables"

    def listing(self, ns):
        if self.backend == "nftables":
            return ns.run(["nft", "list", "table", "inet", "mailward"]).stdout
        return ns.run(["iptables-save", "-t", "filter"]).stdout.split("\n", 1)[1].rsplit("# Completed", 1)[0]

    def test_a_read_back_that_saw_another_commit_restores_nothing(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        policy_a = self.write("a.yaml", POLICY_A.replace("nftables", self.backend))
        policy_b = self.write("b.yaml", POLICY_B.replace("nftables", self.backend))
        state_a, state_b = os.path.join(self.dir, "state-a"), os.path.join(self.dir, "state-b")
        # A commits, then (test hook) waits before its read-back ...
        a = subprocess.Popen(["nsenter", "-t", str(ns.pid), "-n", "env", "MAILWARD_TEST_FAULT=pause-after-commit", "LD_PRELOAD=" + TEST_HOOKS,
                              MAILWARD, "--state-dir", state_a, "--policy", policy_a, "apply", "--force"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: a.poll() is None and a.kill())
        flag = os.path.join(state_a, "paused-after-commit")
        wait_for(lambda: os.path.exists(flag) or a.poll() is not None, "A's commit")
        self.assertIsNone(a.poll(), "A ended before its read-back")
        # ... while B, with its own state directory, commits its policy.
        b = ns.run([MAILWARD, "--state-dir", state_b, "--policy", policy_b, "apply", "--force"], check=False)
        self.assertEqual(b.returncode, 0, b.stderr)
        after_b = self.listing(ns)
        self.assertIn("mailward:110:closed", after_b)
        os.unlink(flag)
        out, err = a.communicate(timeout=60)
        # A's read-back shows B's policy: a verification failure, but B's commit stays.
        self.assertEqual(a.returncode, 3, out + err)
        self.assertIn("verification failed", err)
        self.assertIn("another process", err)
        self.assertIn("not rolled back", err)
        self.assertEqual(self.listing(ns), after_b)
        # B's own view agrees: its policy is in place.
        self.assertEqual(ns.run([MAILWARD, "--state-dir", state_b, "--policy", policy_b, "plan"],
                                check=False).returncode, 0)


class SeveralStateDirsIptables(SeveralStateDirs):
    backend = "iptables"


if __name__ == "__main__":
    unittest.main()
