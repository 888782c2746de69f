#!/usr/bin/env bash
# Livepatch a kernel Debian 12 ships, through the product command alone (a documented run, not CI).
#
#   tests/distro/debian-stock.sh SERIES [PATCH...]
#
# SERIES: 6.1  — Debian 12's default kernel (the newest linux-image-6.1.0-N-amd64), with kpatch's
#                linux-6.2.0 integration patches;
#         6.12 — Debian 12's 6.12 kernel (the newest linux-image-6.12.N+deb12-amd64), with the
#                linux-6.17.0 ones.
# Default patches: kpatch's data-new, syscall and module (fs/xfs, a module) patches of that set
# (../shared/corpus/kpatch-integration) and klpdiff's own header patch (patches/loadavg-header.patch).
#
# What it does:
# 1. as root, installs what the run needs (QEMU, busybox, kbuild's tools); klpdiff itself goes into a
#    virtualenv of the unprivileged user's own;
# 2. as that user (`nobody` when run as root), `klpdiff build --kernel RELEASE` on all the patches: the
#    first run fetches Debian's packages into klpdiff's cache and prepares the source once; then again
#    with one one-file patch, to time a second build on the same kernel;
# 3. boots the stock image (from klpdiff's cache) under QEMU with a busybox initramfs, loads the
#    livepatch, runs each patch's -LOADED.test, disables and unloads it, and prints the timings.
# The cache: ${KLPDIFF_DISTRO_CACHE:-/var/tmp/klpdiff-distro} (about 3 GB per kernel).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
log() { echo "distro: $*" >&2; }
series=${1:-}
shift || true
case "$series" in
    6.1)  corpus=$root/../shared/corpus/kpatch-integration/linux-6.2.0
          pattern='^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' ;;
    6.12) corpus=$root/../shared/corpus/kpatch-integration/linux-6.17.0
          pattern='^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' ;;
    *) echo "usage: $0 6.1|6.12 [PATCH...]" >&2; exit 2 ;;
esac
patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=("$corpus/data-new.patch" "$corpus/syscall.patch" "$corpus/module.patch"
                                     "$here/patches/loadavg-header.patch")
one_file=${patches[0]}
cache=${KLPDIFF_DISTRO_CACHE:-/var/tmp/klpdiff-distro}
start=$(date +%s)

packages=(qemu-system-x86 busybox-static kmod cpio xz-utils make gcc flex bison bc libelf-dev libssl-dev
          python3-venv)
source "$here/../e2e/packages.sh"
ensure_packages "${packages[@]}"
release=$(apt-cache search --names-only "$pattern" | awk '{print $1}' | sed 's/^linux-image-//; s/-unsigned$//' \
          | sort -V | tail -1)
[ -n "$release" ] || { log "no $series kernel in this machine's package lists"; exit 1; }
log "Debian's kernel $release"

# the unprivileged user, with klpdiff in a virtualenv of its own (from a copy of this checkout)
mkdir -p "$cache"
as_user=()
if [ "$(id -u)" = 0 ]; then
    chown nobody "$cache"
    as_user=(runuser -u nobody --)
fi
user_env=(env HOME="$cache" XDG_CACHE_HOME="$cache/cache")
run_user() { "${as_user[@]}" "${user_env[@]}" "$@"; }
rm -rf "$cache/src"
run_user mkdir -p "$cache/src"
tar -C "$root" --exclude=.venv --exclude=.git --exclude='*.egg-info' -cf - . | run_user tar -C "$cache/src" -xf -
[ -x "$cache/venv/bin/pip" ] || run_user python3 -m venv "$cache/venv"
run_user "$cache/venv/bin/pip" install -q "$cache/src" >/dev/null
klpdiff=$cache/venv/bin/klpdiff

work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/out" "$work/patches"
cp "${patches[@]}" "$work/patches/"
chown -R "$(stat -c %u "$cache")" "$work/out"
chmod -R a+r "$work/patches"
in_work() { for p in "$@"; do echo "$work/patches/$(basename "$p")"; done; }
mapfile -t all < <(in_work "${patches[@]}")
log "klpdiff build --kernel $release (as $(run_user id -un)): ${#all[@]} patch(es)"
t0=$(date +%s)
run_user "$klpdiff" build --kernel "$release" --fuzz 3 --name debian -o "$work/out/livepatch-debian.ko" \
    --json "$work/out/build.json" "${all[@]}"
t1=$(date +%s)
log "again, one one-file patch on the same kernel: $(basename "$one_file")"
run_user "$klpdiff" build -q --kernel "$release" --fuzz 3 --name second -o "$work/out/livepatch-second.ko" \
    --json "$work/out/second.json" "$(in_work "$one_file")"
t2=$(date +%s)
for j in build second; do
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('distro: $j phases (s):', d['seconds'])" \
        "$work/out/$j.json" >&2
