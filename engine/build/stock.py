"""A stock kernel made ready for `klpdiff build`: its source prepared with its own config, once.

In: a kernel release, the arch rules, klpdiff's cache folder and the user's choices (`--source`,
`--skip-compiler-check`). Out: a `StockKernel` — a prepared tree (`make modules_prepare` with the
stock config and the release name the kernel reports), the index of its compile records
(`kindex`), and the stock files (`distro.KernelFiles`) the build reads: vmlinux, Module.symvers,
modules. Everything lives in `<cache>/kernels/<distribution>/<release>/`; a second build on the
same kernel finds it there.

Refused by name, before anything is prepared: a config without CONFIG_LIVEPATCH, a compiler other
than the one that built the kernel (its CONFIG_CC_VERSION_TEXT; `--skip-compiler-check` lets it
through), a source whose version is not the kernel's, a stock config the source does not
reproduce. One build at a time prepares a kernel (a lock file); an interrupted preparation is
redone from the start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from ..core.errors import InputError
from ..core.outputs import Progress, atomic_write
from ..core.records import record
from ..ruleset.load import arch_for_distribution, arch_rules
from .distro import DistroError, KernelFiles, KernelPackages, distribution, upstream_version
from .kindex import TreeIndex, locked, make_records

_STAMP = ".klpdiff-prepared"
_SAVED = "kernel.json"  # the packages a prepared kernel came from: a second build asks the archive nothing


@record
class StockKernel:
    files: KernelFiles
    tree: Path
    index: TreeIndex
    make_vars: tuple[str, ...]   # ARCH=, CROSS_COMPILE=, CC= (or LLVM=) and KERNELRELEASE= for kbuild
    notes: tuple[str, ...] = ()


def read_config(text: str) -> dict[str, str]:
    """CONFIG_X -> its value (`n` for `# CONFIG_X is not set`)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
            continue
        m = re.match(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$", line)
        if m:
            out[m.group(1)] = "n"
    return out


def config_drift(stock: dict[str, str], prepared: dict[str, str]) -> list[str]:
    """The options the stock config sets that the prepared one sets otherwise (options the stock
    config leaves out, such as the signing key Debian strips, take kbuild's defaults)."""
    return [f"{name} is {value} in the stock config, {prepared.get(name, 'absent')} here"
            for name, value in sorted(stock.items()) if prepared.get(name, "n") != value
            and name != "CONFIG_CC_VERSION_TEXT"]


def require_livepatch(config: dict[str, str], path: Path, release: str) -> None:
    """Refuse a kernel that cannot load a livepatch."""
    if config.get("CONFIG_LIVEPATCH") != "y":
        raise DistroError(f"{path}: {release} is built without CONFIG_LIVEPATCH: it cannot load a livepatch")


def compiler_version(line: str) -> str:
    """A `--version` first line without the program's name: `gcc-12 (Debian 12.2.0-14) 12.2.0` ->
    `(Debian 12.2.0-14) 12.2.0`; a clang line is kept whole."""
    _name, _, rest = line.strip().partition(" ")
    return line.strip() if "clang" in line or not rest else rest


def compiler_candidates(text: str, prefix: str) -> list[tuple[str, ...]]:
    """The make variables to try, most likely first, for a kernel built by `text`
    (CONFIG_CC_VERSION_TEXT)."""
    if "clang" in text:
        m = re.search(r"clang version ([0-9]+)", text)
        return [("LLVM=1",), *([(f"LLVM=-{m.group(1)}",)] if m else [])]
    first = text.split(" ", 1)[0]
    names = [first] if re.fullmatch(r"[A-Za-z0-9._+-]+", first) else []
    names += [n for n in ("gcc",) if n not in names]
    return [(f"CC={prefix}{n}",) for n in names]


def _tool_of(make_vars: tuple[str, ...]) -> list[str]:
    """The compiler program the make variables select."""
    var = make_vars[0]
    if var.startswith("CC="):
        return [var[3:]]
    suffix = var.removeprefix("LLVM=")
    return ["clang" + (suffix if suffix.startswith("-") else "")]


def choose_compiler(text: str, prefix: str, skip_check: bool,
                    version_of: Callable[[str], str | None]) -> tuple[tuple[str, ...], str | None]:
    """The make variables of the compiler that built the kernel (its version text `text`) and a note
    when the check was skipped; refuses when this machine has no such compiler."""
    candidates = compiler_candidates(text, prefix)
    found = []
    for make_vars in candidates:
        line = version_of(_tool_of(make_vars)[0])
        if line is None:
            continue
        if compiler_version(line) == compiler_version(text):
            return make_vars, None
        found.append((make_vars, line))
    if skip_check and found:
        make_vars, line = found[0]
        return make_vars, f"compiler check skipped: the kernel was built by '{text}', this build uses '{line}'"
    have = "; ".join(f"{_tool_of(v)[0]} is '{line}'" for v, line in found) or \
        f"no {' or '.join(_tool_of(v)[0] for v in candidates)} on this machine"
    raise DistroError(f"the kernel was built by '{text}' and klpdiff builds with the same compiler ({have}); "
                      f"install it, or pass --skip-compiler-check to build with another at your own risk")


def first_line_of(program: str) -> str | None:
    """`PROGRAM --version`'s first line, or None when there is no such program."""
    try:
        proc = subprocess.run([program, "--version"], capture_output=True, text=True, errors="surrogateescape")
    except OSError:
        return None
    return proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else None


def _saved(path: Path, source_given: bool) -> KernelPackages | None:
    """The packages recorded when this kernel was prepared, if it was prepared from the same kind of
    source (the archive's, or the user's)."""
    try:
        packages = KernelPackages(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return packages if (packages.source is None) == source_given else None


def require_version(have: str, packages: KernelPackages, given: Path) -> None:
    """Refuse a source of another Linux version than the kernel's packages."""
    want = upstream_version(packages.version)
    if have != want:
        raise DistroError(f"{given}: the source of Linux {have}, but {packages.release} is {packages.version} "
                          f"(Linux {want})")


def kernel_version(makefile: str) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL of a kernel's top Makefile."""
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL) = ([0-9]+)$", makefile, re.M))
    return ".".join(fields.get(k, "?") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))


