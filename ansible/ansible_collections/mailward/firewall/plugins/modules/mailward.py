#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailward maintainers
# MIT License (see galaxy.yml)
"""Ansible module for mailward: applies that end in a definite state, with check and diff modes."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mailward
short_description: Keep a host's mail ports as a mailward policy declares
version_added: "0.1.0"
author:
  - mailward maintainers (@mailward)
description:
  - Runs C(mailward apply) with JSON output. C(changed) is true only when mailward changed the
    firewall.
  - With C(confirm), the apply is commit-confirmed (C(--confirm N --auto-confirm)) and the task
    returns only once the result is definite, never while a revert is pending. Either the new
    policy is kept (confirmed), or it is reverted at once (C(mailward rollback)) and the task
    FAILS with the reason.
  - "What gates the confirm: the read-back of the ruleset (a mismatch is rolled back by mailward
    itself, exit 3); no SSH session, the controller's included, reaches a port the policy closes;
    every port the policy keeps open answers a local probe, except that a port where nothing
    listens yet (connection refused: the service is not installed or not started) does not
    revert, unless C(require_services=true) (or C(force=true), which skipped the SSH check). A
    probe that times out (filtered) or fails the policy's TLS requirements reverts."
  - In check mode it runs C(mailward plan) and reports what would change, changing nothing.
  - In diff mode the diff shows the objects the plan touches as they are live (before) and as
    the policy wants them (after); objects that stay as they are are left out.
  - C(state=absent) applies an empty policy, removing every rule mailward enforces on the host
    (mailward's empty table or chain stays, owning nothing).
options:
  policy:
    description:
      - Policy file or directory on the managed host.
      - With C(policy_content), the file to install (its directory is created, mode 0755).
    type: path
    default: /etc/mailward/policy.yaml
  policy_content:
    description:
      - The policy to install at C(policy) before applying. The policy, C(files) and C(policy_d)
        are staged together on the host and validated as one tree (relative C(file:) allowlists
        and drop-ins included) before anything is installed; an invalid tree fails the task with
        mailward's C(file:line:column) message and changes nothing.
      - In check mode the plan is made against the staged tree, so it works on a fresh host.
      - One task does push, validation and apply, which is what keeps a fleet run fast.
    type: str
  files:
    description: Allowlist files to install beside C(policy) (file name to content); use with C(policy_content).
    type: dict
    default: {}
  policy_d:
    description: Drop-ins to install in C(policy.d/) beside C(policy) (file name to content); use with C(policy_content).
    type: dict
    default: {}
  state:
    description:
      - C(present) enforces the policy; C(absent) removes every rule mailward enforces.
    type: str
    choices: [present, absent]
    default: present
  binary:
    description: The mailward binary on the managed host.
    type: path
    default: /usr/sbin/mailward
  state_dir:
    description: mailward's state directory (snapshots, lock).
    type: path
    default: /var/lib/mailward
  backend:
    description: Override the policy's backend.
    type: str
    choices: [auto, nftables, iptables, ufw]
  confirm:
    description:
      - Seconds of the commit-confirm window. The task still returns only once the result is
        kept or reverted; the window is the watchdog's deadline should the module itself die.
      - 0 applies without a commit-confirm (the read-back still rolls back a mismatch).
    type: int
    default: 60
  require_services:
    description:
      - Also revert when nothing listens on a port the policy keeps open. Leave it false while
        provisioning hosts whose mail service is installed after the firewall.
    type: bool
    default: false
  force:
    description: Apply even when the policy closes the port of an SSH session.
    type: bool
    default: false
  probe:
    description: Probe the open ports locally after applying (needed for the probe gate).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Runs C(mailward plan); nothing on the host changes.
  diff_mode:
    support: full
    description: Live objects the plan touches as before, the policy's version as after.
  platform:
    support: full
    description: Linux hosts with nftables, iptables or UFW.
    platforms: posix
notes:
  - Without C(policy_content), the policy file and every C(file:) allowlist must already be on
    the managed host.
seealso:
  - name: mailward README
    description: The CLI's commands, exit codes and JSON.
    link: https://example.invalid/mailward/README.md
"""

