"""The UFW backend against real UFW, on private copies of /etc/ufw and /etc/default/ufw in a
mount namespace (TESTING.md) and a network namespace: never the machine's own UFW. Reachability
from a client namespace, the admin's UFW rules untouched, an admin's allow recognised, UFW's own
reloads keep mailward's rules, drift (a deleted rule, a flushed chain) repaired, a failed reload
put back, rollback, and backend: auto / two-manager detection."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from mwtest import (ALLOWED_V4, ALLOWED_V6, HOST_V4, MAILWARD, PLAIN_V4, assert_mail_policy_reachability,
                    MailwardCase, run, Sandbox, Topology)

POLICY = """\
version: 1
backend: {backend}
allowlists:
  office:
    - {allowed_v4}
    - {allowed_v6}/128
    - 203.0.113.0/24
ports:
  imap:
    state: closed
    allow: [office]
  imaps:
    state: open
  pop3:
    state: closed
    action: reject
  pop3s:
    state: open
    rate_limit: 20/minute
"""


def policy_text(backend="ufw"):
    return POLICY.format(backend=backend, allowed_v4=ALLOWED_V4, allowed_v6=ALLOWED_V6)


class UfwHost:
    """A Topology host namespace whose commands see private copies of UFW's files."""

    def __init__(self, tmpdir):
        self.topo = Topology()
        self.etc = os.path.join(tmpdir, "etc-ufw")
        self.default = os.path.join(tmpdir, "default-ufw")
        shutil.copytree("/etc/ufw", self.etc, symlinks=True)
        shutil.copy2("/etc/default/ufw", self.default)

    def run(self, argv, **kw):
        script = 'mount --bind "$1" /etc/ufw && mount --bind "$2" /etc/default/ufw && shift 2 && exec "$@"'
        return run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", self.etc, self.default,
                    "ip", "netns", "exec", self.topo.host] + list(argv), **kw)

    def files(self):
        out = []
        for name in ("user.rules", "user6.rules"):
            with open(os.path.join(self.etc, name)) as f:
                out.append(f.read())
        return out

    def tuples(self):
        return [l for text in self.files() for l in text.splitlines() if l.startswith("### tuple ###")]

    def close(self):
        self.topo.close()


class UfwCase(MailwardCase):
    def setUp(self):
        super().setUp()
        self.h = UfwHost(self.dir)
        self.addCleanup(self.h.close)
        self.policy = self.write("policy.yaml", policy_text())
        self.h.run(["ufw", "--force", "enable"])
        self.h.run(["ufw", "allow", "22/tcp"])
        self.h.run(["ufw", "allow", "993/tcp"])


class HandEditedTuple(UfwCase):
    def test_a_second_comment_in_a_tuple_never_crashes_plan_check_or_apply(self):
        self.mw(self.h.run, "apply", "--no-probe", policy=self.policy, check=True)
        path = os.path.join(self.h.etc, "user.rules")
        with open(path) as f:
            text = f.read()
        ours = " in comment=6d61696c77617264\n"
        self.assertIn(ours, text)
        with open(path, "w") as f:
            f.write(text.replace(ours, " in comment=zz comment=6d61696c77617264\n", 1))
        for argv in (["plan"], ["check", "--no-probe"], ["apply", "--no-probe"]):
            p = self.mw(self.h.run, "--format", "json", *argv, policy=self.policy)
            self.assertIn(p.returncode, (0, 1, 2), (argv, p.stderr))
            j = json.loads(p.stdout)
            if p.returncode == 1:
                self.assertTrue(j["error"]["message"], j)
            else:
                self.assertIn("changes", j)


