"""What a built kernel tree records about itself, read without running make.

In: the root of a kernel tree that was configured and built in place. Out: the
facts `klpdiff build` needs, all read from kbuild's own records:

- `.<object>.cmd` files: the exact command that compiled an object
  (`savedcmd_<obj> := ...`, with objtool or recordmcount where the config runs
  them), its source (`source_<obj> := ...`) and every header it included
  (`deps_<obj> := ...`);
- module membership: kbuild compiles a module's objects with -DMODULE and the
  module's KBUILD_MODNAME (recorded in the same command); its `.ko` is found by
  that name (`-` in a file name read as `_`, as KBUILD_MODNAME does);
- the architecture (`arch/<karch>/include/generated`) and the cross-compiler
  prefix of the recorded compiler.

Nothing here writes to the tree.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import field
from pathlib import Path
from typing import Protocol

from ..core.errors import InputError
from ..core.records import record

_SAVED = re.compile(r"^(?:saved)?cmd_(?P<obj>\S+) := (?P<cmd>.*)$")
_SOURCE = re.compile(r"^source_(?P<obj>\S+) := (?P<src>\S+)$")
_MODNAME = re.compile(r"-DKBUILD_MODNAME='?\"?([A-Za-z0-9_]+)")


@record
class CompiledObject:
    """One object kbuild compiled from a source file."""

    path: str            # relative to the tree, e.g. fs/dcache.o
    source: str          # fs/dcache.c
    command: str         # the shell command kbuild ran (savedcmd)
    deps: tuple[str, ...] = ()  # headers and other files it read, relative to the tree


class Records(Protocol):
    """Where a tree's compile records come from when kbuild has not written them (a prepared tree:
    `kindex.TreeIndex`)."""

    def compiled(self, obj: str) -> CompiledObject | None: ...

    def objects_of_source(self, source: str) -> list[str]: ...

    def objects_including(self, header: str) -> list[str]: ...


@record(frozen=False)
class Tree:
    """A built kernel: `root` is where kbuild wrote the objects (the source tree itself, or the folder
    given as O=), `srctree` the sources behind it (kbuild's `source` link in an O= folder). A tree
    kbuild only prepared has `index`: its records come from there, not from `.cmd` files."""

    root: Path
    index: Records | None = None
    _ko_files: dict[str, Path] | None = field(default=None, repr=False)  # module name -> its .ko

    @property
    def srctree(self) -> Path:
        link = self.root / "source"
        if link.is_symlink() and link.resolve().is_dir() and link.resolve() != self.root.resolve():
            return link.resolve()
        return self.root

    @property
    def src_ref(self) -> str:
        """How kbuild's commands name the source tree: `.` (built in place), `..` (O= folder right
        inside it) or its absolute path (Makefile: srctree)."""
        src = self.srctree
        if src == self.root:
            return "."
        return ".." if self.root.resolve().parent == src else str(src)

    def source_path(self, recorded: str) -> str | None:
        """A path as kbuild recorded it (source_/deps_), relative to the source tree; None for files
        of the object tree (generated headers)."""
        ref = self.src_ref
        if ref == ".":
            return None if recorded.startswith("/") else recorded.removeprefix("./")
        if recorded.startswith(ref + "/"):
            return recorded[len(ref) + 1:]
        return None

    def cmd_file(self, obj: str) -> Path:
        rel = Path(obj)
        return self.root / rel.parent / f".{rel.name}.cmd"

    def compiled(self, obj: str) -> CompiledObject | None:
        """The record of `obj` (fs/dcache.o), or None when kbuild never compiled it."""
        if self.index is not None:
            return self.index.compiled(obj)
        path = self.cmd_file(obj)
        if not path.is_file():
            return None
        return parse_cmd(obj, path.read_text(errors="replace"))

    def objects_of_source(self, source: str) -> list[str]:
        """Objects compiled from `source` (fs/dcache.c -> fs/dcache.o, when its record exists)."""
        if self.index is not None:
            return self.index.objects_of_source(source)
        stem = str(Path(source).with_suffix(""))
        found = [f"{stem}.o"] if self.cmd_file(f"{stem}.o").is_file() else []
        return [o for o in found
                if (rec := self.compiled(o)) is not None and self.source_path(rec.source) == source]

    def objects_including(self, header: str) -> list[str]:
        """Every compiled C object whose recorded dependencies name `header`."""
        if self.index is not None:
            return self.index.objects_including(header)
        needle = header.encode()
        out = []
        for cmd in self._cmd_files():
            data = cmd.read_bytes()
            if needle not in data:
                continue
            obj = str(cmd.parent.relative_to(self.root) / cmd.name[1:-len(".cmd")])
            rec = parse_cmd(obj, data.decode(errors="replace"))
            if rec.source.endswith(".c") and header in {self.source_path(d) for d in rec.deps}:
                out.append(obj)
        return sorted(out)

    def _files(self, wanted: Callable[[str], bool]) -> Iterator[Path]:
        """The files of the tree whose name is `wanted` that kbuild may have written (hidden folders,
        Documentation and tools passed over). Names are tested before a path is made: a source tree
        holds some 80,000 files and only a few are wanted."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("Documentation", "tools")]
            for name in filenames:
                if wanted(name):
                    yield Path(dirpath, name)

    def _cmd_files(self) -> Iterator[Path]:
        return self._files(lambda name: name.startswith(".") and name.endswith(".o.cmd"))

    def _kos(self) -> dict[str, Path]:
        """Module name -> its built .ko (one walk of the tree)."""
        if self._ko_files is None:
            self._ko_files = {p.stem.replace("-", "_"): p for p in self._files(lambda name: name.endswith(".ko"))}
        return self._ko_files

    def module_of(self, obj: str) -> str | None:
        """The module an object is compiled for, or None for vmlinux: kbuild compiles module code with
        -DMODULE and the module's KBUILD_MODNAME (so this holds before any module is linked)."""
        rec = self.compiled(obj)
        if rec is None:
            return None
        head = split_first(rec.command)[0]
        m = _MODNAME.search(head)
        return m.group(1) if m and re.search(r"(^|\s)-DMODULE(\s|$)", head) else None

    def module_file(self, obj: str) -> Path | None:
        """The built .ko of the module `obj` belongs to."""
        module = self.module_of(obj)
        return None if module is None else self._kos().get(module)

    def karch(self) -> str:
        """ARCH= of the build: the one arch folder with generated headers."""
        found = sorted(p.parent.parent.name for p in (self.root / "arch").glob("*/include/generated"))
        if len(found) != 1:
            raise InputError(f"{self.root}: cannot tell the architecture of this build (generated headers in "
                             f"{', '.join(found) or 'no arch folder'}); is it configured and built?")
        return found[0]


