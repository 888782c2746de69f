"""Livepatch relocations: which references the kernel's livepatch core must resolve, and how.

In: the running kernel's symbol table (`--symtab`: `readelf -sW` text or the
ELF file itself), its `Module.symvers` (`--symvers`), the patched object's name
(`--objname`: vmlinux or a module), and the references the output keeps to the
running kernel. Out: for each such reference, either nothing (an ordinary
relocation: the symbol is exported by vmlinux, or lives in another object of
the patch module) or a livepatch symbol `.klp.sym.<obj>.<name>,<sympos>`.

`sympos` is how the kernel tells same-named symbols apart
(kernel/livepatch/core.c, klp_find_object_symbol): the 1-based position among
symbols of that name in kallsyms order (address order), or 0 when the name is
unique. For a static symbol the right instance is the one in the FILE block
whose local symbols best match the original object's.

The diff output carries these as a linker-safe intermediate form (see
diff/emit.py `.klpdiff.relocs`); `klpdiff post-link` turns it into
`.klp.rela.<obj>.<section>` sections and SHN_LIVEPATCH symbols in the final .ko.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import field
from pathlib import Path

from ..core.errors import InputError
from ..core.inputs import input_size, read_input, read_once
from ..core.records import record
from ..elf.model import BIND_VALUES, SHN_UNDEF, STB_GLOBAL, STB_LOCAL
from ..elf.read import read_symbols

KLP_SYM_PREFIX = ".klp.sym."
KLP_RELA_PREFIX = ".klp.rela."
SHN_LIVEPATCH = 0xFF20
SHF_RELA_LIVEPATCH = 0x00100000
RELOCS_SECTION = ".klpdiff.relocs"   # intermediate: {u64 place; u64 symbol; u32 type; u32 pad} per entry
RELOC_ENTRY = 24
FUNCS_SECTION = ".klpdiff.funcs"     # intermediate: "objname old_name sympos\n" per patched function
CALLBACKS_SECTION = ".klpdiff.callbacks"  # intermediate: "objname kind function\n" per callback


@record(frozen=False)
class PatchTables:
    """What `klpdiff module` needs from a diff object besides its code: the functions it patches
    (object, old name, sympos) and the patch-author callbacks (object, kind, function)."""

    funcs: list[tuple[str, str, int]]
    callbacks: list[tuple[str, str, str]]

    def sections(self) -> list[tuple[str, bytes]]:
        """(name, text) of the tables; both are always there, empty when there is nothing to list."""
        return [(FUNCS_SECTION, "".join(f"{o} {n} {p}\n" for o, n, p in self.funcs).encode()),
                (CALLBACKS_SECTION, "".join(f"{o} {k} {f}\n" for o, k, f in self.callbacks).encode())]


@record
class KernelSymbol:
    """One symbol of the running kernel's symbol table."""

    name: str
    addr: int
    type: str    # FUNC, OBJECT, NOTYPE, ...
    bind: int    # STB_LOCAL, STB_GLOBAL, STB_WEAK, ...
    file: str    # the FILE block it sits in: "<name>#<n>" (the same file name may start several blocks)


@record(frozen=False)
class KernelSymtab:
    """The running kernel's symbols, by name and by FILE block."""

    symbols: list[KernelSymbol]
    by_name: dict[str, list[KernelSymbol]] = field(default_factory=dict)
    locals_of: dict[str, set[str]] = field(default_factory=dict)   # FILE block -> its local names

    def __post_init__(self) -> None:
        by_name: dict[str, list[KernelSymbol]] = defaultdict(list)
        locals_of: dict[str, set[str]] = defaultdict(set)
        for s in self.symbols:
            by_name[s.name].append(s)
            if s.bind == STB_LOCAL:
                locals_of[s.file].add(s.name)
        self.by_name = dict(by_name)
        self.locals_of = dict(locals_of)


_READELF_LINE = re.compile(
    r"^\s*\d+:\s+(?P<value>[0-9a-fA-F]+)\s+(?P<size>\S+)\s+(?P<type>\S+)\s+(?P<bind>\S+)\s+\S+\s+"
    r"(?:\[[^\]]*\]\s+)?(?P<ndx>\S+)\s*(?P<name>.*)$")


def read_symtab(path: Path) -> KernelSymtab:
    """Read a kernel symbol table from `readelf -sW` output or from the ELF file itself."""
    return read_once("symtab", path, _read_symtab)


def read_symvers(path: Path) -> dict[str, str]:
    """Module.symvers: `CRC<TAB>symbol<TAB>module<TAB>export-type[<TAB>namespace]` -> {symbol: module}."""
    return dict(read_once("symvers", path, _read_symvers))


def _read_symtab(path: Path) -> KernelSymtab:
    input_size(path, "a symbol table")
    try:
        with path.open("rb") as fh:
            is_elf = fh.read(4) == b"\x7fELF"
    except OSError as err:
        raise InputError(f"{path}: cannot read symbol table: {err.strerror}") from err
    if is_elf:
        return _symtab_from_elf(path)
    raw = read_input(path, "a symbol table")
    symbols: list[KernelSymbol] = []
    current_file, blocks = "", 0
    for line in raw.decode("utf-8", "replace").splitlines():
        m = _READELF_LINE.match(line)
        if not m:
            continue
        name, stype = m.group("name").strip(), m.group("type")
        bind = BIND_VALUES.get(m.group("bind"), STB_GLOBAL)  # any other binding is seen beyond its file
        if stype == "FILE":
            blocks += 1
            current_file = f"{name}#{blocks}"
            continue
        if not name or stype == "SECTION" or m.group("ndx") == "UND":
            continue
        symbols.append(KernelSymbol(name, int(m.group("value"), 16), stype, bind, current_file))
    if not symbols:
        raise InputError(f"{path}: no symbols found (expected `readelf -sW` output or an ELF file)")
    return KernelSymtab(symbols)