class Reachability(UfwCase):
    def test_reachability_admin_rules_and_ufw_reloads(self):
        self.h.topo.serve([110, 143, 993])
        admin = [t for t in self.h.tuples()]
        rc, j = self.mw_json(self.h.run, "apply", policy=self.policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(j["backend"], "ufw")
        self.assertTrue(any("993/tcp is already allowed" in n for n in j["notes"]), j["notes"])
        after = self.h.topo.reach()
        assert_mail_policy_reachability(self, after)
        tuples = self.h.tuples()
        # The admin's rules are all still there, in order, after mailward's.
        self.assertEqual([t for t in tuples if "comment=6d61696c77617264" not in t], admin)
        # 993 was already allowed by the admin: not duplicated.
        self.assertEqual(len([t for t in tuples if " 993 " in t]), 2)
        self.assertTrue(any(t.startswith("### tuple ### limit tcp 995") for t in tuples))
        status = self.h.run(["ufw", "status"]).stdout
        self.assertRegex(status, r"143/tcp +ALLOW +203\.0\.113\.0/24 +# mailward")
        self.assertRegex(status, r"22/tcp +ALLOW +Anywhere")
        # In sync the second time; UFW's own reload and an admin's later rule keep it so.
        rc, j = self.mw_json(self.h.run, "apply", policy=self.policy)
        self.assertEqual((rc, j["applied"], j["changes"]), (0, False, []))
        self.h.run(["ufw", "reload"])
        self.h.run(["ufw", "allow", "80/tcp"])
        rc, j = self.mw_json(self.h.run, "plan", policy=self.policy)
        self.assertEqual((rc, j["in_sync"]), (0, True), j)
        self.assertEqual(self.h.topo.connect(HOST_V4, 143, PLAIN_V4), "filtered")
        self.assertEqual(self.h.topo.connect(HOST_V4, 143, ALLOWED_V4), "open")

    def test_drift_deleted_rule_and_flushed_chain(self):
        self.h.topo.serve([143])
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        good = self.h.files()
        numbered = self.h.run(["ufw", "status", "numbered"]).stdout
        num = re.search(r"\[ *(\d+)\] 143/tcp +DENY IN +Anywhere +# mailward", numbered).group(1)
        self.h.run(["ufw", "--force", "delete", num])
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual(rc, 2)
        self.assertEqual([(c["op"], c["detail"]) for c in j["changes"]], [("add", "deny 143/tcp  # mailward")])
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        self.assertEqual(self.h.files(), good)
        # Someone edits mailward's rule in UFW's file by hand (the tuple stays, the rule changes).
        path = os.path.join(self.h.etc, "user.rules")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("--dport 143 -j DROP", "--dport 143 -j ACCEPT"))
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual(rc, 2)
        self.assertTrue(any("edited by hand" in c["detail"] for c in j["changes"]), j["changes"])
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        self.assertEqual(self.h.files(), good)
        # Someone flushes the loaded chain: the files are right, the kernel is not.
        self.h.run(["iptables", "-F", "ufw-user-input"])
        self.assertEqual(self.h.topo.connect(HOST_V4, 143, ALLOWED_V4), "filtered")
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=self.policy)
        self.assertEqual(rc, 2)
        self.assertIn("reload", j["changes"][0]["detail"])
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        self.assertEqual(self.h.topo.connect(HOST_V4, 143, ALLOWED_V4), "open")
        self.assertEqual(self.mw(self.h.run, "check", "--no-probe", policy=self.policy).returncode, 0)


