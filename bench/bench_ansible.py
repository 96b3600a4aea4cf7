"""Where the time of an Ansible run over a fleet goes: the test fleet of tests/integration
(8 namespaces, each a real sshd) and ansible-playbook from a controller namespace, with one
setting changed at a time. Prints one line per variant: seconds for the whole play (median of 3)."""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from test_ansible import Fleet  # noqa: E402


def play(fleet, body, cfg_edit=lambda c: c, args=()):
    cfg = open(f"{fleet.d}/ansible.cfg").read()
    with open(f"{fleet.d}/bench.cfg", "w") as f:
        f.write(cfg_edit(cfg).replace("stdout_callback = results_json", "stdout_callback = default"))
    with open(f"{fleet.d}/bench.yml", "w") as f:
        f.write(body)
    env = dict(os.environ, ANSIBLE_CONFIG=f"{fleet.d}/bench.cfg", ANSIBLE_NOCOLOR="1")
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run(["ip", "netns", "exec", fleet.ctl, "ansible-playbook", "-i", f"{fleet.d}/inventory",
                        f"{fleet.d}/bench.yml", *args], capture_output=True, text=True, env=env, cwd=fleet.d)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def main():
    Fleet.setUpClass()
    try:
        good = "mail:!h6:!h7"
        ping = f"- hosts: {good}\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n"
        facts = f"- hosts: {good}\n  gather_facts: true\n  tasks:\n    - ansible.builtin.ping:\n"
        role = f"- hosts: {good}\n  gather_facts: false\n  roles:\n    - mailward.firewall.mailward\n"
        role_noprobe = (f"- hosts: {good}\n  gather_facts: false\n  roles:\n    - role: mailward.firewall.mailward\n"
                        "      vars: {mailward_probe_from: ''}\n")
        no_pipe = lambda c: c.replace("pipelining = True", "pipelining = False")
        no_mux = lambda c: c.replace("-o ControlMaster=auto -o ControlPersist=30s ", "-o ControlMaster=no ")
        forks1 = lambda c: c.replace("forks = 8", "forks = 1")
        rows = [
            ("ping, recommended settings", ping, lambda c: c),
            ("ping, pipelining off", ping, no_pipe),
            ("ping, no SSH multiplexing", ping, no_mux),
            ("ping, forks 1", ping, forks1),
            ("ping, gather_facts on", facts, lambda c: c),
            ("role without the neighbour probe", role_noprobe, lambda c: c),
            ("role (second run, in sync)", role, lambda c: c),
            ("role, pipelining off", role, no_pipe),
            ("role, forks 1", role, forks1),
        ]
        for name, body, edit in rows:
            print(f"{name:40s} {play(Fleet, body, edit):6.1f} s", flush=True)
    finally:
        Fleet.tearDownClass()


if __name__ == "__main__":
    main()
