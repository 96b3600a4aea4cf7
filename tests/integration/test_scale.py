"""Large allowlists: 100,000 addresses (and 1,000,000 with MAILWARD_SCALE_1M=1) apply, plan in
sync (from the kernel and from mailward's own record), pass real connections, and a one-address
edit applies as a one-element change; 50,000 IPv6 prefixes apply, roll back and revert."""
import ipaddress
import json
import os
import random
import struct
import time
import unittest

from mwtest import HOST_V4, PLAIN_V4, MailwardCase, Sandbox, Topology, run

N = 100_000


def addresses(n, seed):
    rnd = random.Random(seed)
    seen = set()
    while len(seen) < n:
        seen.add(f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}")
    return sorted(seen)


def host_shards(topo, base):
    """{set name: set of addresses} of every shard of mailward's host set `base` (or of the set
    itself when it is not sharded), read with nft."""
    out = json.loads(topo.in_host(["nft", "-j", "list", "table", "inet", "mailward"]).stdout)
    res = {}
    for obj in out["nftables"]:
        s = obj.get("set")
        if s and (s["name"] == base or s["name"].startswith(base + "_s")):
            res[s["name"]] = {e for e in s.get("elem", [])}
    return res


def route_sources(topo, addrs):
    """Gives the client namespace the source addresses `addrs` (IPv4) and the host a route back."""
    dev_c = topo.client.replace("mwc", "vc")
    dev_h = topo.host.replace("mwh", "vh")
    for a in addrs:
        run(["ip", "-n", topo.client, "addr", "add", f"{a}/32", "dev", dev_c])
    for net in sorted({str(ipaddress.ip_network(f"{a}/8", strict=False)) for a in addrs}):
        run(["ip", "-n", topo.host, "route", "add", net, "dev", dev_h], check=False)