EXAMPLES = r"""
- name: Apply the mail port policy, kept only if the checks pass
  mailward.firewall.mailward:
    policy: /etc/mailward/policy.yaml
    confirm: 60

- name: Provisioning a host whose Dovecot is installed later (the default)
  mailward.firewall.mailward:
    require_services: false

- name: Fail and revert unless Dovecot answers on every open port
  mailward.firewall.mailward:
    require_services: true

- name: Show what would change (run with --check --diff)
  mailward.firewall.mailward:
    policy: /etc/mailward/policy.yaml
  check_mode: true

- name: Push the policy with its allowlist files and drop-ins, validate them together, apply
  mailward.firewall.mailward:
    policy: /etc/mailward/policy.yaml
    policy_content: "{{ lookup('file', 'files/policy.yaml') }}"
    files:
      partners.txt: "{{ lookup('file', 'files/partners.txt') }}"
    policy_d:
      10-submission.yaml: "{{ lookup('file', 'files/10-submission.yaml') }}"

- name: Take mailward's rules away
  mailward.firewall.mailward:
    state: absent
"""

RETURN = r"""
changes:
  description: The changes made (in check mode, the changes that would be made).
  type: list
  elements: dict
  returned: always
  contains:
    op:
      description: add, delete or replace.
      type: str
    object:
      description: table, chain, set, elements or rule.
      type: str
    name:
      description: The object's name or rule key.
      type: str
    detail:
      description: The rule or set as text, or the reason.
      type: str
  sample: [{"op": "add", "object": "rule", "name": "mailward:143:closed", "detail": "tcp dport 143 drop"}]
conflicts:
  description: Packet paths where the firewall does not do what the policy says (rules outside mailward).
  type: list
  elements: dict
  returned: always
probes:
  description: Local probes of the open ports after applying (mailward's probe JSON).
  type: list
  elements: dict
  returned: when applied
backend:
  description: The backend mailward used.
  type: str
  returned: always
  sample: nftables
in_sync:
  description: Whether the firewall already matched the policy before this run.
  type: bool
  returned: always
outcome:
  description: How the run ended.
  type: str
  returned: always
  sample: kept
  choices: [in-sync, kept, reverted, planned, error, revert-failed]
files_changed:
  description: The policy files installed or replaced (with C(policy_content)).
  type: list
  elements: str
  returned: when policy_content is given
reason:
  description: Why the apply was reverted, or why it was kept despite a probe warning.
  type: str
  returned: when a probe or a check did not pass
confirm:
  description: mailward's confirm record of the apply (seconds, pending, auto_confirmed, reason).
  type: dict
  returned: when applied with confirm
"""

import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

EMPTY_POLICY = "version: 1\nports: {}\n"


def change_line(c):
    line = "%s %s" % (c["object"], c["name"])
    if c.get("detail"):
        line += "  " + c["detail"]
    if c.get("items"):
        line += ": " + ", ".join(c["items"])
    return line


def diff_of(changes):
    """before: the live objects the plan deletes or replaces; after: what the policy puts there."""
    before = [change_line(c) for c in changes if c["op"] in ("delete", "replace")]
    after = [change_line(c) for c in changes if c["op"] in ("add", "replace")]
    text = lambda lines: "\n".join(lines) + ("\n" if lines else "")
    return dict(before=text(before), after=text(after),
                before_header="live firewall (objects the plan touches)", after_header="mailward policy")


class Runner(object):
    def __init__(self, module, policy):
        self.module = module
        p = module.params
        self.base = [p["binary"], "--format", "json", "--policy", policy, "--state-dir", p["state_dir"]]
        if p["backend"]:
            self.base += ["--backend", p["backend"]]

    def run(self, *args):
        argv = self.base + list(args)
        rc, out, err = self.module.run_command(argv)
        try:
            doc = json.loads(out) if out.strip() else {}
        except ValueError:
            self.module.fail_json(msg="mailward printed no JSON: %s" % (err.strip() or out.strip()), rc=rc,
                                  stdout=out, stderr=err, cmd=argv)
        return rc, doc, err, argv


def probe_failures(probes):
    """(refused, other): open ports whose local probe failed, by whether nothing listened."""
    refused, other = [], []
    for pr in probes or []:
        if pr.get("as_policy") is False:
            (refused if pr.get("state") == "closed" else other).append(pr)
    return refused, other


def ports(probes):
    return ", ".join(str(pr.get("port")) for pr in probes)


