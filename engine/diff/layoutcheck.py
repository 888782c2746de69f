"""The layout check of the differ's refuse stage (the stages: pipeline.py): refuse a livepatch whose code
would read the running kernel's data with another layout than the kernel's.

In: both objects, the `Correlation`, the `Inclusion`, the marker sections of the patched object
(`Roles`) and the types the author allows by name (`--allow-layout-change`). Out: a
`LayoutCheck`: whether the check ran (both objects need debug information), the refusals, and
the layout changes the included code reaches, each with both layouts and whether it was allowed.

The running kernel's objects keep the layout the original object was built with. Every struct,
union and enum type that the included functions reach through their debug information
(parameters, variables, return values, inlined callees, the variables they reference, and from
those every pointed-to or member type) is compared between the two objects by name
(`layout.changed_types`); a difference is a refusal naming the type, what moved, and how the
code reaches it. A variable of the running kernel that the included code references must also
keep its type. An author who knows a change is safe (a member only the patched code ever
touches, in objects it allocates) allows the type by name: the option, or
`KLPDIFF_ALLOW_LAYOUT_CHANGE(struct foo)` in the patch's source (a marker section).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import field
from enum import StrEnum

from ..core.errors import Refusal
from ..core.records import record
from ..elf.dwarf import TAG_COMPILE_UNIT, TAG_VARIABLE, DebugInfo, debug_info
from ..elf.layout import (
    Change,
    Layout,
    Layouts,
    Root,
    TypeKind,
    TypeUse,
    changed_types,
    layouts,
    type_use,
    variable_type,
)
from ..elf.model import STT_FUNC, STT_OBJECT, ElfObject, Symbol
from ..ruleset.compiled import Marker, MarkerEffect
from .classify import Roles
from .correlate import Correlation
from .include import Inclusion

_SHOWN = 4  # changes listed per type in a refusal's line (the JSON report has them all)


class LayoutStatus(StrEnum):
    """Whether the layouts could be compared; the value is the report's word."""

    CHECKED = "checked"
    NO_DEBUG_INFO = "no-debug-info"   # one of the objects was built without -g
    NOT_NEEDED = "not-needed"         # nothing is included: no code of the livepatch reads data


@record
class LayoutFinding:
    """A changed type the included code reaches: both layouts, how it changed, the path that reaches
    it, and whether the author allowed it."""

    change: Change
    path: tuple[str, ...]   # how the included code reaches the type: a function, then each step
    allowed: bool

    @property
    def used_by(self) -> str:
        return " -> ".join(self.path)

    @property
    def members_crossed(self) -> int:
        """0 when the code holds the type (or a pointer to it) in a variable, parameter or return value
        of its own; else how many members of other types lead to it (`current->mm->...` crosses one)."""
        return sum(1 for step in self.path if step.startswith("member "))


@record(frozen=False)
class LayoutCheck:
    status: LayoutStatus
    findings: list[LayoutFinding] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def allowed_by_markers(patched: ElfObject, roles: Roles) -> set[str]:
    """The type names the patch's source allows (`KLPDIFF_ALLOW_LAYOUT_CHANGE`): the strings of its
    marker sections."""
    names: set[str] = set()
    for shndx, marker in roles.markers.items():
        if marker.effect is MarkerEffect.ALLOW_LAYOUT_CHANGE:
            names.update(_type_names(patched.sections[shndx].data))
    return names


def allowed_in(obj: ElfObject, markers: Sequence[Marker]) -> set[str]:
    """The same, for an object not diffed yet (`klpdiff build` gathers them from every patched object:
    a type allowed in one file of a patch is allowed for the whole patch)."""
    names: set[str] = set()
    for sec in obj.sections:
        marker = next((m for m in markers if m.section.search(sec.name)), None)
        if marker is not None and marker.effect is MarkerEffect.ALLOW_LAYOUT_CHANGE:
            names.update(_type_names(sec.data))
    return names


def _type_names(data: bytes) -> Iterator[str]:
    """The NUL-separated names of a marker section, blanks made single (`#type` keeps them as written)."""
    return (" ".join(s.decode("utf-8", "replace").split()) for s in data.split(b"\0") if s.strip())


def _is_allowed(name: str, allowed: Iterable[str]) -> bool:
    """`struct foo` is allowed as itself or as `foo`."""
    bare = name.split(" ", 1)[-1]
    return any(a in (name, bare) for a in allowed)


def check_layouts(orig: ElfObject, patched: ElfObject, corr: Correlation, inc: Inclusion,
                  allowed: Iterable[str]) -> LayoutCheck:
    info_o, info_p = debug_info(orig), debug_info(patched)
    if info_o is None or info_p is None:
        return LayoutCheck(LayoutStatus.NO_DEBUG_INFO)
    result = LayoutCheck(LayoutStatus.CHECKED)
    lay_o, lay_p = layouts(info_o), layouts(info_p)
    changes = changed_types(lay_o, lay_p)
    roots = list(_roots(orig, patched, corr, inc, info_p))
    allowed = set(allowed)
    if changes:
        use = type_use(lay_p, roots)
        for name, offset in use.reached():
            change = changes.get(name)
            if change is None:
                continue
            finding = LayoutFinding(change, tuple(use.path(offset)), _is_allowed(name, allowed))
            result.findings.append(finding)
            if not finding.allowed:
                result.refusals.append(Refusal(_message(finding)))
    result.refusals.extend(_variable_refusals(orig, patched, corr, inc, lay_o, lay_p))
    return result


