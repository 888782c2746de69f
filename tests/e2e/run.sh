#!/usr/bin/env bash
# End-to-end: from source patches to a loaded livepatch, under QEMU.
#
#   tests/e2e/run.sh x86_64        exit 0 only when the patched behaviour was seen in the guest
#   tests/e2e/run.sh s390x         the same with the Debian s390x cross compiler and qemu-system-s390x
#   tests/e2e/run.sh ppc64le       the same with the ppc64le cross compiler and qemu-system-ppc64 (pseries)
#
# Builds (once, cached in ${KLPDIFF_E2E_CACHE:-~/.cache/klpdiff-e2e}) a small
# livepatch-capable kernel from Debian's linux-source-6.12: tinyconfig plus
# modules, livepatch and its ftrace needs, a serial console and initramfs
# support, at -O2. The kernel is built the normal way, without
# -ffunction-sections. `klpdiff build` then turns the fixes in patches/*.patch
# into livepatch-e2e.ko: it recompiles only the affected objects, before and
# after, in private shadows of the tree. The script checks that the tree is
# byte-identical afterwards, also after a build interrupted with SIGINT. It
# boots the kernel with a one-program initramfs (init.c), loads the module and
# checks /proc/cmdline, /proc/meminfo, read(2) through the patched vfs_read
# (x86_64) and /sys/kernel/livepatch/livepatch_e2e/{enabled,transition}.
# Needs root for apt-get on a fresh machine (linux-source-6.12, the QEMU system emulator, the cross
# and the kernel build dependencies).
set -euo pipefail
arch=${1:-x86_64}
case "$arch" in
    x86_64)
        karch=x86_64; cross=""; image=arch/x86/boot/bzImage; target=bzImage; qemu_pkg=qemu-system-x86
        qemu=(qemu-system-x86_64 -m 256)
        console="console=ttyS0 earlyprintk=serial,ttyS0,115200"
        arch_options="SERIAL_8250 SERIAL_8250_CONSOLE EARLY_PRINTK UNWINDER_ORC"
        edits="cmdline static-local static-function user-access"
        disable="UNWINDER_GUESS UNWINDER_FRAME_POINTER"  # ORC: the reliable stacks the consistency model needs
        expect_rewrite=yes  # access_ok's runtime_const_ptr(USER_PTR_MAX) in vfs_read, rewritten by klpdiff
        ;;
    s390x)
        karch=s390; cross=s390x-linux-gnu-; image=arch/s390/boot/bzImage; target=bzImage; qemu_pkg=qemu-system-misc
        qemu=(qemu-system-s390x -M s390-ccw-virtio -m 512)
        console="console=ttysclp0"
        arch_options="SCLP_TTY SCLP_CONSOLE SCLP_VT220_TTY SCLP_VT220_CONSOLE"
        edits="cmdline static-local static-function"
        disable=""
        expect_rewrite=""
        ;;
    ppc64le)
        karch=powerpc; cross=powerpc64le-linux-gnu-; image=vmlinux; target=vmlinux; qemu_pkg=qemu-system-ppc
        qemu=(qemu-system-ppc64 -M pseries -m 1024)
        console="console=hvc0"
        arch_options="PPC64 PPC_BOOK3S_64 CPU_LITTLE_ENDIAN PPC_PSERIES HVC_CONSOLE PPC_OF_BOOT_TRAMPOLINE
                      PPC_FPU ALTIVEC VSX"  # the guest init is glibc-static: it uses VSX
        disable="CPU_BIG_ENDIAN"
        # The kernel is built without kpatch's ppc64le GCC plugin, so calls to statics of the same file
        # are bare `bl`s with no TOC-restore nop: klpdiff refuses to move those (rules/ppc64le/refusals.yaml).
        # Only the fix whose calls all leave the file is livepatched here (patches/cmdline.patch).
        edits="cmdline"
        expect_rewrite=""
        ;;
    *)
        echo "e2e: no end-to-end recipe for $arch (x86_64, s390x and ppc64le have one)" >&2
        exit 2
        ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${KLPDIFF_E2E_CACHE:-$HOME/.cache/klpdiff-e2e}/$arch
klpdiff=${KLPDIFF:-$root/.venv/bin/klpdiff}
jobs=$(nproc)
log() { echo "e2e: $*" >&2; }

packages=(linux-source-6.12 "$qemu_pkg" flex bison bc libelf-dev libssl-dev cpio kmod
          xz-utils gcc make patch)
[ -z "$cross" ] || packages+=("gcc-${cross%-}" "binutils-${cross%-}")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { log "missing packages: ${missing[*]} (run as root to install them)"; exit 1; }
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x "$klpdiff" ]; then  # a fresh checkout: install klpdiff into the checkout's .venv
    log "installing klpdiff into $root/.venv"
    python3 -m venv "$root/.venv"
    "$root/.venv/bin/pip" install --quiet -e "$root"
    klpdiff=$root/.venv/bin/klpdiff
fi

mkdir -p "$cache"
ksrc=$cache/linux-source-6.12
if [ ! -f "$ksrc/Makefile" ]; then
    log "unpacking linux-source-6.12"
    tar xf /usr/src/linux-source-6.12.tar.xz -C "$cache"
