"""`klpdiff rules lint`: find mistakes in rule files before a livepatch is built with them.

In: rule folders (shared `*.yaml` and `<arch>/*.yaml`). Out: `Finding`s, each one
line `file:line:col: error|warning: message [check]`, every problem reported once.
Each check is a small class with a name, a level and a hint (`FILE_CHECKS` run on
each file in order, `ARCH_CHECKS` on the rule set each arch loads):

errors   — YAML syntax, schema violations (every one pydantic finds), expression
           and regular-expression errors, instruction templates, relocation type names
           unknown to the arch, an arch set that does not load;
warnings — dead special-section rules (another section role claims that name
           first), special-section rules overridden by a later rule for the same
           name, relocation numbers defined twice.
"""

from __future__ import annotations

import re
from dataclasses import field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

from ..core.errors import Origin, RuleError
from ..core.records import record
from ..elf.model import SHF_ALLOC, Section
from ..lang.views import SectionEnv, SectionView
from ..ruleset.compile import LoadedDoc, add_doc
from ..ruleset.compiled import Ruleset, SpecialSection
from ..ruleset.load import load_ruleset
from ..ruleset.schema import ArchRule, ToolchainRule
from ..ruleset.source import Position, position, read_yaml, validate_doc, validation_messages


class Level(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@record
class Finding:
    check: str  # the name of the check that found it
    level: Level
    where: str  # file:line:col
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.level}: {self.message} [{self.check}]"


_WHERE = re.compile(r"^(?P<where>.+?:\d+(?::\d+)?): (?P<msg>.*)$")


@record(frozen=False)
class FileState:
    """One rule file as the file checks see it: its data and positions once read, its document once
    it fits the schema."""

    path: Path
    data: Any = None
    where: dict[tuple[Any, ...], Position] = field(default_factory=dict)
    doc: Any = None


class Check:
    """A lint check: a name (printed after each finding), a level, and a hint for the author."""

    name: ClassVar[str]
    level: ClassVar[Level]
    hint: ClassVar[str]

    def finding(self, text: str, default_where: str) -> Finding:
        """A finding from a `file:line:col: message` text (or a bare message at `default_where`)."""
        m = _WHERE.match(text)
        if m:
            return Finding(self.name, self.level, m.group("where"), m.group("msg"))
        return Finding(self.name, self.level, default_where, text)


class FileCheck(Check):
    """A check of one file. Returning findings of level error stops the later checks of that file."""

    def run(self, state: FileState) -> list[Finding]:
        raise NotImplementedError


class ReadsAsYaml(FileCheck):
    name, level, hint = "yaml", Level.ERROR, "a rule file is UTF-8 YAML: a mapping with 'kind:' at the top"

    def run(self, state: FileState) -> list[Finding]:
        try:
            state.data, state.where = read_yaml(state.path)
        except RuleError as err:
            return [self.finding(str(err), f"{state.path}:1:1")]
        if not isinstance(state.data, dict):
            return [Finding(self.name, self.level, f"{state.path}:1:1", "a rule file is a mapping with 'kind:' "
                                                                         "at the top")]
        return []


class FitsTheSchema(FileCheck):
    name, level, hint = "schema", Level.ERROR, "docs/rules.md lists every kind and every key it takes"

    def run(self, state: FileState) -> list[Finding]:
        try:
            state.doc = validate_doc(state.data)
        except ValidationError as err:
            return [self.finding(m, f"{state.path}:1:1") for m in validation_messages(state.path, err, state.where)]
        return []


class Compiles(FileCheck):
    name, level, hint = ("compile", Level.ERROR, "expressions, regular expressions and templates: "
                         "docs/rules.md, 'The predicate language'")

    def run(self, state: FileState) -> list[Finding]:
        loaded = LoadedDoc(state.path, state.doc, state.where, errors=[])
        add_doc(_scratch_ruleset(state.doc), loaded)
        return [self.finding(e, f"{state.path}:1:1") for e in loaded.errors or []]


class RelocationNumbersOnce(FileCheck):
    name, level, hint = ("relocation-number", Level.WARNING, "each relocation type number is defined once per "
                         "arch (binutils' include/elf/<arch>.h has the numbers)")

    def run(self, state: FileState) -> list[Finding]:
        doc = state.doc
        if doc.kind != "relocations":
            return []
        out: list[Finding] = []
        seen: dict[int, int] = {}
        for i, rt in enumerate(doc.types):
            if rt.number in seen:
                line, col = position(state.where, ("types", i))
                out.append(Finding(self.name, self.level, f"{state.path}:{line}:{col}",
                                   f"relocation number {rt.number} ({rt.name}) is defined again "
                                   f"(first as {doc.types[seen[rt.number]].name})"))
            seen.setdefault(rt.number, i)
        return out


FILE_CHECKS: list[FileCheck] = [ReadsAsYaml(), FitsTheSchema(), Compiles(), RelocationNumbersOnce()]


def lint_files(files: list[Path]) -> list[Finding]:
    """Each file through the file checks in order, as far as it gets without an error."""
    findings: list[Finding] = []
    for path in files:
        state = FileState(path)
        for check in FILE_CHECKS:
            found = check.run(state)
            findings.extend(found)
            if any(f.level is Level.ERROR for f in found):
                break
    return findings


