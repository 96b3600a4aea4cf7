"""A private PID namespace (with its own /proc) that outlives the commands run in it, so that
mailward's look for other firewall managers (firewalld, UFW) by process name sees only this
test's processes, not a firewalld another suite runs on the machine in namespaces of its own;
and so that a process mailward leaves behind (the `apply --confirm` timer) keeps running after
the command that started it returns."""
import os
import subprocess
import time

from mwtest import _die_with_parent


class PrivatePids:
    def __init__(self):
        # unshare forks: its child, `sleep`, is PID 1 of the new namespace and holds it.
        # --kill-child and PR_SET_PDEATHSIG: a killed test run leaves nothing of it behind.
        self.proc = subprocess.Popen(["unshare", "-m", "-p", "-f", "--mount-proc", "--propagation", "private",
                                      "--kill-child=SIGKILL", "sleep", "infinity"], preexec_fn=_die_with_parent)
        self.pid = None
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    kids = f.read().split()
            except FileNotFoundError:
                kids = []
            if kids and os.readlink(f"/proc/{kids[0]}/ns/pid") != os.readlink("/proc/self/ns/pid"):
                self.pid = int(kids[0])
                break
            time.sleep(0.01)
        if self.pid is None:
            self.close()
            raise AssertionError("no private PID namespace")

    def prefix(self):
        """argv prefix that runs a command in the namespace (and its mount namespace, whose
        /proc shows it)."""
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "--"]

    def close(self):
        self.proc.kill()
        self.proc.wait()
        if self.pid:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
