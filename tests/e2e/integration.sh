#!/usr/bin/env bash
# kpatch's own integration-test patches, through `klpdiff build`, loaded and unloaded under QEMU.
#
#   tests/e2e/integration.sh x86_64|x86_64-ibt [PATCH_FOLDER]
#
# PATCH_FOLDER defaults to ../shared/corpus/kpatch-integration/linux-6.17.0 beside the checkout
# (kpatch's test/integration/linux-6.17.0: NAME.patch, NAME-LOADED.test). Without it the run is
# skipped with the reason. The patches were written for Linux 6.17; they apply to linux-source-6.12
# with --fuzz=3. For each patch:
# - a -FAIL patch must end without a module: exit 2 (refused, with the reason) or 3 (nothing to patch);
# - every other patch must give livepatch-NAME.ko.
# Then one boot of the e2e kernel (kernel.sh) with a busybox initramfs loads each module in turn:
# enabled must be 1 with the transition done, NAME-LOADED.test (where there is one) must pass, and
# the livepatch must unload cleanly: disabled, its transition done, rmmod succeeding.
# Patches whose files this small kernel does not build are listed in needs_larger_config, with the
# reason; the script checks that klpdiff build says so for each (README: where they are checked).
# KLPDIFF_IT_ONLY="name ..." runs only those patches; the guest's log is kept in the cache folder.
set -euo pipefail
arch=${1:-x86_64}
here=$(cd "$(dirname "$0")" && pwd)
corpus=${2:-$here/../../../shared/corpus/kpatch-integration/linux-6.17.0}
if [ ! -d "$corpus" ]; then
    echo "integration: skipped: no kpatch integration patches at $corpus (put shared/ beside the checkout)"
    exit 0
fi
corpus=$(cd "$corpus" && pwd)
source "$here/kernel.sh" "$arch"

# patch -> why the e2e kernel does not build what it changes
declare -A needs_larger_config=(
    [module]="fs/xfs (XFS as a module)"
    [warn-detect-FAIL]="arch/x86/kvm (KVM, an x86 file)"
)
if [[ $arch != x86_64* ]]; then  # the e2e kernels of other arches build no PC input drivers and no USB
    needs_larger_config[macro-callbacks]="drivers/input (joydev, pcspkr)"
    needs_larger_config[symvers-disagreement-FAIL]="drivers/usb (USB)"
fi

# the guest's busybox: Debian's static one, for the guest's arch (downloaded, not installed, when foreign)
guest_busybox() {
    local debarch
    case "$arch" in x86_64*) debarch=amd64 ;; s390x) debarch=s390x ;; ppc64le) debarch=ppc64el ;; esac
    if [ "$debarch" = "$(dpkg --print-architecture)" ]; then
        if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
            [ "$(id -u)" = 0 ] || { log "missing busybox-static (run as root to install it)"; exit 1; }
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
        fi
        echo /bin/busybox
        return
    fi
    if [ ! -x "$cache/busybox/bin/busybox" ]; then
        [ "$(id -u)" = 0 ] || { log "no $debarch busybox yet (run as root once to fetch it)"; exit 1; }
        if ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
            dpkg --add-architecture "$debarch"
            apt-get update -qq || true
        fi
        (cd "$cache" && rm -f busybox-static_*.deb && apt-get download -qq "busybox-static:$debarch" \
            && dpkg-deb -x busybox-static_*.deb busybox)
    fi
    echo "$cache/busybox/bin/busybox"
}
busybox=$(guest_busybox)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/lp" "$work/rootfs/tests" "$work/rootfs/bin" "$work/reports"
failed=0
passed=0
skipped=0
expected_modules=()
fail() { log "FAIL: $*"; failed=$((failed + 1)); }

