#!/usr/bin/env python3
"""mailward vs the nft command on the same ruleset, in one run, inside a throwaway network
namespace per size. For each allowlist size: full apply (vs nft -f of the identical table),
plan = live read + diff (vs nft -j list ruleset), and a one-address edit (vs nft add element).
Prints a table with medians and ratios; writes bench/results/nftables.json."""
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from bench_scale import shard_set

HERE = os.path.dirname(os.path.abspath(__file__))
MAILWARD = os.environ.get("MAILWARD_BIN", os.path.join(HERE, "..", "build", "mailward"))
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "10,1000,10000,100000").split(",")]
REPS = int(os.environ.get("BENCH_REPS", "5"))


def sh(ns_pid, argv, check=True):
    p = subprocess.run(["nsenter", "-t", str(ns_pid), "-n"] + argv, capture_output=True, text=True)
    if check and p.returncode not in (0, 2):
        raise RuntimeError(f"{argv}: {p.returncode}\n{p.stderr}")
    return p


def timed(ns_pid, argv, setup=None):
    """Median wall time (ms) of REPS runs; `setup` runs untimed before each."""
    times = []
    for _ in range(REPS):
        if setup:
            setup()
        t = time.perf_counter()
        sh(ns_pid, argv)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def addresses(n, seed=7):
    rnd = random.Random(seed)
    out = set()
    while len(out) < n:
        out.add(f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}")
    return sorted(out)


def bench_size(n, tmp):
    ns = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
    time.sleep(0.05)
    pid = ns.pid
    try:
        state = os.path.join(tmp, f"state{n}")
        lst = os.path.join(tmp, f"list{n}.txt")
        lst_edit = os.path.join(tmp, f"list{n}-edit.txt")
        addrs = addresses(n)
        with open(lst, "w") as f:
            f.write("\n".join(addrs) + "\n")
        with open(lst_edit, "w") as f:
            f.write("\n".join(addrs + ["192.0.2.77"]) + "\n")
        pol, pol_edit = (os.path.join(tmp, f"p{n}{s}.yaml") for s in ("", "-edit"))
        for path, l in ((pol, lst), (pol_edit, lst_edit)):
            with open(path, "w") as f:
                f.write(f"version: 1\nallowlists:\n  big: {{file: {l}}}\nports:\n"
                        "  imap: {state: closed, allow: [big]}\n  imaps: {state: open}\n")
        mw = [MAILWARD, "--state-dir", state, "--policy", pol]
        mw_edit = [MAILWARD, "--state-dir", state, "--policy", pol_edit]

        def reset():
            sh(pid, ["nft", "flush", "ruleset"])
            subprocess.run(["rm", "-rf", state])

        # The equivalent ruleset for nft: exactly the table mailward makes.
        reset()
        sh(pid, mw + ["apply"])
        nft_file = os.path.join(tmp, f"t{n}.nft")
        with open(nft_file, "w") as f:
            f.write(sh(pid, ["nft", "list", "table", "inet", "mailward"]).stdout)

        r = {"addresses": n}
        r["apply_mailward"] = timed(pid, mw + ["apply"], setup=reset)
        r["apply_nft"] = timed(pid, ["nft", "-f", nft_file], setup=reset)

        reset()
        sh(pid, mw + ["apply"])
        cache = os.path.join(state, "nft-elements.cache")
        saved = open(cache, "rb").read()
        r["plan_mailward_cold"] = timed(pid, mw + ["plan"], setup=lambda: os.path.exists(cache) and os.unlink(cache))
        with open(cache, "wb") as f:
            f.write(saved)
        r["plan_mailward"] = timed(pid, mw + ["plan"])
        r["plan_nft"] = timed(pid, ["nft", "-j", "list", "ruleset"])

        # One-address edit: add it, then remove it again, alternately (untimed half).
        edit_times = []
        for _ in range(REPS):
            t = time.perf_counter()
            sh(pid, mw_edit + ["apply"])
            edit_times.append((time.perf_counter() - t) * 1000)
            sh(pid, mw + ["apply"])
        r["edit_mailward"] = statistics.median(edit_times)
        target = shard_set("allow_big_hosts_v4", n, "192.0.2.78")  # the shard the address belongs in
        r["edit_nft"] = timed(pid, ["nft", "add", "element", "inet", "mailward", target, "{", "192.0.2.78", "}"],
                              setup=lambda: sh(pid, ["nft", "delete", "element", "inet", "mailward", target,
                                                     "{", "192.0.2.78", "}"], check=False))
        return r
    finally:
        ns.kill()
        ns.wait()


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (it only touches namespaces it creates)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mwbench") as tmp:
        for n in SIZES:
            rows.append(bench_size(n, tmp))
            print(f"measured {n} addresses", file=sys.stderr)
    hdr = ("| addresses | apply: mailward | nft -f | ratio | plan cold: mailward | plan warm | nft -j list | ratio (cold) "
           "| 1-address edit: mailward | nft add element | ratio |")
    print(hdr)
    print("|" + "---|" * hdr.count("|")[:-0] if False else "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['addresses']:,} | {r['apply_mailward']:.0f} ms | {r['apply_nft']:.0f} ms | "
              f"{r['apply_mailward'] / r['apply_nft']:.2f} | {r['plan_mailward_cold']:.0f} ms | {r['plan_mailward']:.0f} ms | "
              f"{r['plan_nft']:.0f} ms | {r['plan_mailward_cold'] / r['plan_nft']:.2f} | {r['edit_mailward']:.1f} ms | "
              f"{r['edit_nft']:.0f} ms | {r['edit_mailward'] / r['edit_nft']:.3f} |")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "nftables.json"), "w") as f:
        json.dump({"reps": REPS, "median_ms": rows}, f, indent=2)


if __name__ == "__main__":
    main()