def parse_cmd(obj: str, text: str) -> CompiledObject:
    command = source = ""
    deps: list[str] = []
    in_deps = False
    for line in text.splitlines():
        if in_deps:
            entry = line.strip().rstrip("\\").strip()
            if entry and not entry.startswith("$(wildcard"):
                deps.append(entry)
            in_deps = line.endswith("\\")
            continue
        m = _SAVED.match(line)
        if m and m.group("obj") == obj:
            command = m.group("cmd")
            continue
        m = _SOURCE.match(line)
        if m and m.group("obj") == obj:
            source = m.group("src")
            continue
        if line.startswith(f"deps_{obj} :="):
            in_deps = line.endswith("\\")
    return CompiledObject(obj, source, command, tuple(deps))


def split_first(command: str) -> tuple[str, str]:
    """The first simple command of a shell command line and the rest after its `;` (quote-aware)."""
    quote = ""
    escaped = False
    for i, ch in enumerate(command):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            return command[:i], command[i + 1:]
    return command, ""


def compiler_of(command: str) -> str:
    """The compiler a recorded command runs (its first word)."""
    words = shlex.split(split_first(command)[0])
    if not words:
        raise InputError("empty compile command")
    return words[0]


def cross_prefix(compiler: str) -> str:
    """`s390x-linux-gnu-gcc` -> `s390x-linux-gnu-`; a plain `gcc` -> ``."""
    name = Path(compiler).name
    m = re.match(r"^(?P<prefix>.*-)(?:gcc|clang|cc)(?:-[0-9.]+)?$", name)
    return m.group("prefix") if m else ""


def with_flags(command: str, flags: list[str]) -> str:
    """The command with `flags` appended to its compiler invocation, where KCFLAGS would put them
    (after the recorded flags, so they take effect). The recorded text is kept as it is, quoting
    included, and so is the rest of the command (objtool, recordmcount)."""
    head, tail = split_first(command)
    if not head.strip():
        raise InputError("empty compile command")
    return f"{head.rstrip()} {shlex.join(flags)}" + (f" ;{tail}" if tail else "")
