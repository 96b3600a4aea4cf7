"""The Ansible module, run by ansible-playbook (ansible-core from Debian) against a namespace:
check mode changes nothing and says what would change, the first run changes, the second not.
Also the role: policy pushed, validated and applied."""
import json
import os
import subprocess
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

    def playbook(self, body, *args):
        path = self.write("play.yml", body)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_STDOUT_CALLBACK="results_json",
                   ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "ansible_callbacks"),
                   ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="false")
        p = subprocess.run(["ansible-playbook", "-i", os.path.join(self.dir, "inventory"), path, *args],
                           capture_output=True, text=True, env=env, cwd=self.dir)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
        out = json.loads(p.stdout.strip().splitlines()[-1])
        return [t["result"] for t in out["tasks"]]

    def ruleset(self):
        return self.ns.run(["nft", "list", "ruleset"]).stdout

    def test_module_check_mode_first_and_second_run(self):
        play = f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - mailward.firewall.mailward:
        policy: {self.policy}
        binary: {self.wrapper}
        state_dir: {self.state}
        probe: false
"""
        check = self.playbook(play, "--check", "--diff")[0]
        self.assertTrue(check["changed"])
        self.assertFalse(check["in_sync"])
        self.assertIn("+ table inet mailward", check["diff"]["after"])
        self.assertIn("+ rule mailward:143:closed", check["diff"]["after"])
        self.assertEqual(self.ruleset(), "", "check mode changed the firewall")
        first = self.playbook(play)[0]
        self.assertTrue(first["changed"])
        self.assertIn("table inet mailward", self.ruleset())
        applied = self.ruleset()
        second = self.playbook(play)[0]
        self.assertFalse(second["changed"])
        self.assertEqual(second["changes"], [])
        self.assertEqual(self.ruleset(), applied)
        check_again = self.playbook(play, "--check")[0]
        self.assertFalse(check_again["changed"])

    def test_module_reports_errors(self):
        bad = self.write("bad.yaml", "version: 1\nports:\n  imap: {state: shut}\n")
        play = f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - mailward.firewall.mailward: {{policy: {bad}, binary: {self.wrapper}, state_dir: {self.state}}}
      ignore_errors: true
"""
        task = self.playbook(play)[0]
        self.assertTrue(task["failed"])
        self.assertIn("bad.yaml:3:17", task["msg"])
        self.assertEqual(self.ruleset(), "")

    def test_role_pushes_validates_and_applies(self):
        dest = os.path.join(self.dir, "etc-policy.yaml")
        play = f"""
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
"""
        tasks = self.playbook(play)
        self.assertTrue(tasks[0]["changed"])  # pushed
        self.assertTrue(tasks[1]["changed"])  # applied
        self.assertTrue(tasks[1]["confirm"]["auto_confirmed"] or tasks[1]["confirm"]["pending"])
        self.assertIn("mailward:143:closed", self.ruleset())


if __name__ == "__main__":
    unittest.main()
