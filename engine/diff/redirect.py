"""Changed functions with no ftrace call site, patched through their callers (part of the include stage).

In: the patched object, its `Roles`, the `Comparison` (statuses and ftrace call sites) and the
`Ruleset` (which relocations are direct calls). Out: for each changed function without an ftrace
site (a `static inline` the compiler kept out of line, a `notrace` function), a `Redirect` (the
callers with a site to patch in its place, the unchanged functions on the way to copy, and the call
sites that must reach those copies) or a `NotThrough` saying why that cannot be done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum

from ..core.records import record
from ..elf.model import STB_LOCAL, STT_FUNC, ElfObject, Symbol
from ..ruleset.compiled import Ruleset
from .classify import Roles
from .compare import CHANGED, NEW, SAME, Comparison
from .correlate import function_bodies

_NULL_SYMBOL = Symbol(0, "", 0, 0, 0, 0, 0, 0)


@record
class Redirect:
    """How a changed function with no ftrace site is patched through its callers: `callers` (each with
    a site) are patched in its place, `via` (unchanged, no site, between them) are copied, and `calls`
    (section, offset) are the call sites that must reach those copies."""

    callers: tuple[int, ...]
    via: tuple[int, ...]
    calls: tuple[tuple[int, int], ...]


class Obstacle(Enum):
    """What stops patching a function through its callers."""

    NOT_LOCAL = "not local"                  # a global or weak function: other objects may call it
    SHARED_SECTION = "shared section"        # its section holds other functions too
    ADDRESS_TAKEN = "address taken"          # a pointer to it may be called from anywhere
    NOT_CALLED = "not called"                # nothing in the object calls it
    UNCOMPARED_CALLER = "uncompared caller"  # a caller is code the differ does not compare


@record
class NotThrough:
    """Why a changed function with no ftrace site cannot be patched through its callers."""

    obstacle: Obstacle
    why: str  # the sentence reports and `explain` show


@record
class _Ref:
    """One reference to a function: from which function (None: not from code of a function), whether it
    is a direct call or jump, and where."""

    caller: int | None
    call: bool
    section: int
    offset: int


def function_or_section_at(obj: ElfObject, shndx: int, offset: int) -> Symbol:
    """The function whose bytes hold `offset` of a code section (its section symbol if none does)."""
    found = obj.function_at(shndx, offset)
    if found is not None:
        return found
    return obj.symbols[obj.section_symbol[shndx]] if shndx in obj.section_symbol else _NULL_SYMBOL


def redirects(obj: ElfObject, roles: Roles, cmp: Comparison, rs: Ruleset,
              is_prefix: Callable[[Symbol], bool]) -> dict[int, Redirect | NotThrough]:
    """For each changed function that has no ftrace call site: its callers to patch instead, or why
    that cannot be done."""
    targets = [i for i, st in cmp.status.items()
               if st == CHANGED and obj.symbols[i].type == STT_FUNC and i not in cmp.ftrace_p
               and i not in cmp.aliases]
    if not targets:
        return {}
    refs = _function_references(obj, roles, rs)
    return {f: _redirect(obj, f, refs, cmp, is_prefix) for f in sorted(targets)}


def _function_references(obj: ElfObject, roles: Roles, rs: Ruleset) -> dict[int, list[_Ref]]:
    """Every reference to a function from code or data the kernel runs or reads (not from debug
    information, nor from the special sections that describe a function's own code)."""
    out: dict[int, list[_Ref]] = {}
    skipped = roles.ignored | set(roles.special) | roles.regenerated | set(roles.string_filtered)
    for sec in obj.sections:
        if not sec.relocs or sec.index in skipped:
            continue
        for r, t in zip(sec.relocs, obj.targets.get(sec.index, []), strict=True):
            if obj.symbols[t.sym].type != STT_FUNC:
                continue
            caller: int | None = None
            if sec.is_text:
                at = function_or_section_at(obj, sec.index, r.offset)
                caller = at.index if at.type == STT_FUNC else None
            call = sec.is_text and any(r.type in form.types and form.fits(sec.data, r.offset) for form in rs.call_forms)
            out.setdefault(t.sym, []).append(_Ref(caller, call, sec.index, r.offset))
    return out


def _obstacle(obj: ElfObject, g: int, found: list[_Ref], is_prefix: Callable[[Symbol], bool]) -> NotThrough | None:
    """What stops walking up from function `g` to its callers (`found`: its references), if anything."""
    sym = obj.symbols[g]
    if sym.bind != STB_LOCAL:
        return NotThrough(Obstacle.NOT_LOCAL,
                          f"{sym.name} is {sym.bind_name.lower()}: code outside this object may call it")
    if function_bodies(obj, sym.shndx, is_prefix) != 1:
        return NotThrough(Obstacle.SHARED_SECTION, f"{sym.name} shares {obj.sections[sym.shndx].name} with other "
                                                   f"functions")
    taken = next((ref for ref in found if not ref.call or ref.caller is None), None)
    if taken is not None:
        where = obj.symbols[taken.caller].name if taken.caller is not None else obj.sections[taken.section].name
        return NotThrough(Obstacle.ADDRESS_TAKEN, f"the address of {sym.name} is taken (in {where})")
    if not found:
        return NotThrough(Obstacle.NOT_CALLED, f"nothing in this object calls {sym.name}")
    return None


def _redirect(obj: ElfObject, f: int, refs: Mapping[int, list[_Ref]], cmp: Comparison,
              is_prefix: Callable[[Symbol], bool]) -> Redirect | NotThrough:
    """Walk up the callers of `f` until each path reaches a function with an ftrace site."""
    callers: set[int] = set()
    via: set[int] = set()
    calls: set[tuple[int, int]] = set()
    seen, todo = {f}, [f]
    while todo:
        g = todo.pop()
        found = [ref for ref in refs.get(g, []) if ref.caller != g]  # its own recursion stays inside
        obstacle = _obstacle(obj, g, found, is_prefix)
        if obstacle is not None:
            return obstacle
        for ref in found:
            assert ref.caller is not None
            if g != f and cmp.status.get(g, SAME) == SAME:
                calls.add((ref.section, ref.offset))  # the unchanged function's copy must be called
            if ref.caller in seen:
                continue
            seen.add(ref.caller)
            caller_status = cmp.status.get(ref.caller)
            if caller_status is None:
                caller = obj.symbols[ref.caller]
                return NotThrough(Obstacle.UNCOMPARED_CALLER,
                                  f"{obj.symbols[g].name} is called from {caller.name or f'symbol {caller.index}'} "
                                  f"(in {obj.sections[caller.shndx].name}), which klpdiff does not compare")
            if caller_status == NEW:
                continue  # new code: the livepatch carries it, and its call reaches the new copy
            if ref.caller in cmp.ftrace_p:
                callers.add(ref.caller)
            else:
                todo.append(ref.caller)
        if g != f and cmp.status.get(g, SAME) == SAME:
            via.add(g)
    return Redirect(tuple(sorted(callers)), tuple(sorted(via)), tuple(sorted(calls)))