def tree_of(module):
    """{relative path: content} of the policy tree to install."""
    p = module.params
    tree = {os.path.basename(p["policy"]): p["policy_content"]}
    for option, prefix in (("files", ""), ("policy_d", "policy.d/")):
        for name, content in (p[option] or {}).items():
            if not name or "/" in name or name in (".", ".."):
                module.fail_json(msg="%s: %r is not a plain file name" % (option, name))
            tree[prefix + name] = content
    return dict((rel, c if c.endswith("\n") or not c else c + "\n") for rel, c in tree.items())


def read_or_none(path):
    try:
        with open(path) as f:
            return f.read()
    except (IOError, OSError):
        return None


def stage_and_validate(module, tree):
    """Writes the tree into a private directory and validates it as a whole. Returns the
    staged policy path (the caller removes the directory)."""
    p = module.params
    stage = tempfile.mkdtemp(prefix="mailward-stage-")
    for rel, content in tree.items():
        path = os.path.join(stage, rel)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path), 0o700)
        with open(path, "w") as f:
            f.write(content)
    staged = os.path.join(stage, os.path.basename(p["policy"]))
    rc, out, err = module.run_command([p["binary"], "--policy", staged, "validate"])
    if rc != 0:
        shutil.rmtree(stage)
        msg = (err.strip() or out.strip()).replace(stage + "/", os.path.dirname(p["policy"]) + "/")
        module.fail_json(msg="the policy is invalid, nothing was installed or applied: %s" % msg, rc=rc,
                         outcome="error")
    return stage, staged


def install(module, tree):
    """Installs the files of the tree that differ; returns [(path, previous content or None)]."""
    base = os.path.dirname(module.params["policy"])
    changed = []
    for rel, content in sorted(tree.items()):
        path = os.path.join(base, rel)
        previous = read_or_none(path)
        if previous == content:
            continue
        d = os.path.dirname(path)
        if not os.path.isdir(d):
            os.makedirs(d, 0o755)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".mailward-")
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
        changed.append((path, previous))
    return changed


