#!/usr/bin/env bash
# Run klpdiff's checks: install what a fresh machine lacks (the Debian cross
# toolchains via apt-get, when run as root; the Python tools into ./.venv),
# then ruff, mypy and the whole pytest suite. Extra arguments go to pytest,
# e.g. `./test.sh -k s390x` runs one column of the arch matrix.
set -euo pipefail
cd "$(dirname "$0")"

packages=(gcc binutils binutils-x86-64-linux-gnu
          gcc-s390x-linux-gnu binutils-s390x-linux-gnu
          gcc-powerpc64le-linux-gnu binutils-powerpc64le-linux-gnu
          gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu
          gcc-riscv64-linux-gnu binutils-riscv64-linux-gnu)
# on an x86_64 host the plain gcc package provides x86_64-linux-gnu-gcc
if [ "$(uname -m)" != x86_64 ]; then packages+=(gcc-x86-64-linux-gnu); fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "test.sh: missing ${missing[*]}; their tests will be skipped (install them as root)" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install --quiet --upgrade pip >/dev/null
# (setuptools warns that an editable install's folder names could shadow the package: ours cannot)
PYTHONWARNINGS=ignore .venv/bin/pip install --quiet -e '.[dev]'

.venv/bin/ruff check engine tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