for patch in "$corpus"/*.patch; do
    name=$(basename "$patch" .patch)
    if [ -n "${KLPDIFF_IT_ONLY:-}" ] && [[ " $KLPDIFF_IT_ONLY " != *" $name "* ]]; then
        unset "needs_larger_config[$name]"; continue  # not selected (KLPDIFF_IT_ONLY="name ...")
    fi
    rc=0
    "$klpdiff" build --kdir "$ksrc" "$patch" --fuzz 3 --name "$name" -q -o "$work/rootfs/lp/livepatch-$name.ko" \
        --json "$work/reports/$name.json" 2>"$work/reports/$name.err" || rc=$?
    why=$(head -c 400 "$work/reports/$name.err" | tr '\n' ' ')
    if [ -n "${needs_larger_config[$name]:-}" ]; then
        if [ "$rc" = 1 ] && grep -q "was never compiled by this build" "$work/reports/$name.err"; then
            log "$name: not built by the e2e kernel (${needs_larger_config[$name]}), as expected"
            skipped=$((skipped + 1))
        else
            fail "$name: expected 'never compiled' for ${needs_larger_config[$name]}, got exit $rc: $why"
        fi
    elif [[ $name == *-FAIL ]]; then
        case $rc in
            2) log "$name: refused, as a -FAIL patch must be: $(grep -o '"refused": \[[^]]*' "$work/reports/$name.json" | head -c 300)"
               passed=$((passed + 1)) ;;
            3) log "$name: nothing to patch, as a -FAIL patch must be"; passed=$((passed + 1)) ;;
            *) fail "$name: a -FAIL patch gave exit $rc: $why" ;;
        esac
        [ ! -e "$work/rootfs/lp/livepatch-$name.ko" ] || fail "$name: a -FAIL patch wrote a module"
    elif [ "$rc" = 0 ] && [ -f "$work/rootfs/lp/livepatch-$name.ko" ]; then
        log "$name: built livepatch-$name.ko"
        expected_modules+=("$name")
        [ ! -f "$corpus/$name-LOADED.test" ] || cp "$corpus/$name-LOADED.test" "$work/rootfs/tests/"
    else
        fail "$name: klpdiff build exit $rc: $why"
    fi
done

cp "$busybox" "$work/rootfs/bin/busybox"
cat > "$work/rootfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
settle() {  # wait (10 s at most) until the livepatch's transition is over or the livepatch is gone
    i=0
    while [ $i -lt 100 ] && [ -d "$1" ] && [ "$(cat "$1/transition" 2>/dev/null)" != 0 ]; do
        sleep 0.1; i=$((i + 1))
    done
}
for ko in /lp/*.ko; do
    mod=$(basename "$ko" .ko); name=${mod#livepatch-}; lp=/sys/kernel/livepatch/$(echo "$mod" | tr - _)
    if ! insmod "$ko"; then echo "KLPDIFF-IT: $name loaded=no"; continue; fi
    settle "$lp"
    enabled=$(cat "$lp/enabled"); transition=$(cat "$lp/transition")
    test=none
    if [ -f "/tests/$name-LOADED.test" ]; then
        if sh "/tests/$name-LOADED.test" >/dev/null 2>&1; then test=pass; else test=fail; fi
    fi
    echo 0 > "$lp/enabled"
    settle "$lp"
    i=0; while [ $i -lt 100 ] && [ -d "$lp" ]; do sleep 0.1; i=$((i + 1)); done
    unload=no; [ -d "$lp" ] || ! rmmod "$mod" || unload=yes
    echo "KLPDIFF-IT: $name loaded=yes enabled=$enabled transition=$transition test=$test unload=$unload"
done
echo "KLPDIFF-IT: done"
reboot -f
EOF
chmod +x "$work/rootfs/init"
(cd "$work/rootfs" && find . | cpio -o -H newc --quiet | gzip) > "$work/initramfs.gz"
log "booting under ${qemu[0]} with ${#expected_modules[@]} livepatch(es)"
serial=$work/serial.log
timeout 900 "${qemu[@]}" -kernel "$ksrc/$image" -initrd "$work/initramfs.gz" -append "$console panic=-1" \
    -nographic -no-reboot -monitor none > "$serial" 2>&1 < /dev/null || true
cp "$serial" "$cache/integration-serial.log"  # the last run's guest log, for a closer look
grep -a "KLPDIFF-IT" "$serial" >&2 || true
grep -aq "KLPDIFF-IT: done" "$serial" || fail "the guest did not finish (see the serial log below)"
for name in "${expected_modules[@]}"; do
    line=$(grep -a "KLPDIFF-IT: $name " "$serial" || true)
    want_test=none
    [ ! -f "$corpus/$name-LOADED.test" ] || want_test=pass
    if [[ $line == *"loaded=yes enabled=1 transition=0 test=$want_test unload=yes"* ]]; then
        passed=$((passed + 1))
    else
        fail "$name: ${line:-no result from the guest} (want enabled=1 transition=0 test=$want_test unload=yes)"
    fi
done
# macro-callbacks: its vmlinux callbacks (fs/aio.c) must have run, in the order the livepatch core calls them
if [[ " ${expected_modules[*]} " == *" macro-callbacks "* ]]; then
    order=$(grep -ao "[a-z_]*_callback: vmlinux" "$serial" | cut -d: -f1 | tr '\n' ' ')
    log "macro-callbacks ran: ${order:-nothing}"
    [ "$order" = "pre_patch_callback post_patch_callback pre_unpatch_callback post_unpatch_callback " ] \
        || fail "macro-callbacks: callbacks ran as '$order', not pre_patch, post_patch, pre_unpatch, post_unpatch"
fi
if [ "$failed" = 0 ]; then
    log "PASS: every patch the e2e kernel builds behaved as kpatch's test expects"
    echo "integration: $passed passed, 0 failed, $skipped skipped"
    exit 0
fi
tail -40 "$serial" >&2
echo "integration: $passed passed, $failed failed, $skipped skipped"
exit 1
