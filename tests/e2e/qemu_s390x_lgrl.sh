#!/usr/bin/env bash
# Does this QEMU execute s390x relative-long loads with offsets beyond 2 GiB correctly?
#
#   tests/e2e/qemu_s390x_lgrl.sh     prints one line; exit 0 when QEMU gets it right, 1 when it does not
#
# z/Architecture's relative-long instructions (lgrl, larl, brasl, ...) take a signed 32-bit count of
# halfwords: +-4 GiB. Livepatch code on s390x reaches vmlinux data from the module area, which can be just
# over 2 GiB away. Debian 12's QEMU 7.2 TCG wraps such an offset and faults; the kernel, binutils and real
# machines do not. This builds a static program whose lgrl reads data 2.25 GiB away (and a control at
# 1.75 GiB) and runs both with qemu-s390x-static (needs gcc-s390x-linux-gnu and qemu-user-static).
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/far.c" <<'SRC'
long far_value __attribute__((section(".far"))) = 0x1234;
int main(void)
{
	long v;
	asm volatile("lgrl %0,far_value" : "=d"(v));
	return v != 0x1234;
}
SRC
run() {  # $1: where the data goes
    s390x-linux-gnu-gcc -O2 -static -o "$work/far" "$work/far.c" -Wl,--section-start=.far="$1"
    (qemu-s390x-static "$work/far") >/dev/null 2>&1
}
run 0x71000000 || { echo "qemu-s390x: even a 1.75 GiB lgrl offset fails (the check itself is broken)"; exit 2; }
if run 0x91000000; then
    echo "qemu-s390x: lgrl with a 2.25 GiB offset reads the right data"
    exit 0
fi
echo "qemu-s390x $(qemu-s390x-static --version | head -1 | awk '{print $3}'): lgrl with a 2.25 GiB offset faults (TCG wraps offsets beyond 2 GiB)"
exit 1
