"""The Ansible module, run by ansible-playbook (ansible-core from Debian) against a namespace:
check mode changes nothing and says what would change, the first run changes, the second not.
Also the role: policy pushed, validated and applied."""
import json
import os
import subprocess
import time
import unittest

from mwtest import MAILWARD, MailwardCase, Sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTIONS = os.path.normpath(os.path.join(HERE, "..", "..", "ansible"))
POLICY = """\
version: 1
allowlists:
  office: [198.51.100.0/24]
ports:
  imap: {state: closed, allow: [office]}
  imaps: {state: open}
"""


class Ansible(MailwardCase):
    def setUp(self):
        super().setUp()
        self.ns = Sandbox()
        self.addCleanup(self.ns.close)
        # mailward inside the test's namespace, as the module's `binary`.
        self.wrapper = self.write("mailward-ns", f"#!/bin/sh\nexec nsenter -t {self.ns.pid} -n {MAILWARD} \"$@\"\n")
        os.chmod(self.wrapper, 0o755)
        self.policy = self.write("policy.yaml", POLICY)
        self.write("inventory", "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")
        self.started = time.time() - 1

    def playbook(self, body, *args, full=False):
        path = self.write("play.yml", body)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_STDOUT_CALLBACK="results_json",
                   ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "ansible_callbacks"),
                   ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="false")
        p = subprocess.run(["ansible-playbook", "-i", os.path.join(self.dir, "inventory"), path, *args],
                           capture_output=True, text=True, env=env, cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        out = json.loads(p.stdout.strip().splitlines()[-1])
        return out["tasks"] if full else [t["result"] for t in out["tasks"]]

    def ruleset(self):
        return self.ns.run(["nft", "list", "ruleset"]).stdout

    def module_play(self, policy, **params):
        extra = "".join(f"        {k}: {v}\n" for k, v in params.items())
        return f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - mailward.firewall.mailward:
        policy: {policy}
        binary: {self.wrapper}
        state_dir: {self.state}
{extra}      ignore_errors: true
"""

    def test_module_check_mode_first_and_second_run(self):
        play = self.module_play(self.policy, probe="false")
        check = self.playbook(play, "--check", "--diff")[0]
        self.assertTrue(check["changed"])
        self.assertFalse(check["in_sync"])
        self.assertEqual(check["outcome"], "planned")
        self.assertIn("table inet mailward", check["diff"]["after"])
        self.assertIn("rule mailward:143:closed", check["diff"]["after"])
        self.assertEqual(check["diff"]["before"], "")  # nothing of mailward's is live yet
        self.assertEqual(self.ruleset(), "", "check mode changed the firewall")
        first = self.playbook(play)[0]
        self.assertTrue(first["changed"])
        self.assertEqual(first["outcome"], "kept")
        self.assertIn("table inet mailward", self.ruleset())
        applied = self.ruleset()
        second = self.playbook(play)[0]
        self.assertFalse(second["changed"])
        self.assertEqual(second["outcome"], "in-sync")
        self.assertEqual(second["changes"], [])
        self.assertEqual(self.ruleset(), applied)
        check_again = self.playbook(play, "--check")[0]
        self.assertFalse(check_again["changed"])

    def test_diff_shows_the_live_rule_before(self):
        self.playbook(self.module_play(self.policy, probe="false"))
        reject = self.write("reject.yaml", POLICY.replace("imap: {state: closed, allow: [office]}",
                                                          "imap: {state: closed, allow: [office], action: reject}"))
        task = self.playbook(self.module_play(reject, probe="false"), "--check", "--diff")[0]
        before, after = task["diff"]["before"], task["diff"]["after"]
        self.assertRegex(before, r"rule mailward:143:closed .*drop")
        self.assertNotIn("reject", before)
        self.assertRegex(after, r"rule mailward:143:closed .*reject")
        self.assertNotIn("mailward:993:open", before + after)  # untouched objects are left out

    def test_module_reports_errors(self):
        bad = self.write("bad.yaml", "version: 1\nports:\n  imap: {state: shut}\n")
        task = self.playbook(self.module_play(bad))[0]
        self.assertTrue(task["failed"])
        self.assertIn("bad.yaml:3:17", task["msg"])
        self.assertEqual(self.ruleset(), "")

    def test_confirm_that_would_revert_fails_and_ends_reverted(self):
        # 993 is open in the policy and nothing listens on it in the namespace.
        task = self.playbook(self.module_play(self.policy, confirm=30, require_services="true"))[0]
        self.assertTrue(task["failed"])
        self.assertEqual(task["outcome"], "reverted")
        self.assertIn("993", task["msg"])
        self.assertFalse(task["changed"])
        # Reverted now, not at the deadline 30 s later, and nothing is left pending.
        self.assertNotIn("mailward:143:closed", self.ruleset())
        self.assertFalse(os.path.exists(os.path.join(self.state, "pending-confirm")))
        p = self.mw(self.ns.run, "confirm")
        self.assertEqual(p.returncode, 1)  # nothing to confirm

    def test_service_not_installed_yet_keeps_the_policy(self):
        task = self.playbook(self.module_play(self.policy, confirm=30))[0]
        self.assertFalse(task.get("failed", False), task)
        self.assertTrue(task["changed"])
        self.assertEqual(task["outcome"], "kept")
        self.assertIn("nothing listens on port(s) 993", task["reason"])
        self.assertIn("mailward:143:closed", self.ruleset())
        p = self.mw(self.ns.run, "confirm")
        self.assertEqual(p.returncode, 1)  # already confirmed: no revert is coming

    def test_state_absent(self):
        self.playbook(self.module_play(self.policy, probe="false"))
        self.assertIn("mailward:143:closed", self.ruleset())
        task = self.playbook(self.module_play(self.policy, state="absent"))[0]
        self.assertTrue(task["changed"], task)
        self.assertNotIn("mailward:143", self.ruleset())
        again = self.playbook(self.module_play(self.policy, state="absent"))[0]
        self.assertFalse(again["changed"])

    def role_play(self, dest, **extra):
        lines = "".join(f"        {k}: {v}\n" for k, v in extra.items())
        return f"""
- hosts: localhost
  gather_facts: false
  roles:
    - role: mailward.firewall.mailward
      vars:
        mailward_policy_src: {self.policy}
        mailward_policy_dest: {dest}
        mailward_binary: {self.wrapper}
        mailward_state_dir: {self.state}
        mailward_confirm: 30
{lines}"""

    def test_role_fresh_host_check_diff_then_apply_with_files_and_policy_d(self):
        etc = os.path.join(self.dir, "etc-mailward")  # does not exist: a fresh host
        dest = os.path.join(etc, "policy.yaml")
        partners = self.write("partners.txt", "# partners\n203.0.113.0/24\n")
        dropin = self.write("10-pop3.yaml", "version: 1\nports:\n  pop3: {state: closed, action: reject}\n")
        with open(self.policy, "w") as f:
            f.write(POLICY.replace("allowlists:\n", "allowlists:\n  partners: {file: partners.txt}\n")
                    .replace("allow: [office]", "allow: [office, partners]"))
        play = self.role_play(dest, mailward_files=f"['{partners}']", mailward_policy_d=f"['{dropin}']",
                              mailward_require_services="false")
        tasks = self.playbook(play, "--check", "--diff", full=True)
        self.assertFalse(os.path.exists(etc), "check mode created the policy directory")
        self.assertEqual(self.ruleset(), "", "check mode changed the firewall")
        apply = [t["result"] for t in tasks if "Apply it" in t["task"]]
        self.assertEqual(len(apply), 1, [(t["task"], t["result"].get("msg")) for t in tasks])
        apply = apply[0]
        self.assertTrue(apply["changed"])
        self.assertIn("rule mailward:110:closed", apply["diff"]["after"])  # policy.d planned too
        self.assertIn("203.0.113.0/24", apply["diff"]["after"])           # the file allowlist too
        tasks = self.playbook(play, full=True)
        self.assertTrue(os.path.exists(os.path.join(etc, "partners.txt")))
        self.assertTrue(os.path.exists(os.path.join(etc, "policy.d", "10-pop3.yaml")))
        self.assertEqual(os.stat(dest).st_mode & 0o777, 0o600)
        apply = [t["result"] for t in tasks if "Apply it" in t["task"]]
        self.assertEqual(len(apply), 1, [(t["task"], t["result"].get("msg")) for t in tasks])
        apply = apply[0]
        self.assertTrue(apply["changed"])
        self.assertEqual(apply["outcome"], "kept")
        rules = self.ruleset()
        self.assertIn("mailward:143:closed", rules)
        self.assertIn("mailward:110:closed", rules)
        self.assertIn("203.0.113.0/24", rules)
        tasks = self.playbook(play)
        self.assertFalse(any(t.get("changed") for t in tasks), tasks)
        self.assertEqual([f for f in os.listdir("/tmp") if f.startswith("mailward-stage-") and
                          os.stat(os.path.join("/tmp", f)).st_mtime > self.started], [])

    def test_role_rejects_a_broken_policy_before_pushing(self):
        dest = os.path.join(self.dir, "etc-mailward", "policy.yaml")
        with open(self.policy, "w") as f:
            f.write("version: 1\nports:\n  imap: {state: closed, allow: [nobody]}\n")
        path = self.write("play.yml", self.role_play(dest))
        p = subprocess.run(["ansible-playbook", "-i", os.path.join(self.dir, "inventory"), path], capture_output=True,
                           text=True, env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
                                               ANSIBLE_LOCALHOST_WARNING="false"), cwd=self.dir)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("policy.yaml:3:", p.stdout)
        self.assertIn("nobody", p.stdout)
        self.assertFalse(os.path.exists(dest))
        self.assertEqual(self.ruleset(), "")


if __name__ == "__main__":
    unittest.main()
