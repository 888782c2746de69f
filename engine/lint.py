"""`klpdiff rules lint`: find mistakes in rule files before a livepatch is built with them.

In: rule folders (shared `*.yaml` and `<arch>/*.yaml`). Out: `Finding`s, each one
line `file:line:col: error|warning: message`, every problem reported once:

errors   — YAML syntax, schema violations (every one pydantic finds), expression
           and regular-expression errors, byte patterns, relocation type names
           unknown to the arch, an arch set that does not load;
warnings — dead special-section rules (another section role claims that name
           first), special-section rules overridden by a later rule for the same
           name, relocation numbers defined twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import Origin, RuleError
from .model import SHF_ALLOC, Section
from .rulemodels import ArchRule, RuleFile
from .ruleset import LoadedDoc, Ruleset, add_doc, load_ruleset
from .ruleyaml import position, read_yaml, validation_messages
from .views import SectionEnv, SectionView


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    where: str  # file:line:col
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.level}: {self.message}"


_WHERE = re.compile(r"^(?P<where>.+?:\d+(?::\d+)?): (?P<msg>.*)$")


def _finding(level: str, text: str, default_where: str) -> Finding:
    m = _WHERE.match(text)
    if m:
        return Finding(level, m.group("where"), m.group("msg"))
    return Finding(level, default_where, text)


def lint_files(files: list[Path]) -> list[Finding]:
    """Per-file checks: YAML, schema (all errors), expressions (all errors)."""
    findings: list[Finding] = []
    for path in files:
        try:
            data, where = read_yaml(path)
        except RuleError as err:
            findings.append(_finding("error", str(err), f"{path}:1:1"))
            continue
        if not isinstance(data, dict):
            findings.append(Finding("error", f"{path}:1:1", "a rule file is a mapping with 'kind:' at the top"))
            continue
        try:
            doc = RuleFile.model_validate({"doc": data}).doc
        except ValidationError as err:
            findings.extend(_finding("error", m, f"{path}:1:1") for m in validation_messages(path, err, where))
            continue
        loaded = LoadedDoc(path, doc, where, errors=[])
        add_doc(_scratch_ruleset(doc), loaded)
        findings.extend(_finding("error", e, f"{path}:1:1") for e in loaded.errors or [])
        if doc.kind == "relocations":
            seen: dict[int, int] = {}
            for i, rt in enumerate(doc.types):
                if rt.number in seen:
                    line, col = position(where, ("types", i))
                    findings.append(Finding("warning", f"{path}:{line}:{col}",
                                            f"relocation number {rt.number} ({rt.name}) is defined again "
                                            f"(first as {doc.types[seen[rt.number]].name})"))
                seen.setdefault(rt.number, i)
    return findings


def _scratch_ruleset(doc: Any) -> Ruleset:
    arch = doc if isinstance(doc, ArchRule) else ArchRule.model_validate(
        {"kind": "arch", "name": "lint", "machine": 0, "endian": "little", "abs64": "none",
         "toolchain": {"prefix": ""}})
    return Ruleset(arch=arch, arch_origin=Origin("lint", 0))


def lint_arch(dirs: list[Path], arch: str) -> list[Finding]:
    """Checks across the files one arch loads: the set loads, no rule is dead or silently overridden."""
    try:
        rs = load_ruleset(dirs, arch)
    except RuleError as err:
        return [_finding("error", str(err), f"{dirs[0]}/{arch}:1:1")]
    findings = []
    claimed: dict[str, Origin] = {}
    for spec in rs.special:
        name = spec.rule.name
        if name.startswith("^"):
            continue
        probe = SectionEnv(SectionView(Section(0, name, 1, SHF_ALLOC, 1, 0, 0, 0, 0, b"")))
        role = _other_role(rs, name, probe)
        if role:
            findings.append(Finding("warning", str(spec.origin),
                                    f"dead rule ({arch}): section {name} is {role} first, so this rule never applies"))
        if name in claimed:
            findings.append(Finding("warning", str(claimed[name]),
                                    f"rule for {name} ({arch}) is overridden by {spec.origin}"))
        claimed[name] = spec.origin
        for other in rs.special:
            if other is not spec and other.rule.name.startswith("^") and other.matches(name) \
                    and rs.special.index(other) > rs.special.index(spec):
                findings.append(Finding("warning", str(spec.origin),
                                        f"rule for {name} ({arch}) is overridden by {other.origin}"))
    return findings


def _other_role(rs: Ruleset, name: str, probe: SectionEnv) -> str:
    if any(p.test(probe) for p in rs.ignore):
        return "ignored (sections.yaml ignore)"
    if any(p.test(probe) for p in rs.carry):
        return "carried whole (sections.yaml carry)"
    if any(m.section.search(name) for m in rs.markers):
        return "a marker section (sections.yaml markers)"
    if any(f.section.search(name) for f in rs.string_filters):
        return "string-filtered (sections.yaml strings)"
    if name == rs.arch.ftrace.regenerate:
        return "rebuilt as the ftrace record list (arch.yaml ftrace.regenerate)"
    return ""


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
    if any(f.level == "error" for f in findings):
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

