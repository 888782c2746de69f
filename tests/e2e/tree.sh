#!/usr/bin/env bash
# Print the path of the e2e kernel tree of ARCH (default x86_64), configured and built, building it
# first when it is not cached (tests/e2e/kernel.sh; installs what it needs when run as root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/kernel.sh" "${1:-x86_64}" >&2
echo "$ksrc"