def _message(f: LayoutFinding) -> str:
    changes = list(f.change.how)
    shown = "; ".join(changes[:_SHOWN]) + (f"; and {len(changes) - _SHOWN} more" if len(changes) > _SHOWN else "")
    how = "used by" if not f.members_crossed else f"reached through {f.members_crossed} member(s) by"
    return (f"{f.change.name} changes layout ({shown}), {how} {f.used_by}: the running kernel's objects "
            f"keep the old layout; keep new state in shadow variables (klp_shadow_*), or, if the change is "
            f"known to be safe, allow it with --allow-layout-change '{f.change.name}' or "
            f"KLPDIFF_ALLOW_LAYOUT_CHANGE({f.change.name})")


def _included_functions(patched: ElfObject, inc: Inclusion) -> Iterator[Symbol]:
    for index in sorted(inc.defined_included(patched)):
        sym = patched.symbols[index]
        if sym.type == STT_FUNC:
            yield sym


def _roots(orig: ElfObject, patched: ElfObject, corr: Correlation, inc: Inclusion,
           info: DebugInfo) -> Iterator[Root]:
    """The entries of every included function, and of every variable of the running kernel they
    reference."""
    by_section: dict[int, list[tuple[int, int]]] = {}
    for (shndx, offset), dies in info.functions.items():
        by_section.setdefault(shndx, []).extend((offset, die) for die in dies)
    for sym in _included_functions(patched, inc):
        name = corr.name_of(orig, patched, sym.index)
        end = sym.value + max(sym.size, 1)  # an entry may start after the function's own padding
        for offset, die in by_section.get(sym.shndx, []):
            if sym.value <= offset < end:
                yield Root(name, die)
    named = _unit_variables(info)
    for var in _kernel_variables(patched, inc):
        for die in _variable_entries(info, named, var):
            yield Root("", die)  # the path's first step names the variable and its type


def _copied_ranges(patched: ElfObject, inc: Inclusion) -> Iterator[tuple[int, int, int]]:
    """(section, start, end) of every byte range the output copies: whole sections and pieces."""
    for shndx in sorted(inc.sections):
        yield shndx, 0, patched.sections[shndx].size
    for shndx, pieces in sorted(inc.pieces.items()):
        for start, end in pieces:
            yield shndx, start, end


def _kernel_variables(patched: ElfObject, inc: Inclusion) -> list[Symbol]:
    """The data symbols that the copied code and data reference (directly, or through a table of
    addresses the output copies too) and that stay the running kernel's."""
    rel = patched.relocs()
    seen: dict[int, Symbol] = {}
    for shndx, start, end in _copied_ranges(patched, inc):
        for _r, t in rel.in_range(shndx, start, end):
            target = patched.symbols[t.sym]
            if t.sym in seen or inc.copied(target):
                continue
            if target.type == STT_OBJECT or (not target.is_defined and target.type != STT_FUNC):
                seen[t.sym] = target
    return [seen[i] for i in sorted(seen)]


def _unit_variables(info: DebugInfo) -> dict[str, list[int]]:
    """Variables declared at the top of a unit, by name (an extern's declaration has no address)."""
    out: dict[str, list[int]] = {}
    for unit in info.units:
        if info.dies[unit].tag != TAG_COMPILE_UNIT:
            continue
        for child in info.dies[unit].children:
            die = info.dies[child]
            if die.tag == TAG_VARIABLE and die.name is not None:
                out.setdefault(die.name, []).append(child)
    return out


def _variable_entries(info: DebugInfo, named: dict[str, list[int]], sym: Symbol) -> list[int]:
    if sym.is_defined:
        found = info.variables.get((sym.shndx, sym.value))
        if found:
            return found
    return named.get(sym.name, [])


def _variable_refusals(orig: ElfObject, patched: ElfObject, corr: Correlation, inc: Inclusion,
                       lay_o: Layouts, lay_p: Layouts) -> list[Refusal]:
    """A variable of the running kernel the included code references must keep its type."""
    named_o, named_p = _unit_variables(lay_o.info), _unit_variables(lay_p.info)
    out = []
    for var in _kernel_variables(patched, inc):
        twin_index = corr.sym_twin.get(var.index)
        twin = orig.symbols[twin_index] if twin_index is not None else None
        before = _type_of(lay_o, named_o, twin if twin is not None else var)
        after = _type_of(lay_p, named_p, var)
        if before is not None and after is not None and before != after:
            name = twin.name if twin is not None else var.name
            out.append(Refusal(f"variable {name} changes type ({before} -> {after}), referenced by the included "
                               f"code: the running kernel's {name} keeps its type", None, frozenset({var.index})))
    return out


def _type_of(lay: Layouts, named: dict[str, list[int]], sym: Symbol) -> str | None:
    spelled = {variable_type(lay, lay.info.dies[d]) for d in _variable_entries(lay.info, named, sym)}
    spelled.discard("void")
    return spelled.pop() if len(spelled) == 1 else None


def layout_json(layout: Layout) -> dict[str, object]:
    """A layout for the JSON report."""
    if layout.kind is TypeKind.ENUM:
        return {"kind": layout.kind.value, "size": layout.size, "enumerators": dict(layout.enumerators)}
    return {"kind": layout.kind.value, "size": layout.size,
            "members": [{"name": m.name, "offset": m.offset, "bit_offset": m.bit_offset, "bit_size": m.bit_size,
                         "type": m.type} for m in layout.members]}


__all__ = ["LayoutCheck", "LayoutFinding", "LayoutStatus", "TypeUse", "allowed_by_markers",
           "allowed_in", "check_layouts", "layout_json"]
