#!/usr/bin/env bash
# Install klpdiff into ./.venv and run it on the example pair that ships with
# the tests (tests/examples/cmdline.c, compiled twice, the second time with
# -DPATCHED, with the kernel's code-generation flags). Needs python3 and gcc
# for x86_64 (the host gcc on an x86_64 machine, else x86_64-linux-gnu-gcc).
set -euo pipefail
cd "$(dirname "$0")"

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip >/dev/null
# (setuptools warns that an editable install's folder names could shadow the package: ours cannot)
PYTHONWARNINGS=ignore .venv/bin/pip install --quiet -e .
# byte-compile klpdiff once, as pip does for a regular install (where PYTHONDONTWRITEBYTECODE is set, every
# run would otherwise compile the engine's modules again: a third of a small diff's time)
.venv/bin/python -m compileall -q engine

cc=""
if [ "$(uname -m)" = x86_64 ] && command -v gcc >/dev/null; then cc=gcc; fi
if [ -z "$cc" ] && command -v x86_64-linux-gnu-gcc >/dev/null; then cc=x86_64-linux-gnu-gcc; fi
if [ -z "$cc" ]; then
    echo "install.sh: klpdiff is installed (.venv/bin/klpdiff), but no x86_64 gcc was found to build the" \
         "example (apt-get install gcc-x86-64-linux-gnu)" >&2
    exit 1
fi

mkdir -p out
flags=(-O2 -fno-pie -mcmodel=kernel -mno-red-zone -pg -mfentry -mrecord-mcount
       -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -c)
"$cc" "${flags[@]}" tests/examples/cmdline.c -o out/cmdline.ORIG.o
"$cc" "${flags[@]}" -DPATCHED tests/examples/cmdline.c -o out/cmdline.PATCHED.o
.venv/bin/klpdiff out/cmdline.ORIG.o out/cmdline.PATCHED.o -o out/cmdline.DIFF.o --json out/cmdline.json
echo "klpdiff: $(pwd)/.venv/bin/klpdiff   example output: out/cmdline.DIFF.o, report: out/cmdline.json"
