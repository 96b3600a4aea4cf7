#!/usr/bin/env python3
"""The iptables and UFW backends against the tools people use today, in one run, inside
throwaway namespaces (UFW on private copies of its files in a mount namespace).

For each allowlist size (port 143 closed except for the list, 993 open):
  iptables: mailward apply (chain + ipset) vs raw iptables-restore of the classic one-rule-per-
            address ruleset, and mailward's one-address edit;
  UFW:      mailward apply (one write of UFW's files + one reload) vs `ufw allow from ADDR ...`
            one rule at a time (UFW's usual cost; beyond BENCH_UFW_CALLS calls the per-call cost
            of the calls made is multiplied out, and says so), and vs a bare `ufw reload`.
Prints a table with medians and ratios; writes bench/results/backends.json."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import addresses  # the same address lists as the nftables benchmark

HERE = os.path.dirname(os.path.abspath(__file__))
MAILWARD = os.path.abspath(os.environ.get("MAILWARD_BIN", os.path.join(HERE, "..", "build", "mailward")))
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "10,1000,10000").split(",")]
IPT_EXTRA = [int(x) for x in os.environ.get("BENCH_IPT_EXTRA", "100000").split(",") if x]
REPS = int(os.environ.get("BENCH_REPS", "3"))
UFW_CALLS = int(os.environ.get("BENCH_UFW_CALLS", "20"))


class Ns:
    """A network namespace (and, with ufw_dir, a mount namespace with private UFW files)."""

    def __init__(self, ufw_dir=None):
        if ufw_dir:
            etc, default = os.path.join(ufw_dir, "etc-ufw"), os.path.join(ufw_dir, "default-ufw")
            shutil.copytree("/etc/ufw", etc, symlinks=True)
            shutil.copy2("/etc/default/ufw", default)
            script = f'mount --bind "{etc}" /etc/ufw && mount --bind "{default}" /etc/default/ufw && exec sleep infinity'
            self.proc = subprocess.Popen(["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", script])
            self.enter = ["-n", "-m"]
        else:
            self.proc = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
            self.enter = ["-n"]
        for _ in range(200):
            if os.readlink(f"/proc/{self.proc.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.01)
        time.sleep(0.1)  # the bind mounts

    def sh(self, argv, check=True, input=None):
        p = subprocess.run(["nsenter", "-t", str(self.proc.pid)] + self.enter + argv, capture_output=True, text=True,
                           input=input)
        if check and p.returncode not in (0, 2):
            raise RuntimeError(f"{argv}: {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def timed(self, argv, input=None):
        t = time.perf_counter()
        self.sh(argv, input=input)
        return (time.perf_counter() - t) * 1000

    def close(self):
        self.proc.kill()
        self.proc.wait()


def policies(tmp, n, backend):
    addrs = addresses(n)
    paths = []
    for suffix, extra in (("", []), ("-edit", ["192.0.2.77"])):
        lst = os.path.join(tmp, f"list{n}{suffix}.txt")
        with open(lst, "w") as f:
            f.write("\n".join(addrs + extra) + "\n")
        pol = os.path.join(tmp, f"{backend}{n}{suffix}.yaml")
        with open(pol, "w") as f:
            f.write(f"version: 1\nbackend: {backend}\nallowlists:\n  big: {{file: {lst}}}\nports:\n"
                    "  imap: {state: closed, allow: [big]}\n  imaps: {state: open}\n")
        paths.append(pol)
    return addrs, paths


def median(xs):
    return statistics.median(xs)


def bench_iptables(n, tmp):
    addrs, (pol, pol_edit) = policies(tmp, n, "iptables")
    state = os.path.join(tmp, f"ipt-state{n}")
    ns = Ns()
    try:
        def reset():
            ns.sh(["iptables", "-F"]), ns.sh(["iptables", "-X"]), ns.sh(["ip6tables", "-F"]), ns.sh(["ip6tables", "-X"])
            ns.sh(["ipset", "destroy"], check=False)
            shutil.rmtree(state, ignore_errors=True)

        mw = [MAILWARD, "--state-dir", state, "--policy", pol, "--quiet"]
        applies = []
        for _ in range(REPS):
            reset()
            applies.append(ns.timed(mw + ["apply"]))
        edits = []
        for _ in range(REPS):
            t = time.perf_counter()
            ns.sh([MAILWARD, "--state-dir", state, "--policy", pol_edit, "--quiet", "apply"])
            edits.append((time.perf_counter() - t) * 1000)
            ns.sh(mw + ["apply"])
        # The classic ruleset: one ACCEPT per address, then the DROP, for iptables-restore.
        rules = "*filter\n" + "".join(f"-A INPUT -s {a}/32 -p tcp -m tcp --dport 143 -j ACCEPT\n" for a in addrs) + \
                "-A INPUT -p tcp -m tcp --dport 143 -j DROP\n-A INPUT -p tcp -m tcp --dport 993 -j ACCEPT\nCOMMIT\n"
        raw = []
        for _ in range(REPS):
            reset()
            raw.append(ns.timed(["iptables-restore"], input=rules))
        return {"addresses": n, "apply_mailward": median(applies), "edit_mailward": median(edits),
                "iptables_restore": median(raw)}
    finally:
        ns.close()


def bench_ufw(n, tmp):
    addrs, (pol, _) = policies(tmp, n, "ufw")
    res = {"addresses": n}
    applies, reloads = [], []
    for rep in range(REPS if n <= 1000 else 1):
        d = tempfile.mkdtemp(dir=tmp)
        ns = Ns(ufw_dir=d)
        try:
            ns.sh(["ufw", "--force", "enable"])
            reloads.append(ns.timed(["ufw", "reload"]))
            applies.append(ns.timed([MAILWARD, "--state-dir", os.path.join(d, "state"), "--policy", pol, "--quiet",
                                     "apply"]))
        finally:
            ns.close()
    res["apply_mailward"] = median(applies)
    res["ufw_reload"] = median(reloads)
    # UFW one rule at a time: every call rereads and rewrites its files and reloads its chains.
    d = tempfile.mkdtemp(dir=tmp)
    ns = Ns(ufw_dir=d)
    try:
        ns.sh(["ufw", "--force", "enable"])
        calls = min(n, UFW_CALLS)
        t = time.perf_counter()
        for a in addrs[:calls]:
            ns.sh(["ufw", "allow", "from", a, "to", "any", "port", "143", "proto", "tcp"])
        spent = (time.perf_counter() - t) * 1000
        res["ufw_one_by_one"] = spent / calls * n
        res["ufw_one_by_one_measured_calls"] = calls
    finally:
        ns.close()
    return res


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (it only touches namespaces it creates)")
    out = {"reps": REPS, "iptables": [], "ufw": []}
    with tempfile.TemporaryDirectory(prefix="mwbench") as tmp:
        for n in SIZES + IPT_EXTRA:
            out["iptables"].append(bench_iptables(n, tmp))
            print(f"iptables: measured {n} addresses", file=sys.stderr)
        for n in SIZES:
            out["ufw"].append(bench_ufw(n, tmp))
            print(f"ufw: measured {n} addresses", file=sys.stderr)
    print("| addresses | iptables backend: apply | one-address edit | raw iptables-restore, one rule per address | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for r in out["iptables"]:
        print(f"| {r['addresses']:,} | {r['apply_mailward']:.0f} ms | {r['edit_mailward']:.0f} ms | "
              f"{r['iptables_restore']:.0f} ms | {r['apply_mailward'] / r['iptables_restore']:.2f} |")
    print()
    print("| addresses | UFW backend: apply | `ufw allow` one by one | ratio | bare `ufw reload` |")
    print("|---:|---:|---:|---:|---:|")
    for r in out["ufw"]:
        approx = "" if r["ufw_one_by_one_measured_calls"] == r["addresses"] else \
            f" (from {r['ufw_one_by_one_measured_calls']} calls)"
        print(f"| {r['addresses']:,} | {r['apply_mailward'] / 1000:.2f} s | {r['ufw_one_by_one'] / 1000:.1f} s{approx} | "
              f"{r['apply_mailward'] / r['ufw_one_by_one']:.3f} | {r['ufw_reload'] / 1000:.2f} s |")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "backends.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