done
kcache=$cache/cache/klpdiff/kernels/debian/$release
du -sh "$kcache"/* 2>/dev/null | sed 's/^/distro: cache: /' >&2
ko=$work/out/livepatch-debian.ko
modinfo -F vermagic "$ko" | sed 's/^/distro: vermagic: /' >&2
"$cache/venv/bin/python" "$here/../e2e/orc_check.py" "$ko" --linux "$series" >&2

# the guest: busybox, the livepatch, the tests, and the stock modules the patched objects belong to
mkdir -p "$work/rootfs/bin" "$work/rootfs/tests" "$work/rootfs/lib/modules"
cp /bin/busybox "$work/rootfs/bin/"
cp "$ko" "$work/rootfs/"
for p in "${patches[@]}"; do
    t=${p%.patch}-LOADED.test
    [ ! -f "$t" ] || cp "$t" "$work/rootfs/tests/"
done
moddir=$kcache/root/lib/modules/$release
mods=$(python3 -c "import json,sys; print(' '.join(sorted({o['objname'] for o in json.load(open(sys.argv[1]))['objects'] if o['objname'] != 'vmlinux'})))" "$work/out/build.json")
ko_of() {  # a module's file, by name or, for a soft dependency such as crc32c, its generic driver
    local pattern
    pattern=$(echo "$1" | sed 's/[-_]/[-_]/g')
    find "$moddir" -name "$pattern.ko*" | head -1
    [ -n "$(find "$moddir" -name "$pattern.ko*")" ] || find "$moddir" -name "${pattern}[-_]generic.ko*" | head -1
}
add_module() {  # $1: module name; what it depends on (modinfo) is loaded before it, each once
    local file dep
    [ ! -f "$work/rootfs/lib/modules/$1.ko" ] || return 0
    file=$(ko_of "$1")
    [ -n "$file" ] || { log "no $1 module under $moddir"; exit 1; }
    for dep in $(modinfo -F depends "$file" | tr ',' ' ') \
               $(modinfo -F softdep "$file" | sed -n 's/.*pre: *\([^:]*\)\( post:.*\)\?$/\1/p'); do
        add_module "$(basename "$(ko_of "$dep")" | sed 's/\.ko.*//')"
    done
    xz -dcf "$file" > "$work/rootfs/lib/modules/$1.ko"
    echo "$1.ko" >> "$work/rootfs/lib/modules/order"
}
for m in $mods; do add_module "$m"; done
touch "$work/rootfs/lib/modules/order"
log "guest modules: $(tr '\n' ' ' < "$work/rootfs/lib/modules/order")"
# (busybox's shell prefers its own applets to $PATH, so sudo runs our modprobe by its path)
printf '#!/bin/sh\n[ "$1" != modprobe ] || { shift; exec /bin/modprobe.sh "$@"; }\nexec "$@"\n' \
    > "$work/rootfs/bin/sudo"
printf '#!/bin/sh\nfor ko in $(cat /lib/modules/order); do insmod /lib/modules/$ko 2>/dev/null; done\n' \
    > "$work/rootfs/bin/modprobe.sh"
chmod +x "$work/rootfs/bin/sudo" "$work/rootfs/bin/modprobe.sh"
cat > "$work/rootfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
echo "DISTRO: booted $(uname -r)"
lp=/sys/kernel/livepatch/livepatch_debian
if insmod /livepatch-debian.ko; then
    i=0; while [ $i -lt 100 ] && [ "$(cat $lp/transition)" != 0 ]; do sleep 0.1; i=$((i + 1)); done
    echo "DISTRO: enabled=$(cat $lp/enabled) transition=$(cat $lp/transition)"
    for t in /tests/*.test; do
        [ -f "$t" ] || continue
        if sh -x "$t" >/tmp/test.log 2>&1; then echo "DISTRO: $(basename $t) pass"
        else
            echo "DISTRO: $(basename $t) fail: $(tail -4 /tmp/test.log | tr '\n' ' ')"
            dmesg | grep -i "xfs\|livepatch\|module" | tail -6 | sed 's/^/DISTRO:   /'
        fi
    done
    echo 0 > $lp/enabled
    i=0; while [ $i -lt 100 ] && [ -d $lp ]; do sleep 0.1; i=$((i + 1)); done
    if [ ! -d $lp ] && rmmod livepatch_debian; then echo "DISTRO: unload=yes"; else echo "DISTRO: unload=no"; fi
else
    echo "DISTRO: insmod failed"
    dmesg | tail -5 | sed 's/^/DISTRO:   /'
fi
echo "DISTRO: done"
reboot -f
EOF
chmod +x "$work/rootfs/init"
(cd "$work/rootfs" && find . | cpio -o -H newc --quiet | gzip) > "$work/initramfs.gz"
log "booting the stock $release under QEMU"
timeout 900 qemu-system-x86_64 -m 1024 -kernel "$kcache/root/boot/vmlinuz-$release" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 panic=-1 quiet" -nographic -no-reboot -monitor none > "$work/serial.log" 2>&1 \
    < /dev/null || true
cp "$work/serial.log" "$cache/serial-$series.log"  # the guest's log, for a closer look
grep -a "DISTRO:\|livepatch" "$work/serial.log" >&2 || true
t3=$(date +%s)
log "timings: klpdiff build, all patches $((t1 - t0)) s; a second one-file patch $((t2 - t1)) s;" \
    "boot and checks $((t3 - t2)) s; all $((t3 - start)) s"
want=("booted $release" "enabled=1 transition=0" "unload=yes")
for p in "${patches[@]}"; do
    [ ! -f "${p%.patch}-LOADED.test" ] || want+=("$(basename "${p%.patch}")-LOADED.test pass")
done
for w in "${want[@]}"; do
    grep -aq "DISTRO: $w" "$work/serial.log" || { log "FAIL: no '$w' from the guest"; echo "distro: 0 passed, 1 failed"; exit 1; }
done
echo "distro: 1 passed, 0 failed"
