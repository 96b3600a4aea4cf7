#!/usr/bin/env bash
# One command: installs what is missing, builds (release), and benchmarks mailward against the
# tools people use, each size in its own throwaway network namespace:
#   bench.py           nftables backend vs the nft command on identical rulesets
#   bench_backends.py  iptables backend vs iptables-restore, UFW backend vs ufw one rule at a time
#   bench_ansible.py   where an Ansible run over 8 sshd namespaces spends its time (README, Ansible)
#   bench_scale.py     large allowlists (10,000 to 1,000,000 addresses, IPv6 prefixes): apply, warm
#                      and cold plans, edits, peak memory, beside nft and ipset/iptables-restore
# `./bench/run.sh nftables`, `backends`, `ansible` or `scale` runs one of them.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./scripts/install-deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target mailward
export MAILWARD_BIN="$top/build-release/mailward"
which=${1:-all}
if [ "$which" = all ] || [ "$which" = nftables ]; then python3 bench/bench.py; fi
if [ "$which" = all ] || [ "$which" = backends ]; then python3 bench/bench_backends.py; fi
if [ "$which" = all ] || [ "$which" = ansible ]; then python3 bench/bench_ansible.py; fi
if [ "$which" = all ] || [ "$which" = scale ]; then python3 bench/bench_scale.py; fi
