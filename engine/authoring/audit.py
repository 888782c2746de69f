"""`klpdiff rules audit`: which rule claims each section of real objects.

In: object files (any number, one architecture) and the rule folders. Out: an
`Audit` — for each (role, rule origin), how many sections it claimed and a few
of their names; and every section no rule claims, with the objects it is in.
A rule author runs it on objects of a new kernel, config or architecture to
find sections that would otherwise refuse a patch (see classify.SectionRole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from pathlib import Path

from ..core.errors import InputError
from ..core.records import record
from ..diff.classify import SectionRole, classifiable, section_role
from ..elf.read import read_elf
from ..ruleset.compiled import Ruleset
from ..ruleset.load import arch_for_machine, load_ruleset

_EXAMPLES = 3


@record(frozen=False)
class Claim:
    role: SectionRole
    origin: str
    count: int = 0
    examples: list[str] = field(default_factory=list)


@record(frozen=False)
class Audit:
    arch: str
    objects: int = 0
    sections: int = 0
    claims: dict[tuple[SectionRole, str], Claim] = field(default_factory=dict)
    unknown: dict[str, list[str]] = field(default_factory=dict)  # section name -> objects holding it

    def lines(self) -> list[str]:
        out = [f"{self.arch}: {self.objects} object(s), {self.sections} section(s)"]
        for claim in sorted(self.claims.values(), key=lambda c: (c.role.value, c.origin)):
            more = ", ..." if claim.count > len(claim.examples) else ""
            out.append(f"  {claim.role.value:<11} {claim.count:6d}  {', '.join(claim.examples)}{more}"
                       f"  [{claim.origin}]")
        for name, objects in sorted(self.unknown.items()):
            shown = ", ".join(objects[:_EXAMPLES]) + (", ..." if len(objects) > _EXAMPLES else "")
            out.append(f"  {SectionRole.UNKNOWN.value:<11} {len(objects):6d}  {name}  (no rule; in {shown})")
        return out


def audit(paths: Sequence[Path], dirs: list[Path], arch: str | None = None) -> Audit:
    """Classify every section of every object with the rules of their (common) architecture."""
    if not paths:
        raise InputError("rules audit: name at least one object file")
    rs: Ruleset | None = None
    result: Audit | None = None
    for path in paths:
        obj = read_elf(path)
        obj_arch = arch_for_machine(dirs, obj.machine)
        if obj_arch is None:
            raise InputError(f"{path}: no rules for ELF machine {obj.machine}")
        if arch is not None and obj_arch != arch:
            raise InputError(f"{path}: ELF machine {obj.machine} is {obj_arch}, not {arch}")
        if rs is None or result is None:
            rs = load_ruleset(dirs, obj_arch)
            result = Audit(obj_arch)
            arch = obj_arch
        result.objects += 1
        for sec in obj.sections:
            if not classifiable(sec):
                continue
            result.sections += 1
            claim = section_role(rs, sec)
            if claim.role is SectionRole.UNKNOWN:
                result.unknown.setdefault(sec.name, []).append(path.name)
                continue
            entry = result.claims.setdefault((claim.role, claim.origin), Claim(claim.role, claim.origin))
            entry.count += 1
            if len(entry.examples) < _EXAMPLES and sec.name not in entry.examples:
                entry.examples.append(sec.name)
    assert result is not None
    return result
