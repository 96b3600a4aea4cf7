#!/usr/bin/env bash
# Installs what is missing, builds, and runs mailward's main job (plan, apply, check) with
# policies/default.yaml on a throwaway network namespace: the host's own firewall is never touched.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ns=mailward-demo-$$
state=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null; rm -rf "$state"' EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
mw() { ip netns exec "$ns" build/mailward --policy policies/default.yaml --state-dir "$state" "$@"; }
set -x
build/mailward --policy policies/default.yaml validate
mw plan || true          # exit 2: changes pending
mw apply
mw plan                  # exit 0: in sync
mw check
ip netns exec "$ns" nft list table inet mailward
