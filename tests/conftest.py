"""Shared test helpers: where the corpus is, toolchains, and reading outputs back."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

# the rule cache of the runs the tests make: a folder of this session (removed at its end), not the user's
if "KLPDIFF_CACHE_DIR" not in os.environ:
    os.environ["KLPDIFF_CACHE_DIR"] = tempfile.mkdtemp(prefix="klpdiff-test-rule-cache-")
    atexit.register(shutil.rmtree, os.environ["KLPDIFF_CACHE_DIR"], True)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus" / "kpatch-unit"

# Debian cross toolchain prefixes per rule arch ("" = the host toolchain).
TOOLCHAINS = {
    "x86_64": "x86_64-linux-gnu-",
    "ppc64le": "powerpc64le-linux-gnu-",
    "s390x": "s390x-linux-gnu-",
    "aarch64": "aarch64-linux-gnu-",
    "riscv64": "riscv64-linux-gnu-",
}


def tool(arch: str, name: str) -> str | None:
    """Path of `<cross>-name`, or of the host tool when it serves `arch` (readelf reads every arch)."""
    if arch in TOOLCHAINS:
        prefixed = shutil.which(TOOLCHAINS[arch] + name)
        if prefixed:
            return prefixed
    if name == "readelf" or (arch == "x86_64" and os.uname().machine == "x86_64"):
        return shutil.which(name)
    return None


def need_tool(arch: str, name: str) -> str:
    found = tool(arch, name)
    if found is None:
        pytest.skip(f"{TOOLCHAINS.get(arch, '')}{name} is not installed (run .ci/run or apt-get install "
                    f"the Debian cross toolchain)")
    return found


@dataclass
class OutSym:
    name: str
    type: str
    bind: str
    shndx: object


def symbols(path: Path) -> list[OutSym]:
    with path.open("rb") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        return [OutSym(s.name, s["st_info"]["type"], s["st_info"]["bind"], s["st_shndx"])
                for s in symtab.iter_symbols()]


def defined_functions(path: Path) -> list[str]:
    return sorted(s.name for s in symbols(path) if s.type == "STT_FUNC" and s.shndx != "SHN_UNDEF")


def section_names(path: Path) -> list[str]:
    with path.open("rb") as fh:
        return [s.name for s in ELFFile(fh).iter_sections()]


def section_data(path: Path, name: str) -> bytes:
    with path.open("rb") as fh:
        sec = ELFFile(fh).get_section_by_name(name)
        assert sec is not None, f"{name} missing from {path}"
        return bytes(sec.data())


def relocations(path: Path) -> list[tuple[str, str, str, int]]:
    """(relocated section, type name, symbol name, addend) for every RELA entry."""
    from elftools.elf.descriptions import describe_reloc_type

    out = []
    with path.open("rb") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection):
                continue
            target = elf.get_section(sec["sh_info"]).name
            for r in sec.iter_relocations():
                sym = symtab.get_symbol(r["r_info_sym"])
                name = sym.name or elf.get_section(sym["st_shndx"]).name if sym["st_shndx"] != "SHN_UNDEF" \
                    else sym.name
                out.append((target, describe_reloc_type(r["r_info_type"], elf), name, r["r_addend"]))
    return out


def readelf_clean(readelf: str, path: Path) -> str:
    """Run readelf -aW; return its stderr plus any 'Warning' lines (empty when clean)."""
    proc = subprocess.run([readelf, "-aW", str(path)], capture_output=True, text=True)
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    return "\n".join(warnings) if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr}"


def e2e_tree() -> Path:
    """The built e2e kernel tree of x86_64 (tests/e2e/tree.sh builds it when it is not cached), or a skip."""
    proc = subprocess.run(["bash", str(ROOT / "tests/e2e/tree.sh"), "x86_64"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("no e2e kernel tree (tests/e2e/tree.sh x86_64 failed: "
                    f"{' | '.join(proc.stderr.strip().splitlines()[-2:])})")
    return Path(proc.stdout.strip().splitlines()[-1])