class Safety(UfwCase):
    def test_failed_reload_and_rollback_put_the_files_back(self):
        before = self.h.files()
        env = {**os.environ, "MAILWARD_TEST_FAULT": "ufw-reload"}
        p = self.mw(lambda a, **kw: self.h.run(a, env=env, **kw), "apply", policy=self.policy)
        self.assertEqual(p.returncode, 1)
        self.assertIn("put back", p.stderr)
        self.assertEqual(self.h.files(), before)
        self.mw(self.h.run, "apply", policy=self.policy, check=True)
        self.assertNotEqual(self.h.files(), before)
        self.mw(self.h.run, "rollback", check=True)
        self.assertEqual(self.h.files(), before)

    def test_unconfirmed_apply_reverts(self):
        before = self.h.files()
        rc, j = self.mw_json(self.h.run, "apply", "--confirm", "2", policy=self.policy)
        self.assertEqual((rc, j["confirm"]["pending"]), (0, True), j)
        self.assertNotEqual(self.h.files(), before)
        deadline = time.time() + 30
        while time.time() < deadline and self.h.files() != before:
            time.sleep(0.2)
        self.assertEqual(self.h.files(), before, "not reverted")
        log = os.path.join(self.state, "confirm.log")
        while time.time() < deadline:  # the reload after the files: done when the log says so
            if os.path.exists(log) and "not confirmed in time: reverted" in open(log).read():
                break
            time.sleep(0.2)
        # Reverted in UFW's loaded rules too, not only in its files.
        rc, j = self.mw_json(self.h.run, "plan", policy=self.policy)
        self.assertFalse(any("loaded" in c["name"] for c in j["changes"]), j["changes"])

    def test_bad_policy_changes_nothing(self):
        before = self.h.files()
        bad = self.write("bad.yaml", policy_text().replace("state: open", "state: opne", 1))
        p = self.mw(self.h.run, "apply", policy=bad)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(self.h.files(), before)

    def test_auto_and_two_managers(self):
        auto = self.write("auto.yaml", policy_text("auto"))
        rc, j = self.mw_json(self.h.run, "plan", policy=auto)
        self.assertEqual((j["backend"], j["manager_conflicts"]), ("ufw", []))
        self.assertIn("UFW is active", j["backend_reason"])
        # Told iptables while UFW is active: reported, and apply refuses.
        ipt = self.write("ipt.yaml", policy_text("iptables"))
        rc, j = self.mw_json(self.h.run, "plan", policy=ipt)
        self.assertEqual(j["backend"], "iptables")
        self.assertTrue(j["manager_conflicts"] and "UFW is active" in j["manager_conflicts"][0])
        saved = self.h.run(["iptables-save", "-t", "filter"]).stdout
        p = self.mw(self.h.run, "apply", policy=ipt)
        self.assertEqual(p.returncode, 1)
        self.assertIn("two firewall managers", p.stderr)
        strip = lambda s: [l for l in s.splitlines() if not l.startswith("#")]
        self.assertEqual(strip(self.h.run(["iptables-save", "-t", "filter"]).stdout), strip(saved))
        rc, j = self.mw_json(self.h.run, "check", "--no-probe", policy=ipt)
        self.assertEqual(rc, 2)
        # UFW disabled: auto falls to nftables.
        self.h.run(["ufw", "disable"])
        rc, j = self.mw_json(self.h.run, "plan", policy=auto)
        self.assertEqual(j["backend"], "nftables")


class Firewalld(MailwardCase):
    def test_auto_with_firewalld_running_keeps_to_nftables(self):
        # A process named firewalld in a PID namespace of its own (never seen by other tests).
        ns = Sandbox()
        self.addCleanup(ns.close)
        fake = os.path.join(self.dir, "firewalld")
        shutil.copy("/bin/sleep", fake)
        auto = self.write("auto.yaml", policy_text("auto"))
        script = f'"{fake}" 30 & sleep 0.2; "{MAILWARD}" --state-dir "{self.state}" --policy "{auto}" --format json plan'
        p = ns.run(["unshare", "-p", "-f", "--mount-proc", "sh", "-c", script], check=False)
        j = json.loads(p.stdout)
        self.assertEqual(j["backend"], "nftables")
        self.assertIn("firewalld", j["backend_reason"])
        p = ns.run([MAILWARD, "--state-dir", self.state, "--policy", auto, "--format", "json", "plan"], check=False)
        j = json.loads(p.stdout)
        self.assertEqual(j["backend"], "nftables")
        self.assertEqual(j["backend_reason"], "auto: nftables is available")


if __name__ == "__main__":
    unittest.main()