def _scratch_ruleset(doc: Any) -> Ruleset:
    arch = doc if isinstance(doc, ArchRule) else ArchRule(
        kind="arch", name="lint", machine=0, endian="little", abs64="none", toolchain=ToolchainRule(prefix=""))
    return Ruleset(arch=arch, arch_origin=Origin("lint", 0))


class ArchCheck(Check):
    """A check of the rule set one arch loads."""

    def run(self, rs: Ruleset, arch: str) -> list[Finding]:
        raise NotImplementedError


def _named_special_rules(rs: Ruleset) -> list[tuple[SpecialSection, str]]:
    """The special-section rules that name one section exactly (not by a ^pattern), with that name."""
    return [(spec, spec.rule.name) for spec in rs.special if not spec.rule.name.startswith("^")]


class SpecialRuleApplies(ArchCheck):
    name, level, hint = ("dead-rule", Level.WARNING, "a section has one role: the ignore, carry, markers and "
                         "strings lists of sections.yaml and arch.yaml ftrace.regenerate come first")

    def run(self, rs: Ruleset, arch: str) -> list[Finding]:
        out = []
        for spec, name in _named_special_rules(rs):
            probe = SectionEnv(SectionView(Section(0, name, 1, SHF_ALLOC, 1, 0, 0, 0, 0, b"")))
            role = _other_role(rs, name, probe)
            if role:
                out.append(Finding(self.name, self.level, str(spec.origin),
                                   f"dead rule ({arch}): section {name} is {role} first, so this rule never applies"))
        return out


class SpecialRuleNotOverridden(ArchCheck):
    name, level, hint = ("overridden", Level.WARNING, "the last rule for a section wins (arch files after shared "
                         "ones, --rules folders last): remove or merge the earlier one")

    def run(self, rs: Ruleset, arch: str) -> list[Finding]:
        out = []
        claimed: dict[str, Origin] = {}
        for spec, name in _named_special_rules(rs):
            if name in claimed:
                out.append(Finding(self.name, self.level, str(claimed[name]),
                                   f"rule for {name} ({arch}) is overridden by {spec.origin}"))
            claimed[name] = spec.origin
            for other in rs.special:
                if other is not spec and other.rule.name.startswith("^") and other.matches(name) \
                        and rs.special.index(other) > rs.special.index(spec):
                    out.append(Finding(self.name, self.level, str(spec.origin),
                                       f"rule for {name} ({arch}) is overridden by {other.origin}"))
        return out


ARCH_CHECKS: list[ArchCheck] = [SpecialRuleApplies(), SpecialRuleNotOverridden()]


class LoadsTogether(Check):
    name, level, hint = ("loads", Level.ERROR, "every arch folder has an arch.yaml, and the names one file uses "
                         "(relocation types) are defined by the files loaded with it")


def lint_arch(dirs: list[Path], arch: str) -> list[Finding]:
    """Checks across the files one arch loads: the set loads, no rule is dead or silently overridden."""
    try:
        rs = load_ruleset(dirs, arch)
    except RuleError as err:
        return [LoadsTogether().finding(str(err), f"{dirs[0]}/{arch}:1:1")]
    return [f for check in ARCH_CHECKS for f in check.run(rs, arch)]


def _other_role(rs: Ruleset, name: str, probe: SectionEnv) -> str:
    if any(p.test(probe) for p in rs.ignore.items):
        return "ignored (sections.yaml ignore)"
    if any(p.test(probe) for p in rs.carry.items):
        return "carried whole (sections.yaml carry)"
    if any(m.section.search(name) for m in rs.markers):
        return "a marker section (sections.yaml markers)"
    if any(f.section.search(name) for f in rs.string_filters):
        return "string-filtered (sections.yaml strings)"
    if name == rs.arch.ftrace.regenerate:
        return "rebuilt as the ftrace record list (arch.yaml ftrace.regenerate)"
    return ""


def hints(findings: list[Finding]) -> list[str]:
    """One hint line per check that found something."""
    checks: list[Check] = [*FILE_CHECKS, *ARCH_CHECKS, LoadsTogether()]
    named = {c.name: c.hint for c in checks}
    return [f"[{name}] {named[name]}" for name in dict.fromkeys(f.check for f in findings)]


def rule_files_in(dirs: list[Path]) -> list[Path]:
    files = []
    for d in dirs:
        files.extend(sorted(d.glob("*.yaml")))
        files.extend(sorted(p for p in d.glob("*/*.yaml") if (p.parent / "arch.yaml").exists()
                            or p.name == "arch.yaml"))
    return files


def lint(targets: list[Path], base: list[Path]) -> list[Finding]:
    """Lint the files of `targets`; cross-file checks load `base` + `targets` per arch."""
    findings = lint_files(rule_files_in(targets))
    if any(f.level is Level.ERROR for f in findings):
        return findings  # cross-file checks need every file to load
    dirs = base + [t for t in targets if t not in base]
    arches = sorted({p.parent.name for d in dirs for p in d.glob("*/arch.yaml")})
    for arch in arches:
        findings.extend(lint_arch(dirs, arch))
    unique: list[Finding] = []
    for f in findings:
        if f not in unique:
            unique.append(f)
    return unique

