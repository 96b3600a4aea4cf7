#!/usr/bin/env python3
"""Large allowlists (issue #16), mailward beside the tools people use, in one run, each size in
its own throwaway network namespace. Sizes: 10,000, 100,000 and 1,000,000 random IPv4 hosts,
and 1,000,000 hosts + 50,000 IPv6 /64 prefixes (BENCH_SCALE_SIZES to choose).

nftables, on the identical table (mailward's own, dumped with `nft list table` and loaded again):
  apply                 mailward apply from nothing        vs  nft -f of the same table
  plan warm             nobody else committed since mailward's apply (its record is trusted)
  plan cold             after another tool's commit (`nft add table`): every element is read
                                                           vs  nft -j list ruleset
  edit warm / cold      mailward apply of a one-address change (cold: after a foreign commit)
                                                           vs  nft add element
  edit warm, removal    mailward apply taking that address out again
                                                           vs  nft delete element
                        (plan warm and the edits, small numbers, are timed inside the namespace
                        by bash's `time`; the rest through nsenter and /usr/bin/time, ~2 ms more)
  peak RSS              of mailward apply from nothing
  for reference, the same content as one set (the classic layout): nft -f and nft -j list ruleset
iptables (ipset) at 1,000,000: mailward apply vs `ipset restore` + `iptables-restore` of the same
content (what mailward made, saved), and a cold plan vs `ipset save` + `iptables-save`.

Medians of BENCH_REPS (default 3) runs. Prints tables; writes bench/results/scale.json."""
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MAILWARD = os.path.abspath(os.environ.get("MAILWARD_BIN", os.path.join(HERE, "..", "build", "mailward")))
SIZES = os.environ.get("BENCH_SCALE_SIZES", "10000,100000,1000000,1000000+v6").split(",")
IPT_SIZES = [int(x) for x in os.environ.get("BENCH_SCALE_IPT", "1000000").split(",") if x]
REPS = int(os.environ.get("BENCH_REPS", "3"))
V6_PREFIXES = 50_000


def hosts(n, seed=7):
    rnd = random.Random(seed)
    out = set()
    while len(out) < n:
        out.add(f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}")
    return sorted(out)


def v6_prefixes(n, seed=8):
    rnd = random.Random(seed)
    out = set()
    while len(out) < n:
        out.add(f"2001:db8:{rnd.randrange(65536):x}:{rnd.randrange(65536):x}::/64")
    return sorted(out)


