# The end-to-end tests' kernel, sourced by run.sh and integration.sh with the arch as $1.
#
# Builds (once, cached in ${KLPDIFF_E2E_CACHE:-~/.cache/klpdiff-e2e}/ARCH) a small
# livepatch-capable kernel from Debian's linux-source-6.12: tinyconfig plus modules,
# livepatch and its ftrace needs, a serial console and initramfs support, at -O2,
# plus what kpatch's integration patches touch (networking, AIO; on x86_64 input
# and USB too). The kernel is built the
# normal way, without -ffunction-sections. Installs what it needs with apt-get (as
# root) and klpdiff itself on a fresh checkout. Sets: arch karch cross image target
# qemu console here root cache klpdiff ksrc kmake llvm log.
arch=${1:-x86_64}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
llvm=""  # LLVM=1: clang, lld and the LLVM binutils (x86_64-clang)
case "$arch" in
    x86_64|x86_64-ibt|x86_64-clang)
        karch=x86_64; cross=""; image=arch/x86/boot/bzImage; target=bzImage; qemu_pkg=qemu-system-x86
        qemu=(qemu-system-x86_64 -m 256)
        console="console=ttyS0 earlyprintk=serial,ttyS0,115200"
        arch_options="SERIAL_8250 SERIAL_8250_CONSOLE EARLY_PRINTK UNWINDER_ORC
                      INPUT INPUT_MISC PCSPKR_PLATFORM USB_SUPPORT"  # the integration patches' input and USB
        arch_modules="INPUT_JOYDEV INPUT_PCSPKR USB"
        disable="UNWINDER_GUESS UNWINDER_FRAME_POINTER"  # ORC: the reliable stacks the consistency model needs
        # x86_64-ibt: indirect branch tracking, as Debian's config has it; objtool then runs on vmlinux.o
        # and on linked modules, not per object, so built-in objects carry no ORC data of their own
        [ "$arch" != x86_64-ibt ] || arch_options="$arch_options X86_KERNEL_IBT"
        # x86_64-clang: the same kernel built with LLVM=1, as Android-derived kernels and some fleets are
        [ "$arch" != x86_64-clang ] || llvm="LLVM=1"
        ;;
    s390x)
        karch=s390; cross=s390x-linux-gnu-; image=arch/s390/boot/bzImage; target=bzImage; qemu_pkg=qemu-system-misc
        qemu=(qemu-system-s390x -M s390-ccw-virtio -m 512)
        console="console=ttysclp0"
        arch_options="SCLP_TTY SCLP_CONSOLE SCLP_VT220_TTY SCLP_VT220_CONSOLE"
        arch_modules=""
        disable=""
        ;;
    ppc64le)
        karch=powerpc; cross=powerpc64le-linux-gnu-; image=vmlinux; target=vmlinux; qemu_pkg=qemu-system-ppc
        qemu=(qemu-system-ppc64 -M pseries -m 1024)
        console="console=hvc0"
        arch_options="PPC64 PPC_BOOK3S_64 CPU_LITTLE_ENDIAN PPC_PSERIES HVC_CONSOLE PPC_OF_BOOT_TRAMPOLINE
                      PPC_FPU ALTIVEC VSX"  # the guest init is glibc-static: it uses VSX
        arch_modules=""
        disable="CPU_BIG_ENDIAN"
        ;;
    *)
        echo "e2e: no end-to-end recipe for $arch (x86_64, x86_64-ibt, x86_64-clang, s390x and ppc64le have one)" >&2
        exit 2
        ;;
esac
root=$(cd "$here/../.." && pwd)
cache=${KLPDIFF_E2E_CACHE:-$HOME/.cache/klpdiff-e2e}/$arch
klpdiff=${KLPDIFF:-$root/.venv/bin/klpdiff}
jobs=$(nproc)
log() { echo "e2e: $*" >&2; }

packages=(linux-source-6.12 "$qemu_pkg" flex bison bc libelf-dev libssl-dev cpio kmod
          xz-utils gcc make patch)
[ -z "$cross" ] || packages+=("gcc-${cross%-}" "binutils-${cross%-}")
[ -z "$llvm" ] || packages+=(clang lld llvm)
source "$here/packages.sh"
ensure_packages "${packages[@]}"
if [ ! -x "$klpdiff" ]; then  # a fresh checkout: install klpdiff into the checkout's .venv
    log "installing klpdiff into $root/.venv"
    python3 -m venv "$root/.venv"
    "$root/.venv/bin/pip" install --quiet -e "$root"
    klpdiff=$root/.venv/bin/klpdiff
fi

mkdir -p "$cache"
ksrc=$cache/linux-source-6.12
# the tree is the installed linux-source-6.12's: a newer package is unpacked and built afresh (the
# header-index proof compares this tree with a tree prepared from the package)
source_version=$(dpkg-query -W -f='${Version}' linux-source-6.12)   # 6.12.118-1~deb12u1
sublevel=$(echo "$source_version" | cut -d- -f1 | cut -d. -f3)
if [ ! -f "$ksrc/Makefile" ] || [ "$(sed -n 's/^SUBLEVEL = //p' "$ksrc/Makefile")" != "$sublevel" ]; then
    log "unpacking linux-source-6.12 $source_version"
    rm -rf "$ksrc"
    tar xf /usr/src/linux-source-6.12.tar.xz -C "$cache"
fi
export CROSS_COMPILE=$cross
kmake() { make -C "$ksrc" ARCH="$karch" -j"$jobs" $llvm "$@"; }
config_stamp=$cache/config.stamp
# -O2 as distribution kernels are built (tinyconfig's -Os keeps small inlines such as __access_ok out
# of line, which would hide the runtime constants the user-access fix exercises)
options="64BIT MODULES MODULE_UNLOAD PRINTK TTY BINFMT_ELF BINFMT_SCRIPT BLK_DEV_INITRD RD_GZIP PROC_FS
         SYSFS DEVTMPFS FTRACE FUNCTION_TRACER DYNAMIC_FTRACE KALLSYMS KALLSYMS_ALL LIVEPATCH MULTIUSER
         STACKTRACE CC_OPTIMIZE_FOR_PERFORMANCE NET INET IPV6 NETFILTER AIO $arch_options"
disable="$disable CC_OPTIMIZE_FOR_SIZE"
if [ ! -f "$ksrc/.config" ] || [ "$(cat "$config_stamp" 2>/dev/null)" != "$options m: $arch_modules" ]; then
    log "configuring (tinyconfig + livepatch)"
    kmake tinyconfig >/dev/null
    (cd "$ksrc" && for o in $disable; do scripts/config -d "$o"; done && for o in $options; do scripts/config -e "$o"; done \
        && for o in $arch_modules; do scripts/config -m "$o"; done)
    kmake olddefconfig >/dev/null
    required="LIVEPATCH HAVE_RELIABLE_STACKTRACE"
    [ "$arch" != x86_64-ibt ] || required="$required X86_KERNEL_IBT"
    for o in $required; do
        grep -q "^CONFIG_$o=y" "$ksrc/.config" || { log "CONFIG_$o did not survive olddefconfig"; exit 1; }
    done
    for o in $arch_modules; do
        grep -q "^CONFIG_$o=m" "$ksrc/.config" || log "note: CONFIG_$o=m did not survive olddefconfig"
    done
    echo "$options m: $arch_modules" > "$config_stamp"
fi
log "building the kernel (cached after the first run)"
kmake "$target" modules >"$cache/kbuild.log" 2>&1 || { tail -20 "$cache/kbuild.log"; exit 1; }
