"""Real kernel objects for tests and sweeps: Debian's linux-source-6.12, configured and prepared once.

Each arch has one cached tree in ${KLPDIFF_KERNEL_CACHE:-~/.cache/klpdiff-kernel}/<arch>:
x86_64 uses Debian's own amd64 config (linux-config-6.12), s390x, ppc64le and riscv64 their defconfig
plus livepatch (where the arch has it), dynamic debug, jump labels, ftrace and debug info. x86_64-clang
is the same Debian config built with `LLVM=1` (Debian's clang, lld and LLVM tools), the kernels some
fleets run. A tree is unpacked, configured and
`make prepare`d (a minute or two), never fully built: objects are compiled one by one as `klpdiff build`
compiles them: with `-ffunction-sections -fdata-sections` and what the arch rules add (arch.yaml
`kbuild.cflags`: riscv64's `-mno-relax`, ppc64le's `-mcmodel=large`).

    .venv/bin/python tests/kernel/ktree.py prepare x86_64    # unpack, configure, prepare (cached)
    .venv/bin/python tests/kernel/ktree.py objects x86_64 DEST  # the audit objects, copied into DEST

`ensure_packages` installs what is missing with apt-get when run as root.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from klpdiff.build.command import SECTION_FLAGS, arch_cflags

SOURCE_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
DEBIAN_CONFIG = Path("/usr/src/linux-config-6.12/config.amd64_none_amd64.xz")
LIVEPATCH_OPTIONS = ("LIVEPATCH", "DYNAMIC_DEBUG", "JUMP_LABEL", "FUNCTION_TRACER", "DYNAMIC_FTRACE",
                     "KALLSYMS_ALL", "EXT4_FS")
BUILD_PACKAGES = ("linux-source-6.12", "linux-config-6.12", "flex", "bison", "bc", "libelf-dev", "libssl-dev",
                  "make", "gcc", "xz-utils", "dwarves")

# Big files with many special sections, across the kernel's subsystems; arch files per arch.
COMMON_OBJECTS = (
    "fs/dcache.o", "fs/read_write.o", "fs/namei.o", "fs/open.o", "fs/proc/base.o", "fs/proc/meminfo.o",
    "fs/ext4/super.o",
    "kernel/sys.o", "kernel/fork.o", "kernel/sched/core.o", "kernel/printk/printk.o", "kernel/time/timer.o",
    "kernel/bpf/verifier.o", "kernel/trace/trace.o", "kernel/livepatch/core.o",
    "mm/memory.o", "mm/slub.o", "mm/filemap.o", "net/core/dev.o", "net/core/sock.o", "net/ipv4/tcp.o",
    "net/netlink/af_netlink.o", "block/blk-core.o", "lib/strncpy_from_user.o", "lib/usercopy.o",
    "drivers/char/random.o", "drivers/block/loop.o",
)


@dataclass(frozen=True)
class Arch:
    name: str           # the column's name: klpdiff's arch name, with -clang for a clang-built tree
    karch: str          # ARCH= for kbuild
    cross: str          # CROSS_COMPILE=
    packages: tuple[str, ...]
    arch_objects: tuple[str, ...]
    llvm: bool = False  # built with LLVM=1 (clang, lld and the LLVM binutils), as Android and some fleets build
    options: tuple[str, ...] = ()  # config options to enable beyond LIVEPATCH_OPTIONS (the defconfig lacks them)
    without: tuple[str, ...] = ()  # common objects the arch cannot build (the livepatch core without LIVEPATCH)

    @property
    def objects(self) -> tuple[str, ...]:
        return tuple(o for o in COMMON_OBJECTS if o not in self.without) + self.arch_objects

    @property
    def rules_arch(self) -> str:
        """klpdiff's name of the architecture (the rules' folder)."""
        return self.name.removesuffix("-clang")


X86_OBJECTS = ("arch/x86/kernel/process_64.o", "arch/x86/kernel/signal.o", "arch/x86/mm/fault.o",
               "arch/x86/kvm/x86.o")
ARCHES = {
    "x86_64": Arch("x86_64", "x86", "", (), X86_OBJECTS),
    "x86_64-clang": Arch("x86_64-clang", "x86", "", ("clang", "lld", "llvm"), X86_OBJECTS, llvm=True),
    "s390x": Arch("s390x", "s390", "s390x-linux-gnu-", ("gcc-s390x-linux-gnu", "binutils-s390x-linux-gnu"), (
        "arch/s390/kernel/process.o", "arch/s390/kernel/signal.o", "arch/s390/mm/fault.o",
        "arch/s390/kernel/traps.o")),
    "ppc64le": Arch("ppc64le", "powerpc", "powerpc64le-linux-gnu-",
                    ("gcc-powerpc64le-linux-gnu", "binutils-powerpc64le-linux-gnu"), (
        "arch/powerpc/kernel/process.o", "arch/powerpc/kernel/signal_64.o", "arch/powerpc/mm/fault.o",
        "arch/powerpc/kernel/traps.o", "arch/powerpc/lib/feature-fixups.o", "arch/powerpc/kernel/setup_64.o")),
    # no HAVE_LIVEPATCH upstream (6.12): the objects are what a port would patch
    "riscv64": Arch("riscv64", "riscv", "riscv64-linux-gnu-",
                    ("gcc-riscv64-linux-gnu", "binutils-riscv64-linux-gnu"), (
        "arch/riscv/kernel/process.o", "arch/riscv/kernel/signal.o", "arch/riscv/mm/fault.o",
        "arch/riscv/kernel/traps.o", "arch/riscv/kernel/cpufeature.o"),
                    options=("FTRACE", "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT"), without=("kernel/livepatch/core.o",)),
}


class Unavailable(Exception):
    """The tree cannot be had here (packages missing and not root); the message says what is missing."""


def cache_root() -> Path:
    return Path(os.environ.get("KLPDIFF_KERNEL_CACHE", Path.home() / ".cache" / "klpdiff-kernel"))


def _installed(package: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return "install ok installed" in proc.stdout


def ensure_packages(arch: Arch) -> None:
    missing = [p for p in BUILD_PACKAGES + arch.packages if not _installed(p)]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"missing Debian packages {' '.join(missing)} (run as root to install them)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def _make(arch: Arch, tree: Path, *args: str, kcflags: str = "",
          check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["make", "-C", str(tree), f"ARCH={arch.karch}", f"-j{os.cpu_count() or 2}"]
    if arch.cross:
        cmd.append(f"CROSS_COMPILE={arch.cross}")
    if arch.llvm:
        cmd.append("LLVM=1")
    if kcflags:
        cmd.append(f"KCFLAGS={kcflags}")
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd + list(args))} failed:\n{proc.stderr[-3000:]}")
    return proc


def prepare(name: str) -> Path:
    """The prepared tree of `name` (unpacked, configured, `make prepare`d), built once and cached."""
    arch = ARCHES[name]
    ensure_packages(arch)
    base = cache_root() / name
    tree = base / "linux-source-6.12"
    stamp = base / "prepared"
    if stamp.exists():
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    base.mkdir(parents=True, exist_ok=True)
    with tarfile.open(SOURCE_TARBALL) as tar:
        tar.extractall(base, filter="tar")
    if arch.karch == "x86":  # Debian's own config: the realistic one (olddefconfig adapts it to clang)
        subprocess.run(f"xz -dc {DEBIAN_CONFIG} > {tree / '.config'}", shell=True, check=True)
    else:
        _make(arch, tree, "defconfig")
        subprocess.run([str(tree / "scripts" / "config"), "--file", str(tree / ".config"),
                        *[arg for o in LIVEPATCH_OPTIONS + arch.options for arg in ("-e", o)]], check=True)
    _make(arch, tree, "olddefconfig")
    _make(arch, tree, "prepare")
    stamp.write_text("prepared\n")
    return tree


def build_flags(name: str, flags: Sequence[str] = ()) -> list[str]:
    """What `klpdiff build` adds to the kernel's compile commands (the section flags and the arch rules'
    `kbuild.cflags`), then `flags`."""
    return [*SECTION_FLAGS, *arch_cflags([], ARCHES[name].karch), *flags]


def flat_name(obj: str) -> str:
    return obj.replace("/", "_")


def build_objects(name: str, objects: Sequence[str], dest: Path,
                  edits: Mapping[str, Callable[[str], str]] | None = None,
                  flags: Sequence[str] = ()) -> dict[str, Path]:
    """Compile `objects` with the section flags (and `flags` after them) and copy them into `dest`
    (flat names). `edits` maps a source file to a function of its text: the objects are built with
    the edited sources, which are restored afterwards (the cached tree is this helper's own)."""
    if not objects:
        raise ValueError("no objects to build (make without targets would build the whole kernel)")
    arch = ARCHES[name]
    tree = prepare(name)
    dest.mkdir(parents=True, exist_ok=True)
    saved: dict[Path, bytes] = {}
    lock = (cache_root() / name / "build.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one edit-and-build at a time per tree (sweeps, tests)
    try:
        for src, edit in (edits or {}).items():
            path = tree / src
            saved[path] = path.read_bytes()
            edited = edit(saved[path].decode())
            if edited == saved[path].decode():
                raise ValueError(f"the edit of {src} changed nothing")
            path.write_text(edited)
        _make(arch, tree, *objects, kcflags=" ".join(build_flags(name, flags)))
        out = {}
        for obj in objects:
            target = dest / flat_name(obj)
            shutil.copyfile(tree / obj, target)
            out[obj] = target
        return out
    finally:
        for path, text in saved.items():
            path.write_bytes(text)
        lock.close()


def audit_objects(name: str) -> list[Path]:
    """The arch's audit objects, built once and cached."""
    dest = cache_root() / name / "objects"
    stamp = dest / "flags"  # objects built with other flags (an older klpdiff's) are built again
    flags = " ".join(build_flags(name)) + "\n"
    if not all((dest / flat_name(o)).exists() for o in ARCHES[name].objects) \
            or not stamp.exists() or stamp.read_text() != flags:
        build_objects(name, ARCHES[name].objects, dest)
        stamp.write_text(flags)
    return [dest / flat_name(o) for o in ARCHES[name].objects]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("prepare", "objects") or argv[1] not in ARCHES:
        print(f"usage: ktree.py prepare|objects ARCH [DEST]   (ARCH: {', '.join(ARCHES)})", file=sys.stderr)
        return 2
    if argv[0] == "prepare":
        print(prepare(argv[1]))
        return 0
    paths = audit_objects(argv[1])
    if len(argv) > 2:
        dest = Path(argv[2])
        dest.mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copyfile(p, dest / p.name)
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
