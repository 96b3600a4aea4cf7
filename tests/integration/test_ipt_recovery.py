"""The iptables backend killed part-way (kill -9, as a timeout, an OOM kill or a dropped
session's SIGKILL would): the next run finds the apply's journal and puts the firewall back to
the state the apply started from, never IPv4 on one policy and IPv6 on another, never a half-
filled ipset. Wrappers of ip6tables-nft-restore and ipset early on PATH hold the apply at the
chosen point so it can be killed there. Also: a rollback leaves no empty `filter` table that
the apply created."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
import unittest

from mwtest import MAILWARD, MailwardCase, Sandbox

POLICY_A = """\
version: 1
backend: iptables
allowlists:
  office: [203.0.113.7, 2001:db8::7/128]
ports:
  imap: {state: closed, allow: [office]}
  imaps: {state: open}
"""

# B changes every family's chain and both ipsets, and adds a large one.
POLICY_B = """\
version: 1
backend: iptables
allowlists:
  office: [203.0.113.8, 2001:db8::8/128]
  partners: {file: partners.txt}
ports:
  imap: {state: closed, allow: [office, partners]}
  imaps: {state: open}
  pop3: {state: closed, action: reject}
"""

BLOCK = """#!/bin/sh
# Holds the program until the test releases it (or kills it).
echo $$ > "{dir}/{name}.pid"
while [ ! -e "{dir}/release" ]; do sleep 0.02; done
exec {real} "$@"
"""

# ipset: a restore feeds the real ipset only the first {lines} lines, then holds.
BLOCK_IPSET = """#!/bin/sh
if [ "$2" = restore ]; then
  head -n {lines} | {real} "$@"
  echo $$ > "{dir}/ipset.pid"
  while [ ! -e "{dir}/release" ]; do sleep 0.02; done
  exit 1
