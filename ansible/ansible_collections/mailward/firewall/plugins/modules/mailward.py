#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module for mailward: idempotent applies with check and diff modes."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mailward
short_description: Keep a host's mail ports as a mailward policy declares
description:
  - Runs C(mailward apply) with JSON output; C(changed) is true only when mailward changed the
    firewall. In check mode it runs C(mailward plan) and reports what would change, changing
    nothing. In diff mode the plan is shown as the diff.
options:
  policy:
    description: Policy file or directory on the managed host.
    type: path
    required: true
  binary:
    description: The mailward binary.
    type: path
    default: /usr/sbin/mailward
  state_dir:
    description: mailward's state directory.
    type: path
    default: /var/lib/mailward
  backend:
    description: Override the policy's backend.
    type: str
    choices: [auto, nftables, iptables, ufw]
  confirm:
    description: Apply with C(--confirm N --auto-confirm) (reverts unless the post-apply checks pass).
    type: int
  force:
    description: Apply even when the policy closes the port of an SSH session.
    type: bool
    default: false
  probe:
    description: Probe the open ports locally after applying.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Apply the mail port policy
  mailward.firewall.mailward:
    policy: /etc/mailward/policy.yaml
    confirm: 60
"""

RETURN = r"""
changes: {description: The changes made (or, in check mode, that would be made), type: list, returned: always}
conflicts: {description: Rules elsewhere that still block ports the policy keeps open, type: list, returned: always}
probes: {description: Local probe results after applying, type: list, returned: when applied}
backend: {description: The backend mailward used, type: str, returned: always}
in_sync: {description: Whether the firewall already matched the policy, type: bool, returned: always}
"""

import json

from ansible.module_utils.basic import AnsibleModule


def change_line(c):
    sign = {"add": "+", "delete": "-"}.get(c["op"], "~")
    line = "%s %s %s" % (sign, c["object"], c["name"])
    if c.get("detail"):
        line += "  " + c["detail"]
    if c.get("items"):
        line += ": " + ", ".join(c["items"])
    return line


def main():
    module = AnsibleModule(
        argument_spec=dict(
            policy=dict(type="path", required=True),
            binary=dict(type="path", default="/usr/sbin/mailward"),
            state_dir=dict(type="path", default="/var/lib/mailward"),
            backend=dict(type="str", choices=["auto", "nftables", "iptables", "ufw"]),
            confirm=dict(type="int"),
            force=dict(type="bool", default=False),
            probe=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    argv = [p["binary"], "--format", "json", "--policy", p["policy"], "--state-dir", p["state_dir"]]
    if p["backend"]:
        argv += ["--backend", p["backend"]]
    if module.check_mode:
        argv.append("plan")
    else:
        argv.append("apply")
        if p["confirm"]:
            argv += ["--confirm", str(p["confirm"]), "--auto-confirm"]
        if p["force"]:
            argv.append("--force")
        if not p["probe"]:
            argv.append("--no-probe")
    rc, out, err = module.run_command(argv)
    try:
        doc = json.loads(out) if out.strip() else {}
    except ValueError:
        module.fail_json(msg="mailward printed no JSON", rc=rc, stdout=out, stderr=err)
    if "error" in doc:
        module.fail_json(msg=doc["error"]["message"], kind=doc["error"]["kind"], rc=rc, stderr=err)
    if rc not in (0, 2) or (rc == 2 and not module.check_mode):
        module.fail_json(msg="mailward exited %d" % rc, rc=rc, stdout=out, stderr=err)

    changes = doc.get("changes", [])
    result = dict(
        changed=bool(changes) if module.check_mode else bool(doc.get("applied")),
        changes=changes,
        conflicts=doc.get("conflicts", []),
        backend=doc.get("backend"),
        in_sync=doc.get("in_sync"),
        cmd=argv,
    )
    if not module.check_mode:
        result["probes"] = doc.get("probes", [])
        result["confirm"] = doc.get("confirm")
    if module._diff:
        result["diff"] = dict(before="", after="\n".join(change_line(c) for c in changes) + ("\n" if changes else ""),
                              before_header="live firewall", after_header="mailward plan")
    if doc.get("conflicts"):
        module.warn("%d rule(s) outside mailward would still block ports the policy keeps open"
                    % len(doc["conflicts"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
