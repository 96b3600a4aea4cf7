"""A 100,000-address allowlist: applies, plans as in sync (from the kernel and from mailward's
own record), and a one-address edit applies as a one-element change."""
import os
import random
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


if __name__ == "__main__":
    unittest.main()