fi
exec {real} "$@"
"""


def wait_for(pred, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class Recovery(MailwardCase):
    def setUp(self):
        super().setUp()
        self.ns = Sandbox()
        self.addCleanup(self.ns.close)
        self.policy_a = self.write("a.yaml", POLICY_A)
        self.write("partners.txt", "".join(f"10.1.{i // 250}.{i % 250 + 1}\n" for i in range(3000)) +
                   "".join(f"2001:db8:1:{i:x}::/64\n" for i in range(500)))
        self.policy_b = self.write("b.yaml", POLICY_B)
        self.bin = os.path.join(self.dir, "bin")
        os.mkdir(self.bin)
        self.children = []
        self.addCleanup(self.kill_children)

    def kill_children(self):
        for p in self.children:
            if p.poll() is None:
                p.kill()
                p.wait()
        for name in ("ip6tables-nft-restore", "ipset"):
            pid = self.pid_of(name)
            try:  # only a wrapper of this test still holding (its script path in its argv)
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if pid and self.bin.encode() in f.read():
                        os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass

    def pid_of(self, name):
        try:
            with open(os.path.join(self.bin, name + ".pid")) as f:
                return int(f.read())
        except (FileNotFoundError, ValueError):
            return None

    def env_argv(self, wrapped):
        path = (self.bin + ":" if wrapped else "") + os.environ["PATH"]
        return ["env", "PATH=" + path, "MAILWARD_IPTABLES=nft"]

    def mw_ns(self, *args, policy=None, wrapped=False):
        argv = self.env_argv(wrapped) + [MAILWARD, "--state-dir", self.state, "--format", "json"]
        if policy:
            argv += ["--policy", policy]
        args = list(args) + (["--force"] if args[0] == "apply" else [])  # firewalld may run on this machine
        return self.ns.run(argv + args, check=False)

    def start_apply(self, policy):
        argv = ["nsenter", "-t", str(self.ns.pid), "-n"] + self.env_argv(True) + \
            [MAILWARD, "--state-dir", self.state, "apply", "--force", "--policy", policy]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(p)
        return p

    def wrap(self, name, template, **kw):
        real = shutil.which(name)
        path = os.path.join(self.bin, name)
        with open(path, "w") as f:
            f.write(template.format(dir=self.bin, name=name, real=real, **kw))
        os.chmod(path, 0o755)

    def family_state(self, tool):
        """mailward's lines of every table (filter, and mangle and nat for the DNAT path), each
        with its table's name."""
        out, table = [], ""
        for l in self.ns.run([tool]).stdout.splitlines():
            if l.startswith("*"):
                table = l[1:]
            elif "MAILWARD" in l:
                out.append(table + " " + re.sub(r" \[\d+:\d+\]$", "", l))
        return sorted(out)

    def own_state(self):
        sets = [l for l in self.ns.run(["ipset", "save"]).stdout.splitlines() if l.split()[1].startswith("mw")]
        return (self.family_state("iptables-nft-save"), self.family_state("ip6tables-nft-save"),
                sorted(re.sub(r" initval 0x[0-9a-f]+", "", s) for s in sets))

    def states_a_and_b(self):
        rc = self.mw_ns("apply", policy=self.policy_b)
        self.assertEqual(rc.returncode, 0, rc.stdout + rc.stderr)
        state_b = self.own_state()
        rc = self.mw_ns("apply", policy=self.policy_a)
        self.assertEqual(rc.returncode, 0, rc.stdout + rc.stderr)
        return self.own_state(), state_b

    def mw_ns_json(self, *args, policy=None):
        p = self.mw_ns(*args, policy=policy)
        return p.returncode, json.loads(p.stdout), p.stderr

    def test_killed_between_iptables_and_ip6tables_restore(self):
        self.assertEqual(self.mw_ns("apply", policy=self.policy_a).returncode, 0)
        state_a = self.own_state()
        self.wrap("ip6tables-nft-restore", BLOCK)
        p = self.start_apply(self.policy_b)
        wait_for(lambda: self.pid_of("ip6tables-nft-restore"), "the apply to reach ip6tables-nft-restore")
        torn = self.own_state()
        # The point of the test: IPv4 (and the ipsets) already on B, IPv6 still on A.
        self.assertNotEqual(torn[0], state_a[0])
        self.assertEqual(torn[1], state_a[1])
        p.kill()
        p.wait()
        os.kill(self.pid_of("ip6tables-nft-restore"), signal.SIGKILL)
        # Any next command that reads the firewall puts it back to A, whole, and says so.
        rc, j, err = self.mw_ns_json("plan", policy=self.policy_a)
        self.assertEqual(rc, 0, (j, err))
        self.assertTrue(j["in_sync"], j)
        self.assertTrue([n for n in j["notes"] if "interrupted" in n], j["notes"])
        self.assertEqual(self.own_state(), state_a)
        self.assertFalse(os.path.exists(os.path.join(self.state, "iptables.journal")))
        # And B then applies normally.
        self.assertEqual(self.mw_ns("apply", policy=self.policy_b).returncode, 0)
        self.assertNotEqual(self.own_state(), state_a)

    def test_an_orphaned_restore_finishes_before_the_journal_is_replayed(self):
        """Only mailward is killed: its ip6tables-restore goes on and commits IPv6 to B. The
        next run waits for it (it holds the journal lock), then puts both families back."""
        self.assertEqual(self.mw_ns("apply", policy=self.policy_a).returncode, 0)
        state_a = self.own_state()
        self.wrap("ip6tables-nft-restore", BLOCK)
        p = self.start_apply(self.policy_b)
        wait_for(lambda: self.pid_of("ip6tables-nft-restore"), "the apply to reach ip6tables-nft-restore")
        p.kill()
        p.wait()
        plan = subprocess.Popen(["nsenter", "-t", str(self.ns.pid), "-n"] + self.env_argv(False) +
                                [MAILWARD, "--state-dir", self.state, "--format", "json", "plan",
                                 "--policy", self.policy_a], stdout=subprocess.PIPE, text=True)
        self.children.append(plan)
        torn = self.own_state()
        self.assertNotEqual(torn, state_a)

        def waits_on_journal_lock():
            self.assertIsNone(plan.poll(), "plan did not wait for the killed apply's ip6tables-restore")
            fd_dir = f"/proc/{plan.pid}/fd"
            try:
                return any(os.readlink(os.path.join(fd_dir, fd)).endswith("/iptables.journal.lock")
                           for fd in os.listdir(fd_dir))
            except OSError:
                return False
        wait_for(waits_on_journal_lock, "plan to wait for the journal lock")
        self.assertEqual(self.own_state(), torn)  # nothing replayed while the old restore runs
        open(os.path.join(self.bin, "release"), "w").close()
        out, _ = plan.communicate(timeout=30)
        self.assertEqual(plan.returncode, 0, out)
        self.assertEqual(self.own_state(), state_a)

    def test_killed_while_ipset_restore_fills_the_sets(self):
        state_a, state_b = self.states_a_and_b()
        # The ipset restore script goes in for 1,000 lines, then the apply is killed.
        self.wrap("ipset", BLOCK_IPSET, lines=1000)
        p = self.start_apply(self.policy_b)
        wait_for(lambda: self.pid_of("ipset"), "the apply to reach ipset restore")
        partial = self.own_state()
        self.assertNotEqual(partial[2], state_a[2])  # some sets half-made
        p.kill()
        p.wait()
        os.kill(self.pid_of("ipset"), signal.SIGKILL)
        rc, j, err = self.mw_ns_json("plan", policy=self.policy_a)
        self.assertEqual((rc, j["in_sync"]), (0, True), (j, err))
        self.assertEqual(self.own_state(), state_a)

    def test_random_kills_leave_the_old_or_the_new_state(self):
        state_a, state_b = self.states_a_and_b()
        rnd = random.Random(7)
        outcomes = {"a": 0, "b": 0}
        recovered = 0
        current, target = self.policy_a, self.policy_b
        # Kill moments span a whole apply as long as it takes on this machine now (a loaded
        # machine makes it slower): time two uninterrupted ones first.
        took = []
        for policy in (self.policy_b, self.policy_a):
            t = time.monotonic()
            rc, j, err = self.mw_ns_json("apply", policy=policy)
            took.append(time.monotonic() - t)
            self.assertEqual(rc, 0, (j, err))
        window = max(0.25, 1.3 * max(took))
        for i in range(30):
            argv = ["nsenter", "-t", str(self.ns.pid), "-n"] + self.env_argv(False) + \
                [MAILWARD, "--state-dir", self.state, "apply", "--force", "--policy", target]
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.children.append(p)
            time.sleep(rnd.uniform(0.0, window))
            p.kill()
            p.wait()
            rc, j, err = self.mw_ns_json("plan", policy=current)
            self.assertNotEqual(rc, 1, (j, err))
            recovered += any("interrupted" in n for n in j["notes"])
            got = self.own_state()
            self.assertTrue(got in (state_a, state_b),
                            f"kill {i}: a mix: v4 {'A' if got[0] == state_a[0] else 'B' if got[0] == state_b[0] else '?'}, "
                            f"v6 {'A' if got[1] == state_a[1] else 'B' if got[1] == state_b[1] else '?'}, "
                            f"ipsets {'A' if got[2] == state_a[2] else 'B' if got[2] == state_b[2] else 'partial'}")
            self.assertFalse([s for s in got[2] if s.split()[1].startswith("mwt_")], got[2])
            which = "a" if got == state_a else "b"
            outcomes[which] += 1
            if (which == "a") != (current == self.policy_a):
                current, target = target, current
        # Both outcomes happened: the kills did land part-way through and after the end.
        self.assertTrue(all(outcomes.values()), outcomes)
        print(f"random kills over {window:.2f} s: {outcomes}, {recovered} put back from the journal")

    def test_rollback_removes_the_filter_tables_apply_created(self):
        self.assertEqual(self.ns.run(["nft", "list", "tables"]).stdout, "")
        self.assertEqual(self.mw_ns("apply", policy=self.policy_b).returncode, 0)
        tables = self.ns.run(["nft", "list", "tables"]).stdout
        for family in ("ip", "ip6"):  # filter, and mangle (143 dropped) and nat (110 rejected)
            for name in ("filter", "mangle", "nat"):
                self.assertIn(f"table {family} {name}\n", tables)
        p = self.mw_ns("rollback")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.ns.run(["nft", "list", "tables"]).stdout, "")

    def test_rollback_keeps_a_filter_table_that_was_there(self):
        self.ns.run(["ip6tables-nft", "-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-j", "ACCEPT"])
        self.ns.run(["ip6tables-nft", "-D", "OUTPUT", "-p", "tcp", "--dport", "25", "-j", "ACCEPT"])
        self.assertEqual(self.mw_ns("apply", policy=self.policy_a).returncode, 0)
        self.assertEqual(self.mw_ns("rollback").returncode, 0)
        self.assertEqual(self.ns.run(["nft", "list", "tables"]).stdout, "table ip6 filter\n")


if __name__ == "__main__":
    unittest.main()