def stock_kernel(release: str, rule_dirs: list[Path], cache: Path | None, source: Path | None,
                 skip_compiler_check: bool, jobs: int, progress: Progress,
                 os_release: Path = Path("/etc/os-release")) -> StockKernel:
    if cache is None:
        raise InputError("klpdiff build --kernel keeps the kernel in klpdiff's cache, which is turned off "
                         "(KLPDIFF_CACHE_DIR is empty)")
    distro = distribution(os_release)
    folder = cache / "kernels" / distro.name / release
    saved = _saved(folder / _SAVED, source is not None)
    packages = saved or distro.locate(release, source is not None)
    found = arch_for_distribution(rule_dirs, distro.name, packages.arch)
    if found is None:
        known = ", ".join(f"{r.distributions[distro.name]} ({n})" for n, r in arch_rules(rule_dirs)
                          if distro.name in r.distributions)
        raise DistroError(f"{release}: a {packages.arch} kernel, and no arch rule names {distro.name}'s "
                          f"{packages.arch} (known: {known})")
    arch_name, arch = found
    with locked(folder.with_name(release + ".lock")):
        files = distro.fetch(packages, folder, progress)
        config = read_config(files.config.read_text(errors="replace"))
        require_livepatch(config, files.config, release)
        text = config.get("CONFIG_CC_VERSION_TEXT", "").strip('"')
        prefix = "" if arch_name == platform.machine() else arch.toolchain.prefix
        compiler, note = choose_compiler(text, prefix, skip_compiler_check, first_line_of)
        make_vars = (*((f"ARCH={arch.kbuild.arch}",) if arch.kbuild.arch else ()),
                     *((f"CROSS_COMPILE={prefix}",) if prefix else ()), *compiler, f"KERNELRELEASE={release}")
        tree = folder / "tree"
        origin = os.path.realpath(source) if source is not None else files.source.name
        stamp = tree / _STAMP
        if not stamp.is_file() or stamp.read_text() != origin:
            _prepare(files, source, tree, make_vars, config, origin, jobs, progress)
        if saved != packages:
            atomic_write(folder / _SAVED, json.dumps(dataclasses.asdict(packages), indent=1).encode())
        return StockKernel(files, tree, TreeIndex(tree, folder / "index"), make_vars,
                           (note,) if note else ())


def _prepare(files: KernelFiles, source: Path | None, tree: Path, make_vars: tuple[str, ...],
             stock: dict[str, str], origin: str, jobs: int, progress: Progress) -> None:
    release = files.packages.release
    shutil.rmtree(tree, ignore_errors=True)
    shutil.rmtree(tree.parent / "index", ignore_errors=True)
    given = source if source is not None else files.source
    progress(f"prepare: unpacking {given} for {release}")
    _unpack_source(given, tree)
    require_version(kernel_version((tree / "Makefile").read_text(errors="replace")), files.packages, given)
    shutil.copyfile(files.config, tree / ".config")
    progress(f"prepare: make modules_prepare with {release}'s config ({' '.join(make_vars)})")
    proc = subprocess.run(["make", "-C", str(tree), f"-j{max(1, jobs)}", *make_vars, "olddefconfig",
                           "modules_prepare"], capture_output=True, text=True, errors="surrogateescape")
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise InputError(f"{tree}: preparing {release} failed: {tail}")
    drift = config_drift(stock, read_config((tree / ".config").read_text(errors="replace")))
    if drift:
        raise DistroError(f"{files.config}: the stock config does not hold with this source and compiler: "
                          + "; ".join(drift[:5]) + (f" (and {len(drift) - 5} more)" if len(drift) > 5 else ""))
    shutil.copyfile(files.symvers, tree / "Module.symvers")  # what external modules (the livepatch) link against
    progress("prepare: listing every object's compile command (kbuild's dry run)")
    count = make_records(tree, make_vars, tree.parent / "index")
    progress(f"prepare: {count} C object(s) in {release}")
    (tree / _STAMP).write_text(origin)


def _unpack_source(given: Path, tree: Path) -> None:
    """A source tarball (its one top folder becomes `tree`) or a copy of a source tree."""
    partial = tree.with_name(tree.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if given.is_dir():
        if not (given / "Makefile").is_file():
            raise InputError(f"{given}: not a kernel source tree (no Makefile)")
        shutil.copytree(given, partial, symlinks=True,
                        ignore=shutil.ignore_patterns("*.o", "*.ko", ".*.cmd", ".git"))
    elif given.is_file() and tarfile.is_tarfile(given):
        partial.mkdir(parents=True)
        proc = subprocess.run(["tar", "-xf", str(given), "-C", str(partial), "--strip-components=1"],
                              capture_output=True, text=True, errors="surrogateescape")
        if proc.returncode != 0:
            raise InputError(f"{given}: cannot unpack it: {proc.stderr.strip()}")
    else:
        raise InputError(f"{given}: neither a kernel source tree nor a tarball of one")
    if not (partial / "Makefile").is_file():
        raise InputError(f"{given}: no kernel Makefile at its top")
    os.replace(partial, tree)
