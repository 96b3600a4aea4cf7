# Shared by demo.sh and test.sh: install what is missing, then build.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
if [ "$(id -u)" != 0 ]; then
  echo "run as root: mailward needs CAP_NET_ADMIN (it only ever touches namespaces it creates here)" >&2
  exit 1
fi
"$top/scripts/install-deps.sh"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
