"""A real dockerd (Debian's docker.io) inside a Topology's host namespace, publishing container
ports on the host's addresses (TESTING.md recipe): its own data-root, exec-root and socket, a
private mount namespace with a tmpfs /run/docker, the vfs storage driver, and an image imported
from busybox-static (no registry is reachable). Docker writes its iptables rules in the host
namespace only. Used by the iptables and UFW suites to check the DNAT path (issue 11)."""
import os
import shutil
import subprocess
import time

from mwtest import run


def have_docker():
    return shutil.which("dockerd") is not None and shutil.which("docker") is not None and \
        os.path.exists("/bin/busybox")


class Dockerd:
    """dockerd in `host_ns` (a name under /run/netns the caller created and still holds)."""

    IMAGE = "mwbusy:1"

    def __init__(self, host_ns, tmpdir, wrap=None, iptables_variant=None, ipv6_cidr=None):
        """`wrap`: optional argv prefix run before dockerd inside the namespace (e.g. to give
        it private /etc/ufw mounts); `iptables_variant`: "legacy" puts iptables-legacy first
        on dockerd's PATH so Docker writes the legacy tables; `ipv6_cidr`: IPv6 on the default
        bridge from this prefix (a TEST-NET one), so ports are published over IPv6 too."""
        ns_path = f"/run/netns/{host_ns}"
        if not os.path.exists(ns_path):  # never fall through to the machine's own namespace
            raise AssertionError(f"namespace {host_ns} does not exist")
        self.dir = os.path.join(tmpdir, "docker")
        for sub in ("root", "exec", "run", "img/bin", "bin"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.sock = os.path.join(self.dir, "run", "docker.sock")
        self.env = dict(os.environ, DOCKER_HOST="unix://" + self.sock)
        path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        if iptables_variant == "legacy":
            for tool in ("iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore",
                         "ip6tables-restore"):
                target = shutil.which(tool.replace("tables", "tables-legacy", 1))
                os.symlink(target, os.path.join(self.dir, "bin", tool))
            path = os.path.join(self.dir, "bin") + ":" + path
        self.log = open(os.path.join(self.dir, "dockerd.log"), "w")
        script = ('mkdir -p /run/docker && mount -t tmpfs tmpfs /run/docker && '
                  'exec dockerd --data-root "$1" --exec-root "$2" -p "$3" -H "unix://$4" --storage-driver vfs '
                  + ('--experimental --ipv6 --ip6tables --fixed-cidr-v6 "$5"' if ipv6_cidr else ''))
        argv = ["nsenter", f"--net={ns_path}", "unshare", "-m", "--propagation", "private",
                "sh", "-c", script, "sh", os.path.join(self.dir, "root"), os.path.join(self.dir, "exec"),
                os.path.join(self.dir, "run", "dockerd.pid"), self.sock] + ([ipv6_cidr] if ipv6_cidr else [])
        self.proc = subprocess.Popen((wrap or []) + argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PATH=path), start_new_session=True)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("dockerd exited:\n" + self.read_log())
            if os.path.exists(self.sock) and self.docker(["info"], check=False).returncode == 0:
                break
            if time.time() > deadline:
                raise AssertionError("dockerd did not answer within 120 s:\n" + self.read_log())
            time.sleep(0.2)
        img = os.path.join(self.dir, "img")
        if not os.path.exists(os.path.join(img, "bin", "busybox")):
            shutil.copy("/bin/busybox", os.path.join(img, "bin", "busybox"))
            for applet in ("sh", "nc", "echo"):
                os.symlink("busybox", os.path.join(img, "bin", applet))
        tar = subprocess.Popen(["tar", "-C", img, "-c", "."], stdout=subprocess.PIPE)
        self.docker(["import", "-", self.IMAGE], stdin=tar.stdout)
        tar.wait()
        tar.stdout.close()

    def read_log(self):
        self.log.flush()
        with open(os.path.join(self.dir, "dockerd.log")) as f:
            return f.read()[-4000:]

    def docker(self, args, check=True, **kw):
        return run(["docker"] + list(args), check=check, env=self.env, **kw)

    def publish(self, ports, greeting="container"):
        """Starts a container answering "* OK <greeting>" on each port, published on the same
        host port (`-p P:P`, IPv4). Returns the container id once every port answers inside."""
        args = ["run", "-d"]
        for p in ports:
            args += ["-p", f"{p}:{p}"]
        loops = " & ".join(
            f"while true; do echo '* OK {greeting}' | nc -l -p {p}; done" for p in ports)
        cid = self.docker(args + [self.IMAGE, "sh", "-c", loops + " & wait"]).stdout.strip()
        ip = self.docker(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", cid]).stdout.strip()
        self.wait_listening(cid, ports)
        return cid, ip

    def wait_listening(self, cid, ports, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = self.docker(["exec", cid, "busybox", "netstat", "-ltn"], check=False).stdout
            if all(f":{p} " in out for p in ports):
                return
            time.sleep(0.1)
        raise AssertionError(f"container {cid} is not listening on {ports}")

    def close(self):
        if self.proc.poll() is None:
            self.docker(["rm", "-f"] + self.docker(["ps", "-aq"], check=False).stdout.split(), check=False)
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()
        # vfs layers of a stopped daemon: plain files we made
        run(["rm", "-rf", self.dir], check=False)


def docker_rules(save_text, own_chain="MAILWARD"):
    """iptables-save text without counters, comments, and mailward's own lines (its chain
    declarations, rules and jumps): what must stay byte-identical for Docker."""
    out = []
    for line in save_text.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(":"):
            name = line[1:].split()[0]
            if name == own_chain:
                continue
            line = line.rsplit(" [", 1)[0]
        if line.startswith(f"-A {own_chain} ") or line.endswith(f"-j {own_chain}"):
            continue
        out.append(line)
    return "\n".join(out)
