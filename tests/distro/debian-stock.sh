#!/usr/bin/env bash
# Livepatch Debian's own kernel, as kpatch-build users do with theirs (a documented run, not part of CI).
#
#   tests/distro/debian-stock.sh [PATCH...]
#
# Default patches: kpatch's data-new, syscall and module (fs/xfs, a module) integration patches
# (../shared/corpus/kpatch-integration).
# What it does, for the kernel that Debian's linux-source-6.12 builds (same 6.12.x):
# 1. fetches Debian's stock image (bzImage, config), its -dbg package (a vmlinux with symbols), and
#    installs its linux-headers and linux-kbuild packages (Module.symvers, external-module kbuild);
#    the image and -dbg packages are unpacked into the cache, never installed on this machine;
# 2. prepares linux-source-6.12 with the stock kernel's own config and compiles, once, the objects the
#    patches touch (their kbuild records are what klpdiff build replays);
# 3. runs klpdiff build against that tree, with the stock vmlinux, Module.symvers and headers;
# 4. boots the stock bzImage under QEMU with a busybox initramfs, loads the livepatch, runs each patch's
#    -LOADED.test, disables and unloads it, and prints the timings.
# Needs root (apt-get) and about 8 GB of disk in ${KLPDIFF_DISTRO_CACHE:-~/.cache/klpdiff-distro}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
corpus=$root/../shared/corpus/kpatch-integration/linux-6.17.0
cache=${KLPDIFF_DISTRO_CACHE:-$HOME/.cache/klpdiff-distro}
klpdiff=${KLPDIFF:-$root/.venv/bin/klpdiff}
log() { echo "distro: $*" >&2; }
patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=("$corpus/data-new.patch" "$corpus/syscall.patch" "$corpus/module.patch")
start=$(date +%s)

version=$(dpkg-query -W -f='${Version}' linux-source-6.12)   # e.g. 6.12.117-1~deb12u1
upstream=${version%%-*}                                       # 6.12.117
release="$upstream+deb12-amd64"                               # uname -r of the stock kernel
log "Debian's kernel $release (linux-source-6.12 $version)"
mkdir -p "$cache"
if [ ! -f "$cache/root/boot/vmlinuz-$release" ] || [ ! -f "$cache/root/usr/lib/debug/boot/vmlinux-$release" ]; then
    log "fetching linux-image-$release-unsigned and its -dbg package (about 1.1 GB)"
    (cd "$cache" && apt-get download -qq "linux-image-$release-unsigned" "linux-image-$release-dbg" \
        && for deb in linux-image-*.deb; do dpkg-deb -x "$deb" root; done && rm -f linux-image-*.deb)
fi
headers=/usr/src/linux-headers-$release
if [ ! -f "$headers/Module.symvers" ]; then
    log "installing linux-headers-$release"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "linux-headers-$release" busybox-static >/dev/null
fi
vmlinux=$cache/root/usr/lib/debug/boot/vmlinux-$release
bzimage=$cache/root/boot/vmlinuz-$release

tree=$cache/linux-source-6.12
if [ ! -f "$cache/prepared-$release" ]; then
    log "preparing linux-source-6.12 with the stock config"
    rm -rf "$tree"
    tar xf /usr/src/linux-source-6.12.tar.xz -C "$cache"
    cp "$cache/root/boot/config-$release" "$tree/.config"
    make -C "$tree" -s olddefconfig prepare >/dev/null
    touch "$cache/prepared-$release"
fi
objects=$(grep -h '^+++ ' "${patches[@]}" | awk '{print $2}' | sed 's#^[^/]*/##' | grep '\.c$' | sed 's/\.c$/.o/' | sort -u)
log "compiling the objects the patches touch, once: $objects"
t0=$(date +%s)
make -C "$tree" -s -j"$(nproc)" $objects >/dev/null
t1=$(date +%s)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "klpdiff build"
"$klpdiff" build --kdir "$tree" --vmlinux "$vmlinux" --symvers "$headers/Module.symvers" --module-kdir "$headers" \
    --modules "$cache/root/lib/modules/$release" --fuzz 3 --name debian -o "$work/livepatch-debian.ko" --json "$work/build.json" "${patches[@]}"
t2=$(date +%s)
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('distro: klpdiff build phases:', d['seconds'])" \
    "$work/build.json" >&2
