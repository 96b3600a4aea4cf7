"""A 100,000-address allowlist: applies, plans as in sync (from the kernel and from mailward's
own record), and a one-address edit applies as a one-element change."""
import ipaddress
import json
import os
import random
import struct
import time
import unittest

from mwtest import MailwardCase, Sandbox

N = 100_000


def addresses(n, seed):
    rnd = random.Random(seed)
    seen = set()
    while len(seen) < n:
        seen.add(f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}")
    return sorted(seen)


class Scale(MailwardCase):
    def test_hundred_thousand_addresses(self):
        ns = Sandbox()
        self.addCleanup(ns.close)
        addrs = addresses(N, 1)
        self.write("big.txt", "\n".join(addrs) + "\n")
        policy = self.write("policy.yaml", "version: 1\nallowlists:\n  big: {file: big.txt}\n"
                            "ports:\n  imap: {state: closed, allow: [big]}\n")
        rc, j = self.mw_json(ns.run, "apply", policy=policy)
        self.assertEqual(rc, 0, j)
        added = [c for c in j["changes"] if c["object"] == "elements"]
        self.assertEqual(len(added), 1)
        self.assertEqual(added[0]["count"], N)
        self.assertEqual(added[0]["name"], "allow_big_hosts_v4")
        count = ns.run(["nft", "list", "set", "inet", "mailward", "allow_big_hosts_v4"]).stdout.count(",") + 1
        self.assertEqual(count, N)

        rc, j = self.mw_json(ns.run, "plan", policy=policy)
        self.assertEqual((rc, j["in_sync"]), (0, True))
        # Without mailward's record of its last write, the kernel's elements are read back.
        os.unlink(os.path.join(self.state, "nft-elements.cache"))
        rc, j = self.mw_json(ns.run, "plan", policy=policy)
        self.assertEqual((rc, j["in_sync"]), (0, True))

        # One new address that neighbours nothing: exactly one element added.
        new = "192.0.2.77"
        self.write("big.txt", "\n".join(addrs + [new]) + "\n")
        rc, j = self.mw_json(ns.run, "apply", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual(j["changes"], [{"op": "add", "object": "elements", "name": "allow_big_hosts_v4",
                                         "detail": "1 entry", "count": 1, "items": [new],
                                         "items_truncated": False}])
        # And removing it again: one element deleted.
        self.write("big.txt", "\n".join(addrs) + "\n")
        rc, j = self.mw_json(ns.run, "apply", policy=policy)
        self.assertEqual(rc, 0, j)
        self.assertEqual([(c["op"], c["count"], c["items"]) for c in j["changes"]], [("delete", 1, [new])])
        # Someone else edits the set by hand: the generation moved, so the kernel is read again.
        ns.run(["nft", "add", "element", "inet", "mailward", "allow_big_hosts_v4", "{", "203.0.113.9", "}"])
        rc, j = self.mw_json(ns.run, "plan", policy=policy)
        self.assertEqual(rc, 2)
        self.assertEqual([(c["op"], c["items"]) for c in j["changes"]], [("delete", ["203.0.113.9"])])


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
