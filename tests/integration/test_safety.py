"""Safety nets in namespaces: commit-confirmed applies (armed before the commit, so an apply
killed at any point still reverts by the deadline; kept by confirm; stale pending confirms
resolved as not confirmed), rollback by sequence without no-op points, parallel applies,
anti-lockout for SSH callers (a real sshd on 2222), and faults that must leave the old ruleset.
Processes are killed at exact points through a test-only preloaded library (tests/hooks)."""
import datetime
import json
import os
import random
import re
import signal
import subprocess
import time
import unittest

from mwtest import HOST_V4, MAILWARD, PLAIN_V4, TEST_HOOKS, MailwardCase, Sandbox, Topology, fault_env, run


POLICY = """\
version: 1
allowlists:
  office: [198.51.100.3, 2001:db8:10::/48]
ports:
  imap: {state: closed, allow: [office]}
  pop3: {state: closed, action: reject}
"""
POLICY2 = POLICY.replace("198.51.100.3", "198.51.100.4, 203.0.113.0/24")


def wait_for(cond, timeout=10):
    """Polls `cond` until it holds or `timeout` seconds pass; whether it held."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):  # ProcessLookupError: a /proc entry vanishing
        return ""


def stopped(pid):
    stat = read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] == "T"


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = read(f"/proc/{pid}/stat")  # "" once it is gone; a zombie is gone for our purposes
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def watchdog_pids(log):
    return [int(m) for m in re.findall(r"watchdog pid (\d+)", log)]


def log_time(line):
    stamp = line.split()[0]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


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
        return wait_for(cond, timeout)

    def log(self):
        return read(os.path.join(self.state, "confirm.log"))

    def pending(self):
        text = read(os.path.join(self.state, "pending-confirm"))
        return json.loads(text) if text else None

    def snapshots(self):
        d = os.path.join(self.state, "snapshots")
        return sorted(f for f in os.listdir(d) if f.endswith(".snap")) if os.path.isdir(d) else []

    def paused_apply(self, point, *args, policy):
        """Starts an apply that stops itself (SIGSTOP) at `point`; returns it once stopped."""
        self.assertTrue(os.path.exists(TEST_HOOKS), f"{TEST_HOOKS}: build the test hooks (tests/hooks) first")
        env = dict(os.environ, MAILWARD_TEST_PAUSE=point, LD_PRELOAD=TEST_HOOKS)
        env.pop("SSH_CONNECTION", None)
        proc = subprocess.Popen(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state,
                                 "--policy", policy, "-q", "apply"] + list(args), env=env, start_new_session=True)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait()))
        self.assertTrue(wait_for(lambda: stopped(proc.pid) or proc.poll() is not None, 60), f"never paused at {point}")
        self.assertIsNone(proc.poll(), f"apply ended before pausing at {point}")
        return proc

    def kill(self, proc, sig):
        os.kill(proc.pid, sig)
        if sig != signal.SIGKILL:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process takes the signal once continued
        self.assertEqual(proc.wait(timeout=30), -sig)

    def test_confirm_reverts_after_the_timeout(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before = self.ruleset()
        rc, j = self.mw_json(self.ns.run, "apply", "--confirm", "2", policy=self.p2)
        self.assertEqual(rc, 0, j)
        self.assertEqual((j["confirm"]["pending"], j["confirm"]["auto_confirmed"]), (True, False))
        self.assertNotEqual(self.ruleset(), before)
        self.assertTrue(self.wait_for(lambda: self.ruleset() == before and self.pending() is None), "not reverted")
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
        pid = self.pending()["pid"]
        self.mw(self.ns.run, "confirm", check=True)
        # Confirmed: the watchdog exits without reverting (bounded wait for the exit, then the
        # ruleset can no longer change back).
        self.assertTrue(self.wait_for(lambda: not alive(pid)), "the watchdog outlived the confirm")
        self.assertEqual(self.ruleset(), applied)
        self.assertTrue(self.log().rstrip().endswith("confirmed"), self.log())
        self.assertNotIn("reverted", self.log())

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

    def test_apply_killed_at_any_point_after_arming_still_reverts(self):
        # The watchdog is armed before the batch is committed: SIGKILL, SIGHUP or SIGTERM of the
        # apply before the commit, right after it, or during the probes, still ends in the old
        # ruleset by the deadline, and leaves no rollback point behind.
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before, snaps = self.ruleset(), self.snapshots()
        # Without the test library preloaded, the pause variable does nothing.
        env = dict(os.environ, MAILWARD_TEST_PAUSE="before-commit")
        p = run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state, "--policy", self.p1,
                 "apply"], env=env, timeout=120)
        self.assertEqual(p.returncode, 0)
        cases = [("before-commit", signal.SIGKILL), ("before-commit", signal.SIGHUP),
                 ("after-commit", signal.SIGKILL), ("after-commit", signal.SIGHUP),
                 ("probes", signal.SIGTERM), ("probes", signal.SIGKILL)]
        for n, (point, sig) in enumerate(cases):
            with self.subTest(point=point, sig=sig.name):
                proc = self.paused_apply(point, "--confirm", "2", policy=self.p2)
                pending = self.pending()
                self.assertIsNotNone(pending, "not armed before the commit")
                self.assertTrue(alive(pending["pid"]))
                if point == "before-commit":
                    self.assertEqual(self.ruleset(), before)
                else:
                    self.assertNotEqual(self.ruleset(), before, "not committed yet")
                self.kill(proc, sig)
                self.assertTrue(self.wait_for(lambda: self.ruleset() == before and self.pending() is None, 2 + 20),
                                "not reverted by the deadline")
                self.assertTrue(self.wait_for(lambda: not alive(pending["pid"])))
                self.assertEqual(self.log().count("not confirmed in time: reverted"), n + 1, self.log())
                self.assertEqual(self.snapshots(), snaps)  # no rollback point left by the killed apply

    def test_confirm_1_reverts_after_a_full_second_and_the_log_says_what_happened(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before = self.ruleset()
        for _ in range(3):
            start = len(self.log().splitlines())
            self.mw(self.ns.run, "apply", "--confirm", "1", "--no-probe", policy=self.p2, check=True)
            self.assertTrue(self.wait_for(lambda: any("reverted" in l for l in self.log().splitlines()[start:]), 20))
            lines = self.log().splitlines()[start:]
            committed = [l for l in lines if " committed, pending confirmation" in l]
            reverted = [l for l in lines if "not confirmed in time: reverted" in l]
            self.assertEqual((len(committed), len(reverted)), (1, 1), lines)
            self.assertGreaterEqual(log_time(reverted[0]) - log_time(committed[0]), 1.0, lines)
            self.assertEqual(self.ruleset(), before)
        # A rollback of a pending apply is logged as a rollback, a confirm as confirmed.
        self.mw(self.ns.run, "apply", "--confirm", "30", policy=self.p2, check=True)
        self.mw(self.ns.run, "rollback", check=True)
        last = self.log().splitlines()[-1]
        self.assertIn("rolled back", last)
        self.assertNotIn("confirmed", last)
        self.assertEqual(self.ruleset(), before)
        self.mw(self.ns.run, "apply", "--confirm", "30", policy=self.p2, check=True)
        self.mw(self.ns.run, "confirm", check=True)
        self.assertTrue(self.log().splitlines()[-1].endswith(" confirmed"), self.log())

    def test_stale_pending_with_a_dead_watchdog_is_not_confirmed(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before = self.ruleset()
        self.mw(self.ns.run, "apply", "--confirm", "60", policy=self.p2, check=True)
        pid = self.pending()["pid"]
        self.assertEqual(read(f"/proc/{pid}/comm").strip(), "mailward-watch")
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(self.wait_for(lambda: not alive(pid)))
        # Nothing can revert it any more; the next apply resolves it as not confirmed (back to
        # the last confirmed state, logged) and carries on instead of refusing.
        self.assertNotEqual(self.ruleset(), before)
        rc, j = self.mw_json(self.ns.run, "apply", policy=self.p1)
        self.assertEqual(rc, 0, j)
        self.assertIn(f"pid {pid}) is gone", self.log())
        self.assertIn("stale pending confirmation", self.log())
        self.assertIn("reverted to", self.log().split("stale pending confirmation")[1])
        self.assertTrue(any("never confirmed" in n for n in j["notes"]), j["notes"])
        self.assertEqual(self.ruleset(), before)
        self.assertIsNone(self.pending())
        # `confirm` of a stale one refuses and reverts, too.
        self.mw(self.ns.run, "apply", "--confirm", "60", policy=self.p2, check=True)
        pid = self.pending()["pid"]
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(self.wait_for(lambda: not alive(pid)))
        p = self.mw(self.ns.run, "confirm")
        self.assertEqual(p.returncode, 1)
        self.assertIn("not confirmed", p.stderr)
        self.assertEqual(self.ruleset(), before)
        self.assertIsNone(self.pending())

    def test_stale_pending_from_another_boot_is_not_confirmed(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before = self.ruleset()
        self.mw(self.ns.run, "apply", "--confirm", "60", policy=self.p2, check=True)
        pending = self.pending()
        self.assertEqual(pending["boot_id"], read("/proc/sys/kernel/random/boot_id").strip())
        # As after a reboot: the record names another boot (its pid may well be alive, as
        # somebody else's process); the boot apply reverts it and applies.
        pending["boot_id"] = "00000000-1111-2222-3333-444444444444"
        self.write("state/pending-confirm", json.dumps(pending))
        self.mw(self.ns.run, "apply", policy=self.p2, check=True)
        self.assertIn("armed before the host rebooted", self.log())
        self.assertEqual(self.mw(self.ns.run, "plan", policy=self.p2).returncode, 0)
        self.assertIsNone(self.pending())
        self.assertTrue(self.wait_for(lambda: not alive(pending["pid"])))  # the old watchdog let go
        # A reboot loses the ruleset too: a stale record whose snapshot is gone and whose pid
        # is dead does not stop the boot apply.
        self.ns.run(["nft", "flush", "ruleset"])
        self.write("state/pending-confirm", json.dumps(dict(pending, pid=0x3ffffff0,
                                                            snapshot=self.state + "/snapshots/00000000000000000999.snap")))
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        self.assertEqual(self.ruleset(), before)
        self.assertIn("REVERT FAILED", self.log())
        self.assertIsNone(self.pending())

    def test_rollback_points_follow_the_apply_sequence_not_the_clock(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        # The first snapshot was named while the clock ran ahead (an old mailward named them by
        # microseconds); the clock then stepped back.
        (first,) = self.snapshots()
        d = os.path.join(self.state, "snapshots")
        os.rename(os.path.join(d, first), os.path.join(d, "00001999999999999999.snap"))
        self.mw(self.ns.run, "apply", policy=self.p2, check=True)
        self.mw(self.ns.run, "rollback", check=True)
        self.assertEqual(self.mw(self.ns.run, "plan", policy=self.p1).returncode, 0, "restored the wrong snapshot")
        self.mw(self.ns.run, "rollback", check=True)
        self.assertEqual(self.ruleset(), "")
        # Nothing left: a clear error of its own kind, not an I/O error.
        rc, j = self.mw_json(self.ns.run, "rollback")
        self.assertEqual(rc, 1)
        self.assertEqual(j["error"]["kind"], "not_found")
        self.assertIn("no snapshot to roll back to", j["error"]["message"])

    def test_killed_or_exit_3_applies_leave_only_real_rollback_points(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        p1 = self.ruleset()
        # Killed before its commit: the firewall is unchanged and so is the rollback history.
        self.kill(self.paused_apply("before-commit", policy=self.p2), signal.SIGKILL)
        self.assertEqual(self.ruleset(), p1)
        # Stopped after its commit while another process changes the ruleset: the read-back
        # differs (exit 3), the other change is left alone, so this apply's commit stands and its
        # rollback point is a real one.
        proc = self.paused_apply("after-commit", policy=self.p2)
        self.ns.run(["nft", "add", "element", "inet", "mailward", "allow_office_hosts_v4", "{ 192.0.2.200 }"])
        os.kill(proc.pid, signal.SIGCONT)
        self.assertEqual(proc.wait(timeout=60), 3)
        self.assertNotEqual(self.ruleset(), p1)
        self.mw(self.ns.run, "rollback", check=True)
        self.assertEqual(self.ruleset(), p1)
        # The next rollback goes back before the first apply: the killed apply left no copy of p1.
        self.mw(self.ns.run, "rollback", check=True)
        self.assertEqual(self.ruleset(), "")
        # Killed right after its commit, the apply did change the firewall: that point is kept.
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        self.kill(self.paused_apply("after-commit", policy=self.p2), signal.SIGKILL)
        self.assertEqual(self.mw(self.ns.run, "plan", policy=self.p2).returncode, 0)
        self.mw(self.ns.run, "rollback", check=True)
        self.assertEqual(self.ruleset(), p1)

    def test_rollback_while_a_killed_uncommitted_confirm_is_pending(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        self.kill(self.paused_apply("before-commit", "--confirm", "60", policy=self.p2), signal.SIGKILL)
        pid = self.pending()["pid"]
        # The killed apply never committed: rollback ends its pending revert and undoes the
        # last apply that did change something.
        self.mw(self.ns.run, "rollback", check=True)
        self.assertEqual(self.ruleset(), "")
        self.assertIsNone(self.pending())
        self.assertIn("never committed", self.log())
        self.assertTrue(self.wait_for(lambda: not alive(pid)))
        self.assertEqual(self.snapshots(), [])

    def test_an_unreadable_pending_record_is_no_confirmation(self):
        # Only `confirm` (the record removed) stops the revert: a damaged record does not.
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before = self.ruleset()
        self.mw(self.ns.run, "apply", "--confirm", "2", policy=self.p2, check=True)
        self.write("state/pending-confirm", "{damaged")
        # While its watchdog waits, another apply is still refused.
        p = self.mw(self.ns.run, "apply", policy=self.p1)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot be read", p.stderr)
        self.assertTrue(self.wait_for(lambda: self.ruleset() == before and
                                      not os.path.exists(os.path.join(self.state, "pending-confirm")), 2 + 20),
                        "a damaged record stopped the revert")
        self.assertIn("not confirmed in time: reverted", self.log())
        # A damaged record no watchdog waits on does not block the next apply.
        self.assertTrue(self.wait_for(lambda: not any(alive(p) for p in watchdog_pids(self.log()))))
        self.write("state/pending-confirm", "{damaged")
        self.mw(self.ns.run, "apply", policy=self.p2, check=True)
        self.assertIsNone(self.pending())
        self.assertIn("damaged pending confirmation record", self.log())

    def test_checks_that_outlast_the_confirm_time_do_not_auto_confirm(self):
        self.mw(self.ns.run, "apply", policy=self.p1, check=True)
        before = self.ruleset()
        env = dict(os.environ, MAILWARD_TEST_PAUSE="probes", LD_PRELOAD=TEST_HOOKS)
        proc = subprocess.Popen(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state,
                                 "--policy", self.p2, "--format", "json", "apply", "--confirm", "1", "--auto-confirm"],
                                env=env, stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait(), proc.stdout.close()))
        self.assertTrue(wait_for(lambda: stopped(proc.pid), 60), "never paused before the probes")
        deadline_ms = self.pending()["deadline_ms"]
        self.assertTrue(wait_for(lambda: time.clock_gettime(time.CLOCK_BOOTTIME) * 1000 > deadline_ms + 50, 10))
        os.kill(proc.pid, signal.SIGCONT)
        j = json.loads(proc.communicate(timeout=60)[0])
        self.assertEqual((j["confirm"]["pending"], j["confirm"]["auto_confirmed"]), (True, False), j["confirm"])
        self.assertIn("outlasted", j["confirm"]["reason"])
        self.assertTrue(self.wait_for(lambda: self.ruleset() == before and self.pending() is None, 20))

    def test_auto_confirm(self):
        rc, j = self.mw_json(self.ns.run, "apply", "--confirm", "2", "--auto-confirm", policy=self.p1)
        self.assertEqual(rc, 0, j)
        self.assertEqual((j["confirm"]["pending"], j["confirm"]["auto_confirmed"]), (False, True))
        applied = self.ruleset()
        self.assertIsNone(self.pending())
        pids = watchdog_pids(self.log())
        self.assertEqual(len(pids), 1, self.log())
        self.assertTrue(self.wait_for(lambda: not alive(pids[0])), "the watchdog outlived the auto-confirm")
        self.assertEqual(self.ruleset(), applied)
        self.assertIn("auto-confirmed", self.log())
        self.assertNotIn("reverted", self.log())
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
        env = fault_env("netlink-midbatch")
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
        env = fault_env("state-dir")
        p = run(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state, "--policy", self.p1,
                 "apply"], check=False, env=env)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(self.ruleset(), before)

    def test_killed_apply_leaves_old_or_new_never_between(self):
        addrs = "\n".join(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(1, 50001)) + "\n"
        self.write("big.txt", addrs)
        big = self.write("big.yaml", "version: 1\nallowlists:\n  big: {file: big.txt}\n"
                         "ports:\n  imap: {state: closed, allow: [big]}\n")
        is_old = lambda: self.mw(self.ns.run, "plan", policy=self.p1).returncode == 0
        is_new = lambda: self.mw(self.ns.run, "plan", policy=big).returncode == 0
        # Killed at known points: before the commit it is exactly the old ruleset, after it
        # exactly the new one.
        for point, want_new in (("before-commit", False), ("after-commit", True)):
            self.ns.run(["nft", "flush", "ruleset"])
            self.mw(self.ns.run, "apply", policy=self.p1, check=True)
            self.kill(self.paused_apply(point, policy=big), signal.SIGKILL)
            self.assertEqual((is_old(), is_new()), (not want_new, want_new), point)
        # Killed at random moments: one or the other, never a mix.
        rnd = random.Random(3)
        for i in range(6):
            self.ns.run(["nft", "flush", "ruleset"])
            self.mw(self.ns.run, "apply", policy=self.p1, check=True)
            proc = subprocess.Popen(["nsenter", "-t", str(self.ns.pid), "-n", MAILWARD, "--state-dir", self.state,
                                     "--policy", big, "-q", "apply"])
            time.sleep(rnd.uniform(0.0, 0.25))
            proc.kill()
            proc.wait()
            old, new = is_old(), is_new()
            self.assertTrue(old != new, f"run {i}: old={old} new={new}: not exactly one of the two rulesets")


class SshdLockout(MailwardCase):
    """A real sshd on port 2222 in the host namespace with an established session from the
    client namespace, and mailward run without SSH_CONNECTION (as from sudo, cron or Ansible
    become): the session is found through sshd's sockets whatever the port."""

    def setUp(self):
        super().setUp()
        self.topo = Topology()
        self.addCleanup(self.topo.close)
        self.addCleanup(self.kill_namespace_processes)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        key, hostkey = os.path.join(self.dir, "id"), os.path.join(self.dir, "hostkey")
        for k in (key, hostkey):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k])
        with open(key + ".pub") as f:
            self.write("authorized_keys", f.read())
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.topo.host, "/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-p", "2222",
             "-h", hostkey, "-o", f"ListenAddress={HOST_V4}", "-o", "PermitRootLogin=prohibit-password",
             "-o", "AuthorizedKeysFile=" + os.path.join(self.dir, "authorized_keys"), "-o", "StrictModes=no",
             "-o", "PidFile=none", "-o", "UsePAM=no"],
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        seen = []
        while not any("Server listening" in l for l in seen):  # sshd's readiness line (or EOF: it failed)
            seen.append(self.sshd.stderr.readline())
            self.assertNotEqual(seen[-1], "", f"sshd did not start: {seen}")
        self.client = subprocess.Popen(
            ["ip", "netns", "exec", self.topo.client, "ssh", "-i", key, "-p", "2222", "-b", PLAIN_V4,
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", f"root@{HOST_V4}", "echo session-up; exec sleep 600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True)
        if self.client.stdout.readline().strip() != "session-up":
            self.client.wait(timeout=30)
            self.fail(f"no SSH session: {self.client.stderr.read()}")
        self.env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}

    def kill_namespace_processes(self):
        for proc in (getattr(self, "client", None), getattr(self, "sshd", None)):
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            if proc:
                proc.wait()
                for stream in (proc.stdout, proc.stderr):
                    if stream:
                        stream.close()
        # sshd's session children live on in the namespace: end every process in it.
        pids = run(["ip", "netns", "pids", self.topo.host], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def apply(self, policy, *args):
        argv = [MAILWARD, "--state-dir", self.state, "--policy", policy, "--format", "json", "apply"] + list(args)
        p = self.topo.in_host(argv, check=False, env=self.env)
        return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr

    def ruleset(self):
        return self.topo.in_host(["nft", "list", "ruleset"]).stdout

    def test_closing_sshds_port_2222_to_a_connected_client_is_refused(self):
        closes = self.write("closes.yaml", POLICY + "  alt-ssh: {state: closed, port: 2222}\n")
        before = self.ruleset()
        rc, j, err = self.apply(closes)
        self.assertEqual(rc, 1, j)
        self.assertEqual(j["error"]["kind"], "refused")
        self.assertIn("closes port 2222", err)
        self.assertIn(PLAIN_V4, err)
        self.assertEqual(self.ruleset(), before)
        # Allowlisting the client's address makes the same port fine, and auto-confirmable.
        allowed = self.write("allowed.yaml", POLICY.replace("198.51.100.3", f"198.51.100.3, {PLAIN_V4}") +
                             "  alt-ssh: {state: closed, port: 2222, allow: [office]}\n")
        rc, j, err = self.apply(allowed, "--confirm", "30", "--auto-confirm")
        self.assertEqual(rc, 0, err)
        self.assertEqual(j["confirm"]["auto_confirmed"], True, j["confirm"])
        self.topo.in_host([MAILWARD, "--state-dir", self.state, "rollback"])
        self.assertEqual(self.ruleset(), before)
        # Forced, it applies, but --auto-confirm does not confirm a policy that cuts the
        # session's port off from its peer: it reverts at the deadline.
        rc, j, err = self.apply(closes, "--force", "--confirm", "5", "--auto-confirm")
        self.assertEqual(rc, 0, err)
        self.assertEqual((j["confirm"]["pending"], j["confirm"]["auto_confirmed"]), (True, False), j["confirm"])
        self.assertIn("SSH session", j["confirm"]["reason"])
        self.assertNotEqual(self.ruleset(), before)
        self.assertTrue(wait_for(lambda: self.ruleset() == before, 5 + 20), "not reverted")
        # The established session itself survived all of this (only new connections are dropped).
        self.assertIsNone(self.client.poll())


if __name__ == "__main__":
    unittest.main()