modinfo -F vermagic "$work/livepatch-debian.ko" | sed 's/^/distro: vermagic: /' >&2
"$root/.venv/bin/python" "$here/../e2e/orc_check.py" "$work/livepatch-debian.ko" >&2  # Debian's config has IBT

mkdir -p "$work/rootfs/bin" "$work/rootfs/tests"
cp /bin/busybox "$work/rootfs/bin/"
cp "$work/livepatch-debian.ko" "$work/rootfs/"
for p in "${patches[@]}"; do
    t=${p%.patch}-LOADED.test
    [ ! -f "$t" ] || cp "$t" "$work/rootfs/tests/"
done
# the stock modules the patched objects belong to, with what they need (modules.dep), decompressed,
# and a modprobe that loads them in order (the -LOADED.test scripts call `sudo modprobe NAME`)
mods=$(python3 -c "import json,sys; print(' '.join(sorted({o['objname'] for o in json.load(open(sys.argv[1]))['objects'] if o['objname'] != 'vmlinux'})))" "$work/build.json")
moddir=$cache/root/lib/modules/$release
mkdir -p "$work/rootfs/lib/modules"
ko_of() {  # a module's file, by name or, for a soft dependency such as crc32c, its generic driver
    local pattern
    pattern=$(echo "$1" | sed 's/[-_]/[-_]/g')
    find "$moddir" -name "$pattern.ko*" | head -1
    [ -n "$(find "$moddir" -name "$pattern.ko*")" ] || find "$moddir" -name "${pattern}[-_]generic.ko*" | head -1
}
add_module() {  # $1: module name; loads what it depends on (modinfo) before it, each once
    local ko dep
    [ ! -f "$work/rootfs/lib/modules/$1.ko" ] || return 0
    ko=$(ko_of "$1")
    [ -n "$ko" ] || { log "no $1 module under $moddir"; exit 1; }
    for dep in $(modinfo -F depends "$ko" | tr ',' ' ') \
               $(modinfo -F softdep "$ko" | sed -n 's/.*pre: *\([^:]*\)\( post:.*\)\?$/\1/p'); do
        add_module "$(basename "$(ko_of "$dep")" | sed 's/\.ko.*//')"
    done
    xz -dcf "$ko" > "$work/rootfs/lib/modules/$1.ko"
    echo "$1.ko" >> "$work/rootfs/lib/modules/order"
}
for m in $mods; do add_module "$m"; log "guest modules for $m: $(tr '\n' ' ' < "$work/rootfs/lib/modules/order")"; done
touch "$work/rootfs/lib/modules/order"
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
            dmesg | grep -i "xfs\|livepatch\|kpatch\|module" | tail -6 | sed 's/^/DISTRO:   /'
        fi
    done
    echo 0 > $lp/enabled
    i=0; while [ $i -lt 100 ] && [ -d $lp ]; do sleep 0.1; i=$((i + 1)); done
    if [ ! -d $lp ] && rmmod livepatch_debian; then echo "DISTRO: unload=yes"; else echo "DISTRO: unload=no"; fi
else
    echo "DISTRO: insmod failed"
fi
echo "DISTRO: done"
reboot -f
EOF
chmod +x "$work/rootfs/init"
(cd "$work/rootfs" && find . | cpio -o -H newc --quiet | gzip) > "$work/initramfs.gz"
log "booting the stock $release under QEMU"
timeout 900 qemu-system-x86_64 -m 1024 -kernel "$bzimage" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 panic=-1 quiet" -nographic -no-reboot -monitor none > "$work/serial.log" 2>&1 \
    < /dev/null || true
cp "$work/serial.log" "$cache/serial.log"  # the guest's log, for a closer look
grep -a "DISTRO:\|livepatch" "$work/serial.log" >&2 || true
t3=$(date +%s)
log "timings: objects compiled once $((t1 - t0)) s, klpdiff build $((t2 - t1)) s, boot and checks $((t3 - t2)) s," \
    "all $((t3 - start)) s"
want=("enabled=1 transition=0" "unload=yes")
for p in "${patches[@]}"; do
    t=$(basename "${p%.patch}-LOADED.test")
    [ ! -f "${p%.patch}-LOADED.test" ] || want+=("$t pass")
done
for w in "${want[@]}"; do
    grep -aq "DISTRO: $w" "$work/serial.log" || { log "FAIL: no '$w' from the guest"; echo "distro: 0 passed, 1 failed"; exit 1; }
done
echo "distro: 1 passed, 0 failed"
