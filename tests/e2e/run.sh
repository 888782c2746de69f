#!/usr/bin/env bash
# End-to-end: from source patches to a loaded livepatch, under QEMU.
#
#   tests/e2e/run.sh x86_64        exit 0 only when the patched behaviour was seen in the guest
#   tests/e2e/run.sh x86_64-ibt    the same on a kernel with CONFIG_X86_KERNEL_IBT (objtool at link time)
#   tests/e2e/run.sh x86_64-clang  the same on a kernel built with clang (LLVM=1)
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
# checks that the patch-author callbacks ran in order, two written with kpatch's
# macros and two with upstream's, the unpatch ones when the guest disables the
# livepatch at the end; uname(2) (upstream's KLP_SYSCALL_DEFINE1); sysinfo(2) (the fix changes
# __do_sys_sysinfo, which has no ftrace site:
# it is patched through its callers), /proc/cmdline, /proc/meminfo, /proc/self/status (its function calls
# functions of its own file: on ppc64le those travel as helper copies), read(2)
# through the patched vfs_read (x86_64, ppc64le) and
# /sys/kernel/livepatch/livepatch_e2e/{enabled,transition}. On x86_64
# the module must carry ORC unwind data for every function (orc_check.py).
# Needs root for apt-get on a fresh machine (linux-source-6.12, the QEMU system emulator, the cross
# and the kernel build dependencies).
set -euo pipefail
arch=${1:-x86_64}
here=$(cd "$(dirname "$0")" && pwd)
case "$arch" in
    x86_64|x86_64-ibt|x86_64-clang)
        edits="cmdline static-local static-function local-call syscall-body klp-syscall callbacks user-access"
        expect_rewrite=yes  # access_ok's runtime_const_ptr(USER_PTR_MAX) in vfs_read, rewritten by klpdiff
        ;;
    s390x)
        # Not local-call: its copied proc_pid_status reads vmlinux data with larl/lgrl from the module area,
        # just over 2 GiB away, and Debian 12's QEMU 7.2 wraps relative-long offsets beyond 2 GiB (the
        # architecture allows +-4 GiB; the kernel and binutils encode them right): tests/e2e/qemu_s390x_lgrl.sh.
        # Not user-access: s390x's access_ok() accepts every address (user space is its own address space).
        edits="cmdline static-local static-function syscall-body klp-syscall callbacks"
        expect_rewrite=""
        ;;
    ppc64le)
        # The kernel is built as Debian builds it, without kpatch's ppc64le GCC plugin: calls to functions
        # of the same file are bare `bl`s with no TOC-restore nop. klpdiff copies those callees along as
        # helpers (rules/ppc64le/relocations.yaml local_calls); the build must say it did.
        edits="cmdline static-local static-function local-call syscall-body klp-syscall callbacks user-access"
        expect_rewrite=""
        expect_helpers=yes
        ;;
esac
source "$here/kernel.sh" "$arch"

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
# determinism: the same patches under other names, from another folder, give a byte-identical module
mkdir -p "$work/elsewhere/patches"
again=()
for n in "${!patches[@]}"; do cp "${patches[$n]}" "$work/elsewhere/patches/fix$n.diff"; again+=("$work/elsewhere/patches/fix$n.diff"); done
(cd "$work/elsewhere" && "$klpdiff" build --kdir "$ksrc" "${again[@]}" --name e2e -q -o "$work/elsewhere/again.ko")
cmp -s "$work/livepatch-e2e.ko" "$work/elsewhere/again.ko" \
    || { log "FAIL: the same patches under other names gave another module"; echo "e2e: 0 passed, 1 failed"; exit 1; }
log "the same patches under other names, from another folder, give a byte-identical module"
if [ "$karch" = x86_64 ]; then  # reliable stacks through the new code: ORC data for every function
    "$root/.venv/bin/python" "$here/orc_check.py" "$work/livepatch-e2e.ko" >&2 \
        || { log "FAIL: the module lacks ORC unwind data"; echo "e2e: 0 passed, 1 failed"; exit 1; }
fi
# the sysinfo fix changes only __do_sys_sysinfo, a static inline (so notrace) body GCC keeps out of line: it
# must have been patched through its callers. clang inlines it into its traceable wrapper, which then
# changes itself (the guest checks the behaviour either way).
through=$(python3 -c 'import json, sys; print(" ".join(f"{f}->{c}" for o in json.load(open(sys.argv[1]))["objects"]
                                              for f, cs in o["through_callers"].items() for c in cs))' "$work/build.json")
changed=$(python3 -c 'import json, sys; print(" ".join(f for o in json.load(open(sys.argv[1]))["objects"]
                                              for f in o["changed_functions"]))' "$work/build.json")
[[ $through == *__do_sys_sysinfo* ]] || { [ -n "$llvm" ] && [[ " $changed " == *" __x64_sys_sysinfo "* ]]; } \
    || { log "FAIL: __do_sys_sysinfo was not patched through its callers"; echo "e2e: 0 passed, 1 failed"; exit 1; }
log "patched through callers: $through"
if [ -n "${expect_helpers:-}" ]; then  # the diff must really have carried local callees as helpers
    helpers=$(python3 -c 'import json, sys; print(" ".join(h for o in json.load(open(sys.argv[1]))["objects"]
                                                   for h in o["helpers"]))' "$work/build.json")
    [ -n "$helpers" ] || { log "FAIL: klpdiff copied no helper"; echo "e2e: 0 passed, 1 failed"; exit 1; }
    log "local callees copied as helpers: $helpers"
fi
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
grep -a "KLPDIFF-E2E\|klpdiff-e2e:\|livepatch" "$serial" >&2 || true
if grep -aq "KLPDIFF-E2E: enabled=1 transition=0" "$serial" \
        && grep -aq "KLPDIFF-E2E: cmdline=.*klpdiff-e2e-patched" "$serial" \
        && { [[ $edits != *static-function* ]] || grep -aq "KLPDIFF-E2E: meminfo=KlpdiffE2E: " "$serial"; } \
        && { [[ $edits != *local-call* ]] || grep -aq "KLPDIFF-E2E: status=KlpdiffE2E:.local-calls" "$serial"; } \
        && { [[ $edits != *syscall-body* ]] || grep -aq "KLPDIFF-E2E: sysinfo-procs=4242" "$serial"; } \
        && { [[ $edits != *klp-syscall* ]] || grep -aq "KLPDIFF-E2E: domainname=klpdiff-klp-syscall" "$serial"; } \
        && grep -aq "KLPDIFF-E2E: after-disable removed" "$serial" \
        && [ "$(grep -ao 'klpdiff-e2e: [a-z_]* callback ([a-z]* macros)' "$serial" | cut -d' ' -f2,4 | tr '\n' ' ')" \
             = "pre_patch (kpatch post_patch (klp pre_unpatch (klp post_unpatch (kpatch " ] \
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