def _symtab_from_elf(path: Path) -> KernelSymtab:
    """The symbols of an ELF file's own symbol table, named as `readelf -sW` names them."""
    symbols: list[KernelSymbol] = []
    current_file, blocks = "", 0
    for s in read_symbols(path):
        if s.index == 0:
            continue  # the null symbol
        stype = s.type_name
        if stype == "FILE":
            blocks += 1
            current_file = f"{s.name}#{blocks}"
            continue
        if not s.name or stype == "SECTION" or s.shndx == SHN_UNDEF:
            continue
        symbols.append(KernelSymbol(s.name, s.value, stype, s.bind, current_file))
    return KernelSymtab(symbols)


def _read_symvers(path: Path) -> dict[str, str]:
    exports: dict[str, str] = {}
    try:
        text = read_input(path, "a Module.symvers").decode()
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a Module.symvers (not text: byte {err.start} is not UTF-8)") from err
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 4:
            raise InputError(f"{path}:{n}: malformed Module.symvers line (expected CRC, symbol, module, type)")
        exports[parts[1]] = parts[2].rsplit("/", 1)[-1].replace("-", "_")
    return exports


@record(frozen=False)
class KlpContext:
    """What livepatch relocations need: the kernel's symbols and exports, and this object's name."""

    symtab: KernelSymtab
    exports: dict[str, str]
    objname: str
    orig_locals: set[str]  # local FUNC/OBJECT names of the original object (to find its FILE block)
    provided: list[re.Pattern[str]] = field(default_factory=list)  # linker/loader-provided (arch rules)


def klp_symbol(ctx: KlpContext, name: str, bind: int) -> str | None:
    """The livepatch symbol for a reference to `name`, or None for an ordinary relocation."""
    if any(p.search(name) for p in ctx.provided):
        return None  # the linker or the module loader resolves it (.TOC. and the like)
    exporter = ctx.exports.get(name)
    if exporter == "vmlinux" and bind != STB_LOCAL:
        return None
    if exporter is not None and bind != STB_LOCAL:
        return f"{KLP_SYM_PREFIX}{exporter}.{name},0"
    candidates = ctx.symtab.by_name.get(name, [])
    if not candidates:
        if bind == STB_LOCAL:
            raise InputError(f"cannot find static symbol {name} in the kernel symbol table "
                             f"(is --symtab from the kernel the objects were built for?)")
        return None  # a global the patch module itself will provide
    return f"{KLP_SYM_PREFIX}{ctx.objname}.{name},{sympos(ctx, name, bind)}"


UNKNOWN_OWNER = "?"


def klp_owner(ctx: KlpContext | None, name: str, bind: int, defined_here: bool, objname: str) -> str:
    """Which kernel object owns the symbol a reference from the livepatch names: "vmlinux", a module's
    name, "" when the livepatch module provides it itself (a new global, or the linker), or "?" when no
    symbol table says (klpdiff run without --symtab). `defined_here`: the patched object defines it (it
    stays a reference to the running object's copy)."""
    if ctx is None:
        return objname if defined_here and objname != "vmlinux" else UNKNOWN_OWNER
    if any(p.search(name) for p in ctx.provided):
        return ""
    exporter = ctx.exports.get(name)
    if exporter is not None and bind != STB_LOCAL:
        return exporter
    if defined_here or ctx.symtab.by_name.get(name):
        return ctx.objname
    return ""


def sympos(ctx: KlpContext, name: str, bind: int) -> int:
    same = sorted(ctx.symtab.by_name.get(name, []), key=lambda s: s.addr)
    if len(same) <= 1:
        return 0
    if bind != STB_LOCAL:
        globals_ = [s for s in same if s.bind != STB_LOCAL]
        if len(globals_) != 1:
            raise InputError(f"symbol {name} is defined {len(globals_)} times as a global in the kernel "
                             f"symbol table: cannot tell which one")
        return same.index(globals_[0]) + 1
    locals_ = [s for s in same if s.bind == STB_LOCAL]
    scored = sorted(((len(ctx.orig_locals & ctx.symtab.locals_of.get(s.file, set())), s) for s in locals_),
                    key=lambda p: -p[0])
    if not scored or (len(scored) > 1 and scored[0][0] == scored[1][0]):
        files = ", ".join(sorted({s.file.rsplit("#", 1)[0] for s in locals_}))
        raise InputError(f"static symbol {name} appears in several files of the kernel ({files}) and the "
                         f"original object's local symbols do not tell which one is meant")
    return same.index(scored[0][1]) + 1


def parse_klp_symbol(name: str) -> tuple[str, str, int] | None:
    """`.klp.sym.<obj>.<name>,<pos>` -> (obj, name, pos)."""
    m = re.match(r"^\.klp\.sym\.([^.]+)\.(.+),(\d+)$", name)
    return (m.group(1), m.group(2), int(m.group(3))) if m else None