class Scale(MailwardCase):
    """N addresses: every one in the kernel, across the shards (doc/sharding.md); in sync on a
    second apply and on a cold read; real connections from listed addresses of every shard pass
    and from unlisted ones do not; one-address edits are one-element changes; a hand edit of a
    shard is seen after someone else commits."""

    def check_big_list(self, n, seed):
        topo = Topology()
        self.addCleanup(topo.close)
        topo.serve([143])
        addrs = addresses(n, seed)
        self.write("big.txt", "\n".join(addrs) + "\n")
        policy = self.write("policy.yaml", "version: 1\nallowlists:\n  big: {file: big.txt}\n"
                            "ports:\n  imap: {state: closed, allow: [big]}\n")
        started = time.monotonic()
        rc, j = self.mw_json(topo.in_host, "apply", policy=policy)
        apply_s = time.monotonic() - started
        self.assertEqual(rc, 0, j)
        # Shown as one change of the set the policy names, however many shards hold it.
        added = [c for c in j["changes"] if c["object"] == "elements"]
        self.assertEqual([(c["op"], c["name"], c["count"]) for c in added], [("add", "allow_big_hosts_v4", n)])
        shards = host_shards(topo, "allow_big_hosts_v4")
        self.assertGreater(len(shards), 1)
        self.assertNotIn("allow_big_hosts_v4", shards)  # only shards
        held = set()
        for name, elems in shards.items():
            self.assertFalse(held & elems, f"{name} repeats addresses of another shard")
            held |= elems
        self.assertEqual(held, set(addrs))

        # Real connections: one listed address of every shard passes, unlisted ones do not.
        rnd = random.Random(seed)
        listed = [rnd.choice(sorted(elems)) for _, elems in sorted(shards.items())]
        unlisted = []
        while len(unlisted) < 2:
            a = f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
            if a not in held and a not in unlisted:
                unlisted.append(a)
        route_sources(topo, listed + unlisted)
        for a in listed:
            self.assertEqual(topo.connect(HOST_V4, 143, a), "open", a)
        for a in unlisted:
            self.assertEqual(topo.connect(HOST_V4, 143, a), "filtered", a)
        self.assertEqual(topo.connect(HOST_V4, 143, PLAIN_V4), "filtered")

        # A second apply changes nothing (from mailward's record); a cold read agrees.
        rc, j = self.mw_json(topo.in_host, "apply", policy=policy)
        self.assertEqual((rc, j["applied"], j["changes"]), (0, False, []), j)
        os.unlink(os.path.join(self.state, "nft-elements.cache"))
        rc, j = self.mw_json(topo.in_host, "plan", policy=policy)
        self.assertEqual((rc, j["in_sync"]), (0, True))

        # One new address that neighbours nothing: exactly one element added, and back.
        new = "192.0.2.77"
        self.write("big.txt", "\n".join(addrs + [new]) + "\n")
        rc, j = self.mw_json(topo.in_host, "apply", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(j["changes"], [{"op": "add", "object": "elements", "name": "allow_big_hosts_v4",
                                         "detail": "1 entry", "count": 1, "items": [new],
                                         "items_truncated": False}])
        self.write("big.txt", "\n".join(addrs) + "\n")
        rc, j = self.mw_json(topo.in_host, "apply", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual([(c["op"], c["count"], c["items"]) for c in j["changes"]], [("delete", 1, [new])])

        # By hand, in one shard: a listed address swapped for an unlisted one (the count stays),
        # then someone else commits elsewhere. The plan sees both halves of the swap.
        victim_set, victim = sorted(shards.items())[0][0], listed[0]
        intruder = "203.0.113.9"
        topo.in_host(["nft", "delete", "element", "inet", "mailward", victim_set, "{", victim, "}"])
        topo.in_host(["nft", "add", "element", "inet", "mailward", victim_set, "{", intruder, "}"])
        topo.in_host(["nft", "add", "table", "ip", "somebody_else"])
        self.assertEqual(topo.connect(HOST_V4, 143, victim), "filtered")
        rc, j = self.mw_json(topo.in_host, "plan", policy=policy)
        self.assertEqual(rc, 2, j)
        self.assertEqual(sorted((c["op"], c["name"], c["items"][0]) for c in j["changes"]),
                         [("add", "allow_big_hosts_v4", victim), ("delete", "allow_big_hosts_v4", intruder)])
        rc, j = self.mw_json(topo.in_host, "apply", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(topo.connect(HOST_V4, 143, victim), "open")
        # Rollback restores every shard as it was before that apply (the swap included).
        self.assertEqual(self.mw(topo.in_host, "rollback").returncode, 0)
        after = host_shards(topo, "allow_big_hosts_v4")
        self.assertEqual(set().union(*after.values()), (held - {victim}) | {intruder})
        self.assertIn(intruder, after[victim_set])
        self.assertEqual(topo.connect(HOST_V4, 143, victim), "filtered")
        return apply_s

    def test_a_list_crossing_the_shard_threshold_is_resharded_in_one_batch(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        addrs = addresses(32_769, 3)
        policy = self.write("policy.yaml", "version: 1\nallowlists:\n  big: {file: big.txt}\n"
                            "ports:\n  imap: {state: closed, allow: [big]}\n")
        self.write("big.txt", "\n".join(addrs[:-1]) + "\n")  # 32,768: one set
        self.assertEqual(self.mw_json(ns.run, "apply", policy=policy)[0], 0)

        def sets():
            out = json.loads(ns.run(["nft", "-j", "list", "table", "inet", "mailward"]).stdout)
            return {o["set"]["name"]: set(o["set"].get("elem", [])) for o in out["nftables"] if "set" in o}

        self.assertEqual(sets(), {"allow_big_hosts_v4": set(addrs[:-1])})
        self.write("big.txt", "\n".join(addrs) + "\n")  # one more: two shards
        rc, j = self.mw_json(ns.run, "apply", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual([(c["op"], c["count"]) for c in j["changes"] if c["object"] == "elements"], [("add", 32_769)])
        now = sets()
        self.assertEqual(sorted(now), ["allow_big_hosts_v4_s0", "allow_big_hosts_v4_s1"])
        self.assertEqual(now["allow_big_hosts_v4_s0"] | now["allow_big_hosts_v4_s1"], set(addrs))
        rc, j = self.mw_json(ns.run, "plan", policy=policy)
        self.assertEqual((rc, j["in_sync"]), (0, True))
        # Rollback puts the one set back.
        self.assertEqual(self.mw(ns.run, "rollback").returncode, 0)
        self.assertEqual(sets(), {"allow_big_hosts_v4": set(addrs[:-1])})

    def test_hundred_thousand_addresses(self):
        self.check_big_list(N, 1)

    @unittest.skipUnless(os.environ.get("MAILWARD_SCALE_1M"), "set MAILWARD_SCALE_1M=1 (about a minute)")
    def test_a_million_addresses(self):
        self.check_big_list(1_000_000, 5)


def v6_prefixes(n, seed):
    """n separate IPv6 /64 prefixes in 2001:db8::/32 (no two adjacent, so none merge)."""
    rnd = random.Random(seed)
    seen = set()
    while len(seen) < n:
        seen.add(rnd.randrange(0, 1 << 32) & ~1)  # even /64 numbers: never neighbours
    return [str(ipaddress.ip_network(f"2001:db8:{x >> 16:x}:{x & 0xffff:x}::/64")) for x in sorted(seen)]


def set_elements(ns, name):
    """The elements of inet mailward's set `name` as nft prints them (prefixes and addresses)."""
    out = json.loads(ns.run(["nft", "-j", "list", "set", "inet", "mailward", name]).stdout)
    for obj in out["nftables"]:
        if "set" in obj:
            res = set()
            for e in obj["set"].get("elem", []):
                if isinstance(e, dict) and "prefix" in e:
                    res.add(f"{e['prefix']['addr']}/{e['prefix']['len']}")
                else:
                    res.add(e)
            return res
    raise AssertionError(f"no set {name}")


class ManyIpv6Prefixes(MailwardCase):
    """More than 1,024 separate IPv6 prefixes once overflowed the 16-bit length of the element
    list attribute: apply, rollback and the confirm revert all failed."""

    N6 = 50_000

    def test_fifty_thousand_ipv6_prefixes(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        nets = v6_prefixes(self.N6, 2)
        hosts = [f"192.0.2.{i}" for i in range(1, 40)]
        self.write("big.txt", "\n".join(nets + hosts) + "\n")
        policy = self.write("policy.yaml", "version: 1\nallowlists:\n  big: {file: big.txt}\n"
                            "ports:\n  imap: {state: closed, allow: [big]}\n")
        rc, j = self.mw_json(ns.run, "apply", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(set_elements(ns, "allow_big_nets_v6"), set(nets))
        self.assertEqual(set_elements(ns, "allow_big_hosts_v4"), set(hosts))
        # A second apply changes nothing, from mailward's record and from the kernel.
        rc, j = self.mw_json(ns.run, "apply", policy=policy)
        self.assertEqual((rc, j["applied"], j["changes"]), (0, False, []))
        os.unlink(os.path.join(self.state, "nft-elements.cache"))
        rc, j = self.mw_json(ns.run, "plan", policy=policy)
        self.assertEqual((rc, j["in_sync"]), (0, True))

        # Half the prefixes go: thousands of deletions in one batch; then rollback brings them back.
        self.write("big.txt", "\n".join(nets[::2] + hosts) + "\n")
        rc, j = self.mw_json(ns.run, "apply", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(set_elements(ns, "allow_big_nets_v6"), set(nets[::2]))
        self.assertEqual(self.mw(ns.run, "rollback").returncode, 0)
        self.assertEqual(set_elements(ns, "allow_big_nets_v6"), set(nets))
        self.write("big.txt", "\n".join(nets + hosts) + "\n")
        rc, j = self.mw_json(ns.run, "plan", policy=policy)
        self.assertEqual((rc, j["in_sync"]), (0, True), j)
        # Rolling back the first apply (from nothing) removes the table, 100,000 elements with it.
        self.assertEqual(self.mw(ns.run, "rollback").returncode, 0)
        self.assertNotIn("mailward", ns.run(["nft", "list", "tables"]).stdout)

        # An unconfirmed apply that drops half of them is reverted by the watchdog: all are back.
        self.assertEqual(self.mw_json(ns.run, "apply", policy=policy)[0], 0)
        self.write("big.txt", "\n".join(nets[::2] + hosts) + "\n")
        rc, j = self.mw_json(ns.run, "apply", "--confirm", "2", policy=policy)
        self.assertEqual((rc, j["confirm"]["pending"]), (0, True), j)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and set_elements(ns, "allow_big_nets_v6") != set(nets):
            time.sleep(0.2)
        self.assertEqual(set_elements(ns, "allow_big_nets_v6"), set(nets), "not reverted")
        with open(os.path.join(self.state, "confirm.log")) as log:
            self.assertIn("not confirmed in time: reverted", log.read())


    def test_a_refused_large_message_is_reported_not_timed_out(self):
        """mailward's record of its sets says they hold addresses the kernel does not have (a
        stale record): the batch deletes them and the kernel refuses a ~64 KB element message.
        Its error must be read (not cut off, leaving apply waiting 10 s for it), reported, and
        the stale record dropped so the next apply reads the kernel and succeeds."""
        ns = Sandbox()
        self.addCleanup(ns.close)
        nets = v6_prefixes(3000, 3)
        self.write("big.txt", "\n".join(nets) + "\n")
        policy = self.write("policy.yaml", "version: 1\nallowlists:\n  big: {file: big.txt}\n"
                            "ports:\n  imap: {state: closed, allow: [big]}\n")
        self.assertEqual(self.mw_json(ns.run, "apply", policy=policy)[0], 0)
        cache = os.path.join(self.state, "nft-elements.cache")
        with open(cache, "rb") as f:
            data = f.read()
        # "MWEC3\n" identity "\n", u32 generation, u64 table handle, then the sets: keep the
        # header, claim one set of 1,023 IPv6 hosts that were never added: one delete message of 64 KB
        # (2,046 elements), whose echo in the error does not fit 64 KB.
        head = data[:data.index(b"\n", 6) + 1 + 12]
        name = b"allow_big_nets_v6"
        fake = [ipaddress.ip_address(f"2001:db8:ffff:{i:x}::1").packed for i in range(1023)]
        body = struct.pack("<I", 1) + struct.pack("<I", len(name)) + name + bytes([6, 1]) + \
            struct.pack("<I", len(fake)) + b"".join(fake)
        with open(cache, "wb") as f:
            f.write(head + body)
        rc, j = self.mw_json(ns.run, "plan", policy=policy)
        self.assertEqual(rc, 2, j)  # the record is believed: 1,023 deletions planned
        started = time.monotonic()
        rc, j = self.mw_json(ns.run, "apply", policy=policy)
        self.assertLess(time.monotonic() - started, 8)
        self.assertEqual(rc, 1, j)
        self.assertEqual(j["error"]["kind"], "netlink")
        self.assertIn("refused", j["error"]["message"])
        self.assertIn("delete elements of set allow_big_nets_v6", j["error"]["message"])
        self.assertEqual(set_elements(ns, "allow_big_nets_v6"), set(nets))  # nothing applied
        # The stale record is gone: the kernel is read again and all is in sync.
        self.assertFalse(os.path.exists(cache))
        rc, j = self.mw_json(ns.run, "apply", policy=policy)
        self.assertEqual((rc, j["applied"]), (0, False), j)


if __name__ == "__main__":
    unittest.main()
