"""Rule cases: small C programs compiled twice (without and with -DPATCHED) and diffed.

A case is a YAML file:

    arch: x86_64                 # or a list; the arch whose toolchain compiles it
    about: what rule it proves
    source: |                    # C; `#ifdef PATCHED` marks the change
      #include "kernel.h"
      ...
    expect:
      verdict: ok                # ok | no-change | error
      functions: [f, g]          # exact defined functions of the output
      entries: {__bug_table: 1}  # entries kept per special section
      refusal: 'regex'           # for verdict error: one reason must match
      line_noise: [h]            # functions forgiven as __LINE__-only changes
      line_noise_basis: heuristic  # how all of them were judged: line-table | heuristic
      sections: [.modinfo]       # sections the output must have
      section_at_most: {.data..once: 8}  # the most bytes an output section may have
      strings: {.modinfo: ["import_ns=X"]}  # exact strings of a string-filtered section
      rewritten: 1               # boot-only code sites rewritten into module-safe code
      absent_bytes: ["ef cd ab"] # byte strings no output section may contain
      callbacks: ["vmlinux pre_patch f"]  # the callbacks the output lists for klpdiff module
      helpers: [g]               # exact unchanged functions copied as helpers (relocations.yaml local_calls)
      through_callers: {f: [g]}  # changed functions with no ftrace site, and the callers patched instead
      undefined: [g]             # symbols the output must reference without defining them
      layout_check: checked      # checked | no-debug-info | not-needed
      layout_changes: [struct s] # exact changed types the included code reaches
      layout_allowed: [struct s] # exact changed types the author allowed

In: a case file, a work folder, rule folders. Out: a list of failures (empty = pass).
The compiler is `<arch.toolchain.prefix>gcc` with the arch's kernel-style flags.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import RuleError, Verdict
from ..core.records import record
from ..diff.layoutcheck import LayoutStatus
from ..diff.linenoise import NoiseBasis
from ..diff.pipeline import Analysis, Options, Outcome, run
from ..klp.symbols import CALLBACKS_SECTION
from ..ruleset.load import load_ruleset, rule_dirs
from ..ruleset.source import read_yaml


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: Verdict
    functions: list[str] | None = None
    entries: dict[str, int] = Field(default_factory=dict)
    refusal: str | None = None
    line_noise: list[str] = Field(default_factory=list)
    line_noise_basis: NoiseBasis | None = None
    sections: list[str] = Field(default_factory=list)
    section_at_most: dict[str, int] = Field(default_factory=dict)
    strings: dict[str, list[str]] = Field(default_factory=dict)
    rewritten: int | None = None  # boot-only code sites rewritten (bootsites.py)
    absent_bytes: list[str] = Field(default_factory=list)  # hex strings no output section may contain
    callbacks: list[str] | None = None  # the output's .klpdiff.callbacks lines: "object kind function"
    helpers: list[str] | None = None  # unchanged functions copied as helpers
    through_callers: dict[str, list[str]] | None = None  # function -> the callers patched in its place
    undefined: list[str] = Field(default_factory=list)  # names the output references but does not define
    layout_check: LayoutStatus | None = None  # whether the type layouts were compared
    layout_changes: list[str] | None = None  # the changed types the included code reaches (allowed or not)
    layout_allowed: list[str] | None = None  # those the author allowed


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: str | list[str]
    about: str
    source: str
    cflags: list[str] = Field(default_factory=list)
    expect: Expect

    def arches(self) -> list[str]:
        return [self.arch] if isinstance(self.arch, str) else list(self.arch)


@record(frozen=False)
class CaseResult:
    path: Path
    arch: str
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None
    outcome: Outcome | None = None


def load_case(path: Path) -> Case:
    try:
        data, _where = read_yaml(path, "a rule case")
        return Case.model_validate(data)
    except ValidationError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RuleError(f"{path}: bad rule case: {first}") from err


def case_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.yaml")) if root.is_dir() else [root]


def compiler_for(rules_dirs: list[Path], arch: str) -> tuple[str | None, list[str], str]:
    """The arch's cross compiler (None: not installed), its flags, and the toolchain's prefix."""
    rs = load_ruleset(rules_dirs, arch)
    tc = rs.arch.toolchain
    return shutil.which(tc.prefix + "gcc"), list(tc.cflags), tc.prefix


def run_case(path: Path, arch: str, work: Path, extra_rules: list[Path], include_dirs: list[Path]) -> CaseResult:
    """Compile and diff one case for `arch` with the shipped rules plus `extra_rules` (as --rules)."""
    case = load_case(path)
    result = CaseResult(path, arch)
    cc, cflags, prefix = compiler_for(rule_dirs(extra_rules), arch)
    if cc is None:
        result.skipped = f"no compiler for {arch} (install the Debian cross toolchain)"
        return result
    work.mkdir(parents=True, exist_ok=True)
    src = work / (path.stem + ".c")
    src.write_text(case.source)
    objs = []
    for variant, defines in (("orig", []), ("patched", ["-DPATCHED"])):
        obj = work / f"{path.stem}.{variant}.o"
        cmd = [cc, *cflags, *case.cflags, *defines, *(f"-I{d}" for d in include_dirs), "-c", str(src),
               "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="surrogateescape")
        if proc.returncode != 0:
            result.failures.append(f"compile ({variant}) failed: {proc.stderr.strip()[:2000]}")
            return result
        objs.append(obj)
    out = work / f"{path.stem}.out.o"
    outcome = run(objs[0], objs[1], out, Options(rules_dirs=extra_rules))
    result.outcome = outcome
    result.failures.extend(check(case.expect, outcome))
    if outcome.output is not None and not result.failures:
        result.failures.extend(object_failures(outcome.output, prefix))
    return result


def object_failures(output: Path, prefix: str) -> list[str]:
    """Is the written object sound as the arch's own binutils see it? `<prefix>readelf -aW` reads it without a
    warning, `<prefix>ld -r` links it, and no assembler label (`.L*`) became an undefined symbol (a
    linker would accept it; the module loader would not)."""
    from ..elf.read import read_elf

    labels = sorted(s.name for s in read_elf(output).symbols if not s.is_defined and s.name.startswith(".L"))
    failures = [f"written object: assembler label(s) left undefined: {', '.join(labels)}"] if labels else []
    for tool, args in (("readelf", ["-aW", str(output)]), ("ld", ["-r", str(output), "-o", str(output) + ".r"])):
        path = shutil.which(prefix + tool)
        if path is None:
            failures.append(f"written object not checked: no {prefix}{tool} (install the Debian cross binutils)")
            continue
        proc = subprocess.run([path, *args], capture_output=True, text=True, errors="surrogateescape")
        if proc.returncode != 0 or proc.stderr.strip():
            failures.append(f"written object: {prefix}{tool} {args[0]}: {proc.stderr.strip()[:500] or 'failed'}")
    return failures


def _layout_failures(expect: Expect, a: Analysis) -> list[str]:
    failures = []
    if expect.layout_check is not None and a.layout.status is not expect.layout_check:
        failures.append(f"layout check {a.layout.status.value}, expected {expect.layout_check.value}")
    for want, got in ((expect.layout_changes, [f.change.name for f in a.layout.findings]),
                      (expect.layout_allowed, [f.change.name for f in a.layout.findings if f.allowed])):
        if want is not None and sorted(got) != sorted(want):
            failures.append(f"layout changes {sorted(got)}, expected {sorted(want)}")
    return failures


def check(expect: Expect, outcome: Outcome) -> list[str]:
    """What in the outcome differs from what the case expects (empty: the case passes)."""
    a = outcome.analysis
    if outcome.verdict != expect.verdict:
        why = "; ".join(map(str, a.refused))
        return [f"verdict {outcome.verdict}, expected {expect.verdict}" + (f" ({why})" if why else "")]
    failures: list[str] = []
    if expect.refusal is not None and not any(re.search(expect.refusal, str(r)) for r in a.refused):
        failures.append(f"no refusal matches /{expect.refusal}/ in {[str(r) for r in a.refused]}")
    failures.extend(_layout_failures(expect, a))
    failures.extend(_inclusion_failures(expect, outcome))
    failures.extend(_entry_failures(expect, a))
    failures.extend(_noise_failures(expect, a))
    if outcome.output is not None:
        failures.extend(_output_failures(expect, outcome.output))
    return failures


def _inclusion_failures(expect: Expect, outcome: Outcome) -> list[str]:
    """The functions included, the helpers copied, the functions patched through their callers."""
    a = outcome.analysis
    failures: list[str] = []
    if expect.functions is not None and outcome.verdict is Verdict.OK:
        got = a.included_functions()
        if got != sorted(expect.functions):
            failures.append(f"functions {got}, expected {sorted(expect.functions)}")
    if expect.helpers is not None:
        got_helpers = sorted(a.patched.symbols[i].name for i in a.inc.helpers)
        if got_helpers != sorted(expect.helpers):
            failures.append(f"helpers {got_helpers}, expected {sorted(expect.helpers)}")
    if expect.through_callers is not None:
        got_through = {a.patched.symbols[f].name: sorted(a.patched.symbols[c].name for c in callers)
                       for f, callers in a.inc.through_callers.items()}
        want_through = {f: sorted(callers) for f, callers in expect.through_callers.items()}
        if got_through != want_through:
            failures.append(f"patched through callers {got_through}, expected {want_through}")
    return failures


def _entry_failures(expect: Expect, a: Analysis) -> list[str]:
    """The special-section entries kept (by section name) and the boot-only sites rewritten."""
    kept: dict[str, int] = {}
    for plan in a.inc.special:  # several sections may share a name (one per function, SHF_LINK_ORDER)
        name = a.patched.sections[plan.section].name
        kept[name] = kept.get(name, 0) + len(plan.kept)
    if a.rules.arch.ftrace.regenerate:
        kept[a.rules.arch.ftrace.regenerate] = len(a.inc.records)
    failures = [f"{name}: kept {kept.get(name, 0)} entries, expected {count}"
                for name, count in expect.entries.items() if kept.get(name, 0) != count]
    if expect.rewritten is not None and len(a.sites.edits) != expect.rewritten:
        failures.append(f"{len(a.sites.edits)} site(s) rewritten, expected {expect.rewritten}")
    return failures


def _noise_failures(expect: Expect, a: Analysis) -> list[str]:
    """The functions judged __LINE__-only, and on what basis."""
    noise = sorted(a.patched.symbols[i].name for i in a.cmp.line_noise)
    failures = [f"{name} not recognised as a __LINE__-only change (noise: {noise})"
                for name in expect.line_noise if name not in noise]
    if expect.line_noise_basis is not None:
        failures.extend(f"{a.patched.symbols[i].name}: judged by {basis.value}, not {expect.line_noise_basis.value}"
                        for i, basis in a.cmp.line_noise.items() if basis is not expect.line_noise_basis)
    return failures


def _output_failures(expect: Expect, output: Path) -> list[str]:
    """The output object: its sections, sizes, callbacks, undefined symbols, bytes and strings."""
    from ..elf.read import read_elf

    out = read_elf(output)
    names = {s.name for s in out.sections}
    failures = [f"output has no section {name}" for name in expect.sections if name not in names]
    for name, most in expect.section_at_most.items():
        sec = out.section_by_name(name)
        if sec is None or not 0 < len(sec.data) <= most:
            failures.append(f"output section {name}: {len(sec.data) if sec else 'absent'} bytes, expected "
                            f"1 to {most}")
    if expect.callbacks is not None:
        table = out.section_by_name(CALLBACKS_SECTION)
        got_callbacks = table.data.decode().splitlines() if table is not None else []
        if sorted(got_callbacks) != sorted(expect.callbacks):
            failures.append(f"callbacks {got_callbacks}, expected {expect.callbacks}")
    undefined = {s.name for s in out.symbols if not s.is_defined}
    failures.extend(f"output does not reference {name} undefined (undefined: {sorted(undefined - {''})})"
                    for name in expect.undefined if name not in undefined)
    for text in expect.absent_bytes:
        found = [s.name for s in out.sections if bytes.fromhex(text) in s.data]
        if found:
            failures.append(f"output sections {found} still contain {text}")
    for name, strings in expect.strings.items():
        sec = out.section_by_name(name)
        got_strings = [s.decode() for s in sec.data.split(b"\0") if s] if sec else []
        if got_strings != strings:
            failures.append(f"{name} strings {got_strings}, expected {strings}")
    return failures
