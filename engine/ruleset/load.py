"""Which rule files apply, and the rule set they make, compiled once and then read from the cache.

In: rule folders (the installed `rules/`, then any `--rules` folders), and an architecture, an ELF
machine number or a kernel ARCH=. Out: the arch's name, its `ArchRule`, or its compiled `Ruleset`.
Compiling (compile.py, with the YAML reader, pydantic and the expression parser) happens only when
the rule cache (cache.py) holds nothing for these files' contents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..core.errors import InputError, RuleError
from ..core.inputs import input_size
from ..core.installation import ENGINE_ROOT, data_dir
from .cache import cached
from .compiled import Ruleset
from .schema import ArchRule


def default_rules_dir() -> Path:
    found = data_dir("rules")
    if found is None:
        raise RuleError(f"{ENGINE_ROOT}: the rules folder is missing from this installation")
    return found


def rule_dirs(extra: Sequence[Path]) -> list[Path]:
    """The installed rules folder, then each --rules folder (which must be a folder)."""
    dirs = [default_rules_dir()]
    for d in extra:
        if not Path(d).is_dir():
            raise InputError(f"{d}: --rules needs a folder of rule files")
        dirs.append(Path(d))
    return dirs


def rule_files(dirs: Iterable[Path], arch: str | None) -> list[Path]:
    """The shared files of each folder, then (if arch is known) its arch subfolder."""
    files: list[Path] = []
    for d in dirs:
        files.extend(sorted(d.glob("*.yaml")))
        if arch is not None:
            files.extend(sorted((d / arch).glob("*.yaml")))
    return _regular(files)


def _arch_files(dirs: Iterable[Path]) -> list[Path]:
    return _regular([f for d in dirs for f in sorted(d.glob("*/arch.yaml"))])


def _regular(files: list[Path]) -> list[Path]:
    """Refuse, without opening it, a rule file that is no regular file (a FIFO would block the read) or
    larger than any input can be."""
    for path in files:
        input_size(path, "a rule file")
    return files


def known_arches(dirs: list[Path]) -> list[str]:
    return sorted({p.parent.name for p in _arch_files(dirs)})


def arch_rules(dirs: list[Path]) -> list[tuple[str, ArchRule]]:
    """Each folder's arch rules, as (arch folder name, rule), in folder order."""
    files = _arch_files(dirs)

    def read_arch_rules() -> list[tuple[str, ArchRule]]:
        from .compile import load_doc

        docs = [(f.parent.name, load_doc(f).doc) for f in files]
        return [(name, doc) for name, doc in docs if isinstance(doc, ArchRule)]

    return cached("arches " + " ".join(str(d) for d in dirs), files, read_arch_rules)


def arch_for_machine(dirs: list[Path], machine: int) -> str | None:
    """The arch folder whose arch.yaml names this e_machine."""
    return next((name for name, rule in arch_rules(dirs) if rule.machine == machine), None)


def arch_for_kernel(dirs: list[Path], karch: str) -> ArchRule | None:
    """The arch rule (the last folder's wins) whose kbuild.arch is the kernel's ARCH= `karch`."""
    found = None
    for _name, rule in arch_rules(dirs):
        if rule.kbuild.arch == karch:
            found = rule
    return found


def arch_for_distribution(dirs: list[Path], distribution: str, name: str) -> tuple[str, ArchRule] | None:
    """The arch folder and rule (the last folder's wins) a distribution calls `name` (debian: amd64)."""
    found = None
    for folder, rule in arch_rules(dirs):
        if rule.distributions.get(distribution) == name:
            found = (folder, rule)
    return found


def load_ruleset(dirs: list[Path], arch: str) -> Ruleset:
    """Every rule file that applies to `arch`, compiled (the rules of a compiled set are never changed once
    loaded: many diffs in one process share it, and later runs read it from the rule cache)."""
    known = known_arches(dirs)
    if arch not in known:  # (an arch is a folder name: nothing else may reach the file system)
        raise RuleError(f"--arch {arch}: no rules for it (known: {', '.join(known)})")
    files = rule_files(dirs, arch)

    def compile_now() -> Ruleset:
        from .compile import compile_ruleset

        return compile_ruleset(dirs, arch, files)

    return cached(f"rules {arch} " + " ".join(str(d) for d in dirs), files, compile_now)