def uninstall(installed):
    """Puts the policy files back as they were (a reverted apply leaves no new policy behind
    for the boot unit to apply)."""
    for path, previous in installed or []:
        if previous is None:
            os.unlink(path)
            continue
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".mailward-")
        with os.fdopen(fd, "w") as f:
            f.write(previous)
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            policy=dict(type="path", default="/etc/mailward/policy.yaml"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            binary=dict(type="path", default="/usr/sbin/mailward"),
            state_dir=dict(type="path", default="/var/lib/mailward"),
            backend=dict(type="str", choices=["auto", "nftables", "iptables", "ufw"]),
            confirm=dict(type="int", default=60),
            require_services=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
            probe=dict(type="bool", default=True),
            policy_content=dict(type="str"),
            files=dict(type="dict", default={}),
            policy_d=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    policy = p["policy"]
    tmpdir = None
    if p["policy_content"] is not None and p["state"] == "present":
        tree = tree_of(module)
        stage, staged = stage_and_validate(module, tree)
        try:
            base = os.path.dirname(p["policy"])
            file_diffs = []
            for rel, content in sorted(tree.items()):
                before = read_or_none(os.path.join(base, rel))
                if before != content:
                    file_diffs.append(dict(before=before or "", after=content, before_header=os.path.join(base, rel),
                                           after_header=os.path.join(base, rel)))
            if module.check_mode:
                run_module(module, Runner(module, staged), file_diffs=file_diffs)
            installed = install(module, tree)
        finally:
            shutil.rmtree(stage)
        run_module(module, Runner(module, policy), file_diffs=file_diffs, installed=installed)
        return
    if p["state"] == "absent":
        tmpdir = tempfile.mkdtemp(prefix="mailward-absent-")
        policy = os.path.join(tmpdir, "policy.yaml")
        with open(policy, "w") as f:
            f.write(EMPTY_POLICY)
    try:
        run_module(module, Runner(module, policy))
    finally:
        if tmpdir:
            os.unlink(policy)
            os.rmdir(tmpdir)


def run_module(module, runner, file_diffs=None, installed=None):
    """Plans (check mode) or applies, and exits the module."""
    p = module.params
    if module.check_mode:
        rc, doc, err, argv = runner.run("plan")
    else:
        args = ["apply"]
        if p["confirm"] > 0:
            args += ["--confirm", str(p["confirm"]), "--auto-confirm"]
        if p["force"]:
            args.append("--force")
        if not p["probe"] or p["state"] == "absent":
            args.append("--no-probe")
        rc, doc, err, argv = runner.run(*args)
    if "error" in doc or rc not in (0, 2) or (rc == 2 and not module.check_mode):
        uninstall(installed)
    if "error" in doc:
        module.fail_json(msg=doc["error"]["message"], kind=doc["error"]["kind"], rc=rc, stderr=err, cmd=argv,
                         outcome="reverted" if rc == 3 else "error")
    if rc not in (0, 2) or (rc == 2 and not module.check_mode):
        outcome = "error"
        msg = "mailward exited %d: %s" % (rc, err.strip())
        if not module.check_mode and os.path.exists(os.path.join(p["state_dir"], "pending-confirm")):
            # It died between its commit and its confirm: revert now rather than at the deadline.
            rrc, rdoc, rerr, rargv = runner.run("rollback")
            outcome = "reverted" if rrc == 0 else "revert-failed"
            msg += "; %s" % ("reverted" if rrc == 0 else "mailward rollback FAILED: %s" % rerr.strip())
        module.fail_json(msg=msg, rc=rc, stderr=err, cmd=argv, outcome=outcome)

    files_changed = None if installed is None else [path for path, _ in installed]
    changes = doc.get("changes", [])
    result = dict(
        changed=bool(changes or file_diffs) if module.check_mode else bool(doc.get("applied") or files_changed),
        changes=changes,
        conflicts=doc.get("conflicts", []),
        backend=doc.get("backend"),
        in_sync=doc.get("in_sync"),
        cmd=argv,
    )
    if files_changed is not None:
        result["files_changed"] = files_changed
    if module._diff:
        result["diff"] = file_diffs + [diff_of(changes)] if file_diffs else diff_of(changes)
    if doc.get("conflicts"):
        module.warn("%d path(s) where the firewall does not do what the policy says (rules outside mailward): "
                    "see 'conflicts'" % len(doc["conflicts"]))
    if module.check_mode:
        result["outcome"] = "planned"
        module.exit_json(**result)

    probes = doc.get("probes", [])
    result["probes"] = probes
    confirm = doc.get("confirm")
    result["confirm"] = confirm
    if not doc.get("applied"):
        result["outcome"] = "in-sync"
        module.exit_json(**result)
    if not confirm or not confirm.get("pending"):
        result["outcome"] = "kept"
        module.exit_json(**result)

    # Pending: mailward's own checks did not confirm. Decide now, so the task never returns
    # while a revert is still to come.
    refused, other = probe_failures(probes)
    why = confirm.get("reason", "not confirmed")
    probe_only = "probe" in why and not other
    # With force, the SSH-session check was skipped before the apply and mailward reports only
    # its first failed check: never confirm on its behalf then.
    if probe_only and refused and not p["require_services"] and not p["force"]:
        crc, cdoc, cerr, cargv = runner.run("confirm")
        if crc != 0:
            # The watchdog reverted first (a very short confirm window).
            uninstall(installed)
            result.update(outcome="reverted", changed=False)
            module.fail_json(msg="reverted before it could be confirmed (the confirm window is too short?): %s"
                             % cdoc.get("error", {}).get("message", cerr), **result)
        result["outcome"] = "kept"
        result["reason"] = ("nothing listens on port(s) %s yet (connection refused): the firewall lets them through, "
                            "so the policy is kept; set require_services to revert instead" % ports(refused))
        module.warn(result["reason"])
        module.exit_json(**result)
    if other:
        why = "%s (port(s) %s: %s)" % (why, ports(other), "; ".join(
            "%s %s" % (pr.get("state"), pr.get("reason") or "") for pr in other))
    elif refused:
        why = "%s (nothing listens on port(s) %s and require_services is set)" % (why, ports(refused))
    rrc, rdoc, rerr, rargv = runner.run("rollback")
    if rrc != 0:
        result.update(outcome="revert-failed", reason=why)
        module.fail_json(msg="not confirmed: %s; mailward rollback FAILED: %s (the watchdog still reverts within %d s)"
                         % (why, rdoc.get("error", {}).get("message", rerr), p["confirm"]), **result)
    uninstall(installed)
    result.update(outcome="reverted", changed=False, reason=why)
    module.fail_json(msg="reverted: the applied policy was not confirmed: %s" % why, **result)


if __name__ == "__main__":
    main()