def shard_set(base, n, addr):
    """The set mailward keeps IPv4 host `addr` in (model/ruleset.cc: ShardBits, ShardOf)."""
    bits = 0
    while bits < 6 and n > (32768 << bits):
        bits += 1
    if bits == 0:
        return base
    octets = [int(x) for x in addr.split(".")]
    index = 0
    for j in range(bits):
        byte = (3, 2, 1)[j % 3]
        if octets[byte] & (1 << (j // 3)):
            index |= 1 << j
    return f"{base}_s{index}"


class Ns:
    def __init__(self):
        self.proc = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        for _ in range(500):
            try:
                if os.readlink(f"/proc/{self.proc.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                    break
            except OSError:
                pass
            time.sleep(0.01)
        else:
            raise RuntimeError("the namespace did not appear")
        self.sh(["ip", "link", "set", "lo", "up"])

    def sh(self, argv, check=True, input=None):
        p = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-n"] + argv, capture_output=True, text=True,
                           input=input)
        if check and p.returncode not in (0, 2):
            raise RuntimeError(f"{argv}: {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return p

    def timed(self, argv, input=None):
        """(ms, peak RSS in KB) of one run."""
        t = time.perf_counter()
        p = self.sh(["/usr/bin/time", "-f", "MWRSS %M"] + argv, input=input)
        ms = (time.perf_counter() - t) * 1000
        rss = 0
        for line in p.stderr.splitlines():
            if line.startswith("MWRSS "):
                rss = int(line.split()[1])
        return ms, rss

    def timed_inside(self, argv):
        """ms of one run timed inside the namespace by bash's `time` (fork to exit, as at a
        root shell): what the command costs without nsenter's and this harness's ~2 ms, which
        matter next to a 10 ms edit. Used for mailward and the nft command alike."""
        p = self.sh(["bash", "-c", 'TIMEFORMAT="MWTIME %3R"; time "$@" >/dev/null 2>&1', "bash"] + argv)
        for line in p.stderr.splitlines():
            if line.startswith("MWTIME "):
                return float(line.split()[1]) * 1000
        raise RuntimeError(f"{argv}: no time reported\n{p.stderr[-2000:]}")

    def close(self):
        self.proc.kill()
        self.proc.wait()


def med(xs):
    return statistics.median(xs)


def write_policy(tmp, tag, backend, entries, extra=()):
    lst = os.path.join(tmp, f"list-{tag}.txt")
    with open(lst, "w") as f:
        f.write("\n".join(list(entries) + list(extra)) + "\n")
    pol = os.path.join(tmp, f"policy-{tag}.yaml")
    with open(pol, "w") as f:
        f.write(f"version: 1\nbackend: {backend}\nallowlists:\n  big: {{file: {lst}}}\nports:\n"
                "  imap: {state: closed, allow: [big]}\n  imaps: {state: open}\n")
    return pol


def bench_nft(size, tmp):
    n = int(size.split("+")[0])
    v4 = hosts(n)
    entries = v4 + (v6_prefixes(V6_PREFIXES) if size.endswith("+v6") else [])
    tag = size.replace("+", "-")
    pol = write_policy(tmp, tag, "nftables", entries)
    pol_edit = write_policy(tmp, tag + "-edit", "nftables", entries, ["192.0.2.77"])
    state = os.path.join(tmp, "state-" + tag)
    mw = [MAILWARD, "--state-dir", state, "--policy", pol, "--quiet"]
    mw_edit = [MAILWARD, "--state-dir", state, "--policy", pol_edit, "--quiet"]
    ns = Ns()
    foreign = iter(range(10**6))
    try:
        def reset():
            ns.sh(["nft", "flush", "ruleset"])
            subprocess.run(["rm", "-rf", state])

        def foreign_commit():
            ns.sh(["nft", "add", "table", "ip", f"other{next(foreign)}"])

        r = {"size": size, "addresses": len(entries)}
        runs, rss = [], []
        for _ in range(REPS):
            reset()
            ms, kb = ns.timed(mw + ["apply"])
            runs.append(ms)
            rss.append(kb)
        r["apply_mailward"], r["apply_rss_kb"] = med(runs), max(rss)
        # The identical table for nft.
        table = os.path.join(tmp, f"table-{tag}.nft")
        with open(table, "w") as f:
            f.write(ns.sh(["nft", "list", "table", "inet", "mailward"]).stdout)
        runs = []
        for _ in range(REPS):
            reset()
            runs.append(ns.timed(["nft", "-f", table])[0])
        r["apply_nft"] = med(runs)

        reset()
        ns.sh(mw + ["apply"])
        r["plan_warm_mailward"] = med([ns.timed_inside(mw + ["plan"]) for _ in range(REPS)])
        runs = []
        for _ in range(REPS):
            foreign_commit()
            runs.append(ns.timed(mw + ["plan"])[0])
        r["plan_cold_mailward"] = med(runs)
        r["plan_cold_nft"] = med([ns.timed(["nft", "-j", "list", "ruleset"])[0] for _ in range(REPS)])

        # One-address edits: add it, remove it again (both timed). Removing an element costs
        # any tool more: the kernel frees a deleted element after an RCU grace period, and the
        # close of the netlink socket waits for that (nft delete element pays it too).
        warm, warm_rm, cold = [], [], []
        ns.sh(mw + ["apply"])
        for _ in range(REPS):
            warm.append(ns.timed_inside(mw_edit + ["apply"]))
            warm_rm.append(ns.timed_inside(mw + ["apply"]))
        for _ in range(REPS):
            foreign_commit()
            cold.append(ns.timed_inside(mw_edit + ["apply"]))
            foreign_commit()
            ns.sh(mw + ["apply"])
        r["edit_warm_mailward"], r["edit_cold_mailward"] = med(warm), med(cold)
        r["edit_warm_remove_mailward"] = med(warm_rm)
        target = shard_set("allow_big_hosts_v4", n, "192.0.2.78")
        runs, runs_rm = [], []
        for _ in range(REPS):
            runs.append(ns.timed_inside(["nft", "add", "element", "inet", "mailward", target, "{", "192.0.2.78", "}"]))
            runs_rm.append(ns.timed_inside(["nft", "delete", "element", "inet", "mailward", target, "{", "192.0.2.78", "}"]))
        r["edit_nft"], r["edit_remove_nft"] = med(runs), med(runs_rm)

        # The classic layout for reference: the same content as one set per family, loaded and
        # listed by nft (what a hand-written table, or mailward before sharding, costs nft).
        if n > 32768:
            v6 = [e for e in entries if ":" in e]
            classic = os.path.join(tmp, f"classic-{tag}.nft")
            with open(classic, "w") as f:
                f.write("table inet classic {\n  set hosts { type ipv4_addr; size %d; elements = { %s } }\n"
                        % (1 << (2 * n - 1).bit_length(), ", ".join(v4)))
                if v6:
                    f.write("  set nets6 { type ipv6_addr; flags interval; elements = { %s } }\n" % ", ".join(v6))
                f.write("  chain prerouting { type filter hook prerouting priority mangle; policy accept;\n"
                        "    tcp dport 143 ip saddr @hosts accept\n" +
                        ("    tcp dport 143 ip6 saddr @nets6 accept\n" if v6 else "") +
                        "    tcp dport 143 ct state new drop\n  }\n}\n")
            runs = []
            for _ in range(REPS):
                reset()
                runs.append(ns.timed(["nft", "-f", classic])[0])
            r["apply_nft_one_set"] = med(runs)
            r["plan_cold_nft_one_set"] = med([ns.timed(["nft", "-j", "list", "ruleset"])[0] for _ in range(REPS)])
        return r
    finally:
        ns.close()


def bench_ipt(n, tmp):
    pol = write_policy(tmp, f"ipt{n}", "iptables", hosts(n))
    state = os.path.join(tmp, f"ipt-state{n}")
    mw = [MAILWARD, "--state-dir", state, "--policy", pol, "--quiet"]
    ns = Ns()
    try:
        def reset():
            for tool in ("iptables", "ip6tables"):
                for table in ("filter", "mangle", "nat"):
                    ns.sh([tool, "-t", table, "-F"], check=False)
                    ns.sh([tool, "-t", table, "-X"], check=False)
            ns.sh(["ipset", "destroy"], check=False)
            subprocess.run(["rm", "-rf", state])

        r = {"addresses": n}
        runs, rss = [], []
        for _ in range(REPS):
            reset()
            ms, kb = ns.timed(mw + ["apply"])
            runs.append(ms)
            rss.append(kb)
        r["apply_mailward"], r["apply_rss_kb"] = med(runs), max(rss)
        sets = ns.sh(["ipset", "save"]).stdout
        rules4 = ns.sh(["iptables-save"]).stdout
        rules6 = ns.sh(["ip6tables-save"]).stdout
        runs = []
        for _ in range(REPS):
            reset()
            t = time.perf_counter()
            ns.sh(["ipset", "restore"], input=sets)
            ns.sh(["iptables-restore"], input=rules4)
            ns.sh(["ip6tables-restore"], input=rules6)
            runs.append((time.perf_counter() - t) * 1000)
        r["apply_restore"] = med(runs)
        reset()
        ns.sh(mw + ["apply"])
        r["plan_cold_mailward"] = med([ns.timed(mw + ["plan"])[0] for _ in range(REPS)])
        runs = []
        for _ in range(REPS):
            t = time.perf_counter()
            ns.sh(["ipset", "save"])
            ns.sh(["iptables-save"])
            ns.sh(["ip6tables-save"])
            runs.append((time.perf_counter() - t) * 1000)
        r["plan_cold_save"] = med(runs)
        return r
    finally:
        ns.close()


def fmt(ms):
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (it only touches namespaces it creates)")
    out = {"reps": REPS, "nftables": [], "iptables": []}
    with tempfile.TemporaryDirectory(prefix="mwscale") as tmp:
        for size in SIZES:
            out["nftables"].append(bench_nft(size, tmp))
            print(f"nftables: measured {size}", file=sys.stderr)
        for n in IPT_SIZES:
            out["iptables"].append(bench_ipt(n, tmp))
            print(f"iptables: measured {n}", file=sys.stderr)
    print("| allowlist | apply: mailward | nft -f | ratio | peak RSS | plan warm | plan cold | nft -j list ruleset "
          "| ratio (cold) | edit warm | edit cold | nft add element | removal warm | nft delete element |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in out["nftables"]:
        name = f"{int(r['size'].split('+')[0]):,} IPv4 hosts" + (f" + {V6_PREFIXES:,} IPv6 /64" if "+v6" in r["size"] else "")
        print(f"| {name} | {fmt(r['apply_mailward'])} | {fmt(r['apply_nft'])} | {r['apply_mailward'] / r['apply_nft']:.2f} "
              f"| {r['apply_rss_kb'] / 1024:.0f} MB | {fmt(r['plan_warm_mailward'])} | {fmt(r['plan_cold_mailward'])} "
              f"| {fmt(r['plan_cold_nft'])} | {r['plan_cold_mailward'] / r['plan_cold_nft']:.2f} "
              f"| {fmt(r['edit_warm_mailward'])} | {fmt(r['edit_cold_mailward'])} | {fmt(r['edit_nft'])} "
              f"| {fmt(r['edit_warm_remove_mailward'])} | {fmt(r['edit_remove_nft'])} |")
    classic = [r for r in out["nftables"] if "apply_nft_one_set" in r]
    if classic:
        print()
        print("| allowlist | nft -f, one set | mailward apply: ratio | nft -j list ruleset, one set "
              "| mailward plan cold: ratio |")
        print("|---|---:|---:|---:|---:|")
        for r in classic:
            name = f"{int(r['size'].split('+')[0]):,} IPv4 hosts" + (" + IPv6 /64" if "+v6" in r["size"] else "")
            print(f"| {name} | {fmt(r['apply_nft_one_set'])} | {r['apply_mailward'] / r['apply_nft_one_set']:.2f} "
                  f"| {fmt(r['plan_cold_nft_one_set'])} | {r['plan_cold_mailward'] / r['plan_cold_nft_one_set']:.3f} |")
    if out["iptables"]:
        print()
        print("| allowlist | iptables backend: apply | ipset restore + iptables-restore | ratio | peak RSS "
              "| plan (reads everything) | ipset save + iptables-save | ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in out["iptables"]:
            print(f"| {r['addresses']:,} IPv4 hosts | {fmt(r['apply_mailward'])} | {fmt(r['apply_restore'])} "
                  f"| {r['apply_mailward'] / r['apply_restore']:.2f} | {r['apply_rss_kb'] / 1024:.0f} MB "
                  f"| {fmt(r['plan_cold_mailward'])} | {fmt(r['plan_cold_save'])} "
                  f"| {r['plan_cold_mailward'] / r['plan_cold_save']:.2f} |")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "scale.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
