"""Safety nets in namespaces: commit-confirmed applies (revert after the timeout, kept by
confirm, surviving the applying process and its session being killed), rollback, parallel
applies, anti-lockout for SSH callers, and faults that must leave the old ruleset."""
import json
import os
import random
import signal
import subprocess
import time
import unittest

from mwtest import MAILWARD, MailwardCase, Sandbox, run

POLICY = """\
version: 1
allowlists:
  office: [198.51.100.3, 2001:db8:10::/48]
ports:
  imap: {state: closed, allow: [office]}
  pop3: {state: closed, action: reject}
"""
POLICY2 = POLICY.replace("198.51.100.3", "198.51.100.4, 203.0.113.0/24")


class Safety(MailwardCase):
    def setUp(self):
        super().setUp()
        self.ns = Sandbox()
        self.addCleanup(self.ns.close)
        self.p1 = self.write("p1.yaml", POLICY)
        self.p2 = self.write("p2.yaml", POLICY2)

    def ruleset(self):
        return self.ns.run(["nft", "list", "ruleset"]).stdout

    def wait_for(self, cond, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.1)
        return False

    def test_confirm_reverts_after_the_timeout(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before = self.ruleset()
        rc, j = self.mw_json(self.ns.run, "apply", "--confirm", "2", policy=self.p2)
        self.assertEqual(rc, 0, j)
        self.assertEqual((j["confirm"]["pending"], j["confirm"]["auto_confirmed"]), (True, False))
        self.assertNotEqual(self.ruleset(), before)
        self.assertTrue(self.wait_for(lambda: self.ruleset() == before), "not reverted")
        self.assertFalse(os.path.exists(os.path.join(self.state, "pending-confirm")))
        with open(os.path.join(self.state, "confirm.log")) as log:
            self.assertIn("not confirmed in time: reverted", log.read())
        self.assertEqual(self.mw(self.ns.run, "confirm").returncode, 1)  # nothing left to confirm

    def test_confirm_keeps(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        self.mw(self.ns.run, "apply", "--confirm", "2", policy=self.p2, check=True)
        applied = self.ruleset()
        # While pending, another apply is refused rather than raced by the revert.
        p = self.mw(self.ns.run, "apply", policy=self.p1)
        self.assertEqual(p.returncode, 1)
        self.assertIn("pending", p.stderr)
        self.mw(self.ns.run, "confirm", check=True)
        time.sleep(3)
        self.assertEqual(self.ruleset(), applied)

    def test_revert_survives_the_applying_process_and_its_session(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before = self.ruleset()
        # The apply runs in its own session, like a terminal; then the whole session is killed
        # and hung up, as when the SSH connection drops.
        proc = subprocess.Popen(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state,
                                 "--policy", self.p2, "-q", "apply", "--confirm", "2"], start_new_session=True)
        proc.wait()
        self.assertEqual(proc.returncode, 0)
        for sig in (signal.SIGHUP, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        self.assertNotEqual(self.ruleset(), before)
        self.assertTrue(self.wait_for(lambda: self.ruleset() == before), "the watchdog did not revert")

    def test_auto_confirm(self):
        rc, j = self.mw_json(self.ns.run, "apply", "--confirm", "2", "--auto-confirm", policy=self.p1)
        self.assertEqual(rc, 0, j)
        self.assertEqual((j["confirm"]["pending"], j["confirm"]["auto_confirmed"]), (False, True))
        applied = self.ruleset()
        time.sleep(3)
        self.assertEqual(self.ruleset(), applied)
        # An open port whose probe fails is not auto-confirmed: it reverts.
        open_policy = self.write("open.yaml", POLICY + "  imaps: {state: open}\n")
        rc, j = self.mw_json(self.ns.run, "apply", "--confirm", "2", "--auto-confirm", policy=open_policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(j["confirm"]["pending"], True)
        self.assertIn("probe", j["confirm"]["reason"])
        self.assertTrue(self.wait_for(lambda: self.ruleset() == applied))

    def test_four_parallel_applies_end_cleanly_and_in_sync(self):
        procs = [subprocess.Popen(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state,
                                   "--policy", self.p1 if i % 2 else self.p2, "-q", "apply"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
        self.assertEqual([p.returncode for p in procs], [0, 0, 0, 0], outs)
        in_sync = [self.mw(self.ns.run, "plan", policy=p).returncode for p in (self.p1, self.p2)]
        self.assertIn(0, in_sync)  # the last one to apply is what the kernel holds, exactly
        procs = [subprocess.Popen(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state,
                                   "--policy", self.p1, "-q", "apply"]) for _ in range(4)]
        self.assertEqual([p.wait(timeout=120) for p in procs], [0, 0, 0, 0])
        self.assertEqual(self.mw(self.ns.run, "plan", policy=self.p1).returncode, 0)

    def test_ssh_lockout_refused_unless_force(self):
        ssh = self.write("ssh.yaml", POLICY + "  ssh: {state: closed, port: 22, allow: [office]}\n")
        before = self.ruleset()
        env = dict(os.environ, SSH_CONNECTION="192.0.2.99 51234 198.51.100.1 22")
        p = run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state, "--policy", ssh,
                 "apply"], check=False, env=env)
        self.assertEqual(p.returncode, 1)
        self.assertIn("closes port 22", p.stderr)
        self.assertIn("192.0.2.99", p.stderr)
        self.assertEqual(self.ruleset(), before)
        # From an allowlisted address the same policy is fine.
        env_ok = dict(os.environ, SSH_CONNECTION="198.51.100.3 51234 198.51.100.1 22")
        run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state, "--policy", ssh, "apply"],
            env=env_ok)
        self.mw(self.ns.run, "rollback", check=True)
        run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state, "--policy", ssh, "apply",
             "--force"], env=env)

    def test_failure_injected_mid_apply_leaves_the_old_ruleset(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before = self.ruleset()
        env = dict(os.environ, MAILWARD_TEST_FAULT="netlink-midbatch")
        p = run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state, "--policy", self.p2,
                 "apply"], check=False, env=env)
        self.assertEqual(p.returncode, 1)
        self.assertIn("injected fault", p.stderr)
        self.assertIn("nothing was applied", p.stderr)
        self.assertEqual(self.ruleset(), before)
        # The failed attempt left no rollback point: rollback goes back before the first apply.
        self.mw(self.ns.run, "rollback", check=True)
        self.assertEqual(self.ruleset(), "")

    def test_unwritable_state_dir_applies_nothing(self):
        before = self.ruleset()
        blocker = self.write("not-a-dir", "x")
        p = run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", blocker + "/state", "--policy",
                 self.p1, "apply"], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(self.ruleset(), before)
        env = dict(os.environ, MAILWARD_TEST_FAULT="state-dir")
        p = run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state, "--policy", self.p1,
                 "apply"], check=False, env=env)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(self.ruleset(), before)

    def test_killed_apply_leaves_old_or_new_never_between(self):
        addrs = "\n".join(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(1, 50001)) + "\n"
        self.write("big.txt", addrs)
        big = self.write("big.yaml", "version: 1\nallowlists:\n  big: {file: big.txt}\n"
                         "ports:\n  imap: {state: closed, allow: [big]}\n")
        rnd = random.Random(3)
        outcomes = set()
        for i in range(6):
            self.ns.run(["nft", "flush", "ruleset"])
            self.mw(self.ns.run, "apply", policy=self.p1, check=True)
            proc = subprocess.Popen(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state,
                                     "--policy", big, "-q", "apply"])
            time.sleep(rnd.uniform(0.0, 0.25))
            proc.kill()
            proc.wait()
            old = self.mw(self.ns.run, "plan", policy=self.p1).returncode == 0
            new = self.mw(self.ns.run, "plan", policy=big).returncode == 0
            self.assertTrue(old or new, f"run {i}: neither the old nor the new ruleset")
            outcomes.add("new" if new else "old")


if __name__ == "__main__":
    unittest.main()