fi
export CROSS_COMPILE=$cross
kmake() { make -C "$ksrc" ARCH="$karch" -j"$jobs" "$@"; }
config_stamp=$cache/config.stamp
# -O2 as distribution kernels are built (tinyconfig's -Os keeps small inlines such as __access_ok out
# of line, which would hide the runtime constants the user-access fix exercises)
options="64BIT MODULES MODULE_UNLOAD PRINTK TTY BINFMT_ELF BINFMT_SCRIPT BLK_DEV_INITRD RD_GZIP PROC_FS
         SYSFS DEVTMPFS FTRACE FUNCTION_TRACER DYNAMIC_FTRACE KALLSYMS KALLSYMS_ALL LIVEPATCH MULTIUSER
         STACKTRACE CC_OPTIMIZE_FOR_PERFORMANCE $arch_options"
disable="$disable CC_OPTIMIZE_FOR_SIZE"
if [ ! -f "$ksrc/.config" ] || [ "$(cat "$config_stamp" 2>/dev/null)" != "$options" ]; then
    log "configuring (tinyconfig + livepatch)"
    kmake tinyconfig >/dev/null
    (cd "$ksrc" && for o in $disable; do scripts/config -d "$o"; done && for o in $options; do scripts/config -e "$o"; done)
    kmake olddefconfig >/dev/null
    for o in LIVEPATCH HAVE_RELIABLE_STACKTRACE; do
        grep -q "^CONFIG_$o=y" "$ksrc/.config" || { log "CONFIG_$o did not survive olddefconfig"; exit 1; }
    done
    echo "$options" > "$config_stamp"
fi
log "building the kernel (cached after the first run)"
kmake "$target" modules >"$cache/kbuild.log" 2>&1 || { tail -20 "$cache/kbuild.log"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
patches=()
for e in $edits; do patches+=("$here/patches/$e.patch"); done

# klpdiff build must leave the tree exactly as it was: also when it is interrupted mid-compile
fingerprint() { python3 "$here/tree_fingerprint.py" "$ksrc"; }
before=$(fingerprint)
log "interrupting a klpdiff build with SIGINT while it compiles"
# (a script's background job starts with SIGINT ignored; restore it as a terminal would have it)
python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
    "$klpdiff" build --kdir "$ksrc" "${patches[@]}" --name e2e -o "$work/interrupted.ko" 2>"$work/interrupted.log" &
pid=$!
for _ in $(seq 100); do grep -q "compile:" "$work/interrupted.log" 2>/dev/null && break; sleep 0.1; done
kill -INT "$pid" 2>/dev/null || true
rc=0; wait "$pid" || rc=$?
[ "$rc" = 130 ] || { log "FAIL: the interrupted build exited $rc, not 130"; cat "$work/interrupted.log" >&2
                     echo "e2e: 0 passed, 1 failed"; exit 1; }
log "the interrupted build stopped ($(tail -1 "$work/interrupted.log"), exit 130)"
[ ! -e "$work/interrupted.ko" ] || { log "FAIL: the interrupted build wrote a module"; echo "e2e: 0 passed, 1 failed"; exit 1; }
[ "$(fingerprint)" = "$before" ] || { log "FAIL: the interrupted build changed the tree"; echo "e2e: 0 passed, 1 failed"; exit 1; }

log "klpdiff build ${patches[*]##*/}"
"$klpdiff" build --kdir "$ksrc" "${patches[@]}" --name e2e -o "$work/livepatch-e2e.ko" --json "$work/build.json"
[ "$(fingerprint)" = "$before" ] || { log "FAIL: klpdiff build changed the tree"; echo "e2e: 0 passed, 1 failed"; exit 1; }
log "the kernel tree is byte-identical after both builds ($(echo "$before" | cut -d' ' -f2) entries)"
if [ -n "$expect_rewrite" ]; then  # the diff must really have rewritten a boot-time site
    grep -q '"rewritten_sites": \[$' "$work/build.json" \
        || { log "FAIL: klpdiff rewrote no runtime constant"; echo "e2e: 0 passed, 1 failed"; exit 1; }
fi

log "booting under ${qemu[0]}"
rootfs=$work/rootfs
mkdir -p "$rootfs"/{proc,sys,dev}
cp "$work/livepatch-e2e.ko" "$rootfs/"
# the guest's /init (tests/e2e/init.c), static, for the guest's arch
"${cross}gcc" -static -O2 -Wall "$here/init.c" -o "$rootfs/init"
(cd "$rootfs" && find . | cpio -o -H newc --quiet | gzip) > "$work/initramfs.gz"
serial=$work/serial.log
timeout 600 "${qemu[@]}" -kernel "$ksrc/$image" -initrd "$work/initramfs.gz" -append "$console panic=-1" \
    -nographic -no-reboot -monitor none > "$serial" 2>&1 < /dev/null || true
grep -a "KLPDIFF-E2E\|livepatch" "$serial" >&2 || true
if grep -aq "KLPDIFF-E2E: enabled=1 transition=0" "$serial" \
        && grep -aq "KLPDIFF-E2E: cmdline=.*klpdiff-e2e-patched" "$serial" \
        && { [[ $edits != *static-function* ]] || grep -aq "KLPDIFF-E2E: meminfo=KlpdiffE2E: " "$serial"; } \
        && { [[ $edits != *user-access* ]] \
             || grep -aq "KLPDIFF-E2E: useraccess=ENOTTY EFAULT EFAULT clean" "$serial"; }; then
    log "PASS: the livepatch is enabled and the patched code runs"
    echo "e2e: 1 passed, 0 failed"
    exit 0
fi
log "FAIL: see the serial log above"
tail -40 "$serial" >&2
echo "e2e: 0 passed, 1 failed"
exit 1
