"""Every command but the differ's own: `build`, `module`, `post-link`, `explain` and the rule author's
`rules lint|audit|show|test`.

In: the command line after `klpdiff`. Out: what the command made (a module, a rewritten module), text
on stdout (findings, the effective rule set, case results, explanations) and an exit code: 0 when all
is well, 1 on errors (lint errors, failed cases, bad usage), and `klpdiff build`'s verdict otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

from ..authoring.audit import audit
from ..authoring.cases import case_files, load_case, run_case
from ..authoring.explain import explain
from ..authoring.lint import Level, hints, lint
from ..build.command import BuildOptions, build
from ..build.report import build_json, build_summary
from ..core.errors import EXIT_BAD_INPUT, EXIT_OK, InputError, one_line
from ..core.inputs import input_folder, input_path
from ..core.installation import ENGINE_ROOT
from ..core.outputs import check_outputs, output_path, stale_output
from ..diff.pipeline import Options, analyse
from ..diff.report import write_json
from ..klp.module import build_module
from ..klp.postlink import post_link
from ..ruleset.compiled import Ruleset
from ..ruleset.load import default_rules_dir, known_arches, load_ruleset, rule_dirs
from .args import Parser, add_rules_option


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="klpdiff", description="Rule authoring and diagnosis.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_rules_commands(sub)
    _add_explain_and_post_link(sub)
    _add_build(sub)
    _add_module(sub)
    return p


def _add_rules_commands(sub: argparse._SubParsersAction[Parser]) -> None:
    """`klpdiff rules lint|audit|show|test`."""
    rules = sub.add_parser("rules", help="check, list and test rule files")
    rsub = rules.add_subparsers(dest="action", required=True)
    lint_p = rsub.add_parser("lint", help="schema, expression and consistency checks")
    lint_p.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                        help="rule folders to check (default: the built-in rules)")
    audit_p = rsub.add_parser("audit", help="the role of every section of real objects, and the rule behind it")
    audit_p.add_argument("objects", nargs="+", type=input_path, metavar="OBJ.o")
    audit_p.add_argument("--arch", help="expected architecture (default: from the ELF header)")
    add_rules_option(audit_p)
    show_p = rsub.add_parser("show", help="the effective rule set of an arch, with where each rule comes from")
    show_p.add_argument("--arch", required=True)
    add_rules_option(show_p)
    test_p = rsub.add_parser("test", help="compile and check rule cases (YAML with C sources)")
    test_p.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                        help="folders of cases (default: tests/rules of this checkout)")
    test_p.add_argument("--arch", action="append", default=[], help="only these arches")
    add_rules_option(test_p)
    test_p.add_argument("--include", type=Path, action="append", default=[], metavar="DIR",
                        help="header folder for the cases (default: DIR/include/<arch> and DIR/include/common)")


def _add_explain_and_post_link(sub: argparse._SubParsersAction[Parser]) -> None:
    """`klpdiff explain` and `klpdiff post-link`."""
    ex = sub.add_parser("explain", help="why a symbol or special-section entry is changed, included or refused")
    ex.add_argument("orig", type=input_path, metavar="ORIG.o")
    ex.add_argument("patched", type=input_path, metavar="PATCHED.o")
    ex.add_argument("query", metavar="SYMBOL|SECTION[N]")
    add_rules_option(ex)
    ex.add_argument("--module", action="store_true")
    pl = sub.add_parser("post-link", help="turn .klpdiff.relocs into .klp.rela sections in a linked module")
    pl.add_argument("module", type=input_path, metavar="MODULE.ko")
    pl.add_argument("-o", "--output", type=output_path, metavar="OUT.ko", help="write here instead of in place")


def _add_build(sub: argparse._SubParsersAction[Parser]) -> None:
    """`klpdiff build`."""
    bd = sub.add_parser("build", help="from source patches to a livepatch module, for a kernel tree you built or "
                                      "a distribution's stock kernel")
    bd.add_argument("patches", nargs="+", type=input_path, metavar="FIX.patch")
    target = bd.add_mutually_exclusive_group()
    target.add_argument("--kdir", type=Path,
                        help="the configured and built kernel tree the running kernel came from")
    target.add_argument("--kernel", metavar="RELEASE",
                        help="a distribution's stock kernel, as `uname -r` prints it: its packages are fetched "
                             "into klpdiff's cache and its source prepared once (default, without --kdir: the "
                             "running kernel)")
    bd.add_argument("--source", type=Path, metavar="TREE|TARBALL",
                    help="with --kernel: the source the kernel was built from, when the archive lacks that version")
    bd.add_argument("--skip-compiler-check", action="store_true",
                    help="with --kernel: build with this machine's compiler though it is not the one that built "
                         "the kernel")
    bd.add_argument("--name", help="the patch name: the module is livepatch-NAME.ko (default: the first "
                                   "patch's file name)")
    bd.add_argument("-o", "--output", type=output_path, help="default: ./livepatch-NAME.ko")
    bd.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2, help="compiles and diffs at a time")
    bd.add_argument("--fuzz", type=int, help="let patch apply hunks with this much fuzz (GNU patch --fuzz)")
    bd.add_argument("--json", type=output_path, metavar="REPORT", help="also write the report as JSON")
    bd.add_argument("--workdir", type=Path, help="keep the shadow trees, objects and diffs here")
    bd.add_argument("--vmlinux", type=input_path, help="the running kernel's vmlinux (default: KDIR/vmlinux), e.g. "
                                                 "a distribution's debug vmlinux")
    bd.add_argument("--symvers", type=input_path, help="its Module.symvers (default: KDIR/Module.symvers)")
    bd.add_argument("--module-kdir", type=Path, help="build the module against this tree (default: KDIR), e.g. "
                                                     "the running kernel's headers package")
    bd.add_argument("--modules", type=Path, help="where the running kernel's modules are (e.g. /lib/modules/"
                                                 "$(uname -r)), for objects of a module")
    bd.add_argument("--check", action="store_true",
                    help="find, compile and diff only: the verdicts, without livepatch relocations or a module "
                         "(works on a tree that has no vmlinux yet)")
    add_rules_option(bd)
    bd.add_argument("--allow-layout-change", action="append", default=[], metavar="TYPE",
                    help="the livepatch may use TYPE ('struct foo') though the patch changes its layout; may repeat")
    bd.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _add_module(sub: argparse._SubParsersAction[Parser]) -> None:
    """`klpdiff module`."""
    mo = sub.add_parser("module", help="build livepatch-NAME.ko from diff objects with the kernel's kbuild")
    mo.add_argument("diffs", nargs="+", type=input_path, metavar="DIFF.o")
    mo.add_argument("--kdir", type=Path, required=True, help="kernel build tree (where `make modules` works)")
    mo.add_argument("--name", required=True, help="the patch name: the module is livepatch-NAME.ko")
    mo.add_argument("--arch", help="ARCH= for kbuild (default: kbuild's own)")
    mo.add_argument("--no-replace", action="store_true", help="stack on earlier livepatches instead of replacing")
    mo.add_argument("--workdir", type=Path, help="keep the generated sources and kbuild output here")
    mo.add_argument("-o", "--output", type=output_path, help="default: ./livepatch-NAME.ko")


def run_tool(argv: list[str]) -> int:
    args, extra = _parser().parse_known_args(argv)
    if extra:  # said by the command that was given, which has the help to see
        words = ["klpdiff", args.command, *([args.action] if getattr(args, "action", None) else [])]
        Parser(prog=" ".join(words)).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "build":
        return _build(args)
    if args.command == "module":
        out = args.output or Path(f"livepatch-{args.name}.ko")
        check_outputs([out], args.diffs)
        try:
            build_module(args.diffs, args.kdir, args.name, out, args.arch, not args.no_replace, args.workdir)
        except BaseException:
            stale_output(out)
            raise
        print(f"wrote {out}")
        return EXIT_OK
    if args.command == "post-link":
        check_outputs([args.output], [])
        count = post_link(args.module, args.output)
        print(f"{args.output or args.module}: {count} livepatch relocation(s)")
        return EXIT_OK
    if args.command == "explain":
        a = analyse(args.orig, args.patched, Options(rules_dirs=args.rules, patching_module=args.module))
        print("\n".join(explain(a, args.query)))
        return EXIT_OK
    if args.action == "lint":
        return _lint(args.dirs)
    if args.action == "audit":
        result = audit(args.objects, rule_dirs(args.rules), args.arch)
        print("\n".join(result.lines()))
        if result.unknown:
            print(f"{len(result.unknown)} section name(s) no rule describes", file=sys.stderr)
            return EXIT_BAD_INPUT
        return EXIT_OK
    if args.action == "show":
        print(show(load_ruleset(rule_dirs(args.rules), args.arch)))
        return EXIT_OK
    return _test(args)


def _build(args: argparse.Namespace) -> int:
    name = args.name or _patch_name(args.patches[0])
    if args.source is not None and args.kdir is not None:
        raise InputError("--source goes with --kernel (a stock kernel); with --kdir the tree is the source")
    opts = BuildOptions(kdir=args.kdir, patches=args.patches, name=name,
                        output=args.output or Path(f"livepatch-{name}.ko"), jobs=args.jobs, fuzz=args.fuzz,
                        workdir=args.workdir, rules_dirs=rule_dirs(args.rules), check=args.check,
                        vmlinux=args.vmlinux, symvers=args.symvers, module_kdir=args.module_kdir,
                        modules=args.modules, allow_layout_changes=args.allow_layout_change,
                        kernel=args.kernel, source=args.source, skip_compiler_check=args.skip_compiler_check)
    quiet = args.quiet
    check_outputs([None if args.check else opts.output, args.json], list(args.patches))

    def progress(line: str) -> None:
        if not quiet:
            print(f"klpdiff build: {line}", file=sys.stderr, flush=True)

    written = False
    try:
        result = build(opts, progress)
        code = result.verdict.exit_code
        if not quiet:
            print(build_summary(result), file=sys.stderr if code else sys.stdout)
        if args.json:
            write_json(args.json, build_json(result))
        written = result.module is not None
        return code
    finally:
        if not written and not args.check:  # exit 0 with a module if and only if the module is this run's
            stale_output(opts.output)


def _patch_name(patch: Path) -> str:
    stem = re.sub(r"^[0-9]{4}-", "", patch.name.removesuffix(".patch").removesuffix(".diff"))
    return re.sub(r"[^A-Za-z0-9_-]", "-", stem)[:50] or "fix"


def _lint(dirs: list[Path]) -> int:
    base = [default_rules_dir()]
    targets = [input_folder(d, "a folder of rule files") for d in dirs] or base
    findings = lint(targets, base)
    for f in findings:
        print(f)
    errors = sum(1 for f in findings if f.level is Level.ERROR)
    warnings = len(findings) - errors
    print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    for line in hints(findings):
        print(f"hint {line}", file=sys.stderr)
    return EXIT_BAD_INPUT if errors else EXIT_OK


def show(rs: Ruleset) -> str:
    """The effective rules, one block per kind, each line ending with where the rule came from."""
    a = rs.arch
    lines = [f"arch {a.name}: machine {a.machine}, {a.endian}-endian, ELF{a.elfclass} [{rs.arch_origin}]",
             f"  ftrace: calls {a.ftrace.calls or '-'} within {a.ftrace.within} bytes, records "
             f"{a.ftrace.records or '-'}, rebuilt list {a.ftrace.regenerate or '-'}",
             "files:"]
    lines.extend(f"  {f}" for f in rs.files)
    lines.append(f"relocation types ({len(rs.reloc_types)}):")
    for number, rt in sorted(rs.reloc_types.items()):
        extra = ", ".join(x for x in (
            "pc-relative" if rt.pcrel else "", f"text bias {rt.text_bias}" if rt.text_bias else "",
            f"bits {rt.bits:#x}" if rt.bits is not None else "", f"via {rt.via} entries" if rt.via else "") if x)
        lines.append(f"  {number:4d} {rt.name}: {rt.width} bytes" + (f", {extra}" if extra else ""))
    lines.append("special sections (a later rule for the same name wins):")
    for spec in rs.special:
        sizes = "/".join(str(lay.size) for lay in spec.rule.layouts)
        keep = spec.rule.keep or "default (a relocation targets an included function)"
        comp = f", companion {spec.rule.companion.section}" if spec.rule.companion else ""
        derived = ", made from the code (not compared)" if spec.rule.derived_from_code else ""
        lines.append(f"  {spec.rule.name}: struct {spec.struct} {sizes} bytes, keep {keep}"
                     f"{', drop ' + str(len(spec.drop)) if spec.drop else ''}"
                     f"{', refuse ' + str(len(spec.refuse)) if spec.refuse else ''}{comp}{derived} [{spec.origin}]")
    lines.append("refusals:")
    lines.extend(f"  [{r.origin}]" for r in rs.refusals)
    lines.extend(f"  relocation {'/'.join(r.type_names)}{' on a matching instruction' if r.pattern else ''} "
                 f"[{r.origin}]" for r in rs.reloc_refusals)
    if rs.local_calls:
        lines.append("local calls (the callee is copied as a helper):")
        lines.extend(f"  relocation {'/'.join(r.type_names)}{' on a matching instruction' if r.pattern else ''} "
                     f"[{r.origin}]" for r in rs.local_calls)
    lines.append("__LINE__ noise:")
    noise = rs.line_noise
    lines.append(f"  {len(noise.loads)} load form(s) [{noise.loads_origin}]; without line tables: sinks "
                 f"/{noise.sinks.pattern if noise.sinks else ''}/ [{noise.calls_origin}], "
                 f"{len(noise.strings)} string pattern(s) [{noise.strings_origin}]")
    lines.append(f"correlation: {len(rs.normalize)} normalisations, {len(rs.fresh)} fresh rules, "
                 f"{len(rs.child)} child patterns, {len(rs.anonymous)} anonymous rules")
    lines.append(f"sections: {len(rs.ignore)} ignore, {len(rs.carry)} carry, {len(rs.offset_free)} offset-free, "
                 f"{len(rs.markers)} markers, {len(rs.string_filters)} string filters")
    return "\n".join(lines)


def _test(args: argparse.Namespace) -> int:
    roots = args.dirs or [ENGINE_ROOT.parent / "tests" / "rules"]
    missing = [r for r in roots if not r.exists()]
    if missing:
        print(one_line(f"klpdiff: {missing[0]}: no such folder of rule cases (name one: klpdiff rules test DIR)"),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    rules = rule_dirs(args.rules)
    passed = failed = skipped = 0
    with tempfile.TemporaryDirectory(prefix="klpdiff-rules-test-") as tmp:
        for root in roots:
            for path in case_files(root):
                if path.parent.name == "include" or "include" in path.parts[len(root.parts):]:
                    continue
                case = load_case(path)
                for arch in case.arches():
                    if args.arch and arch not in args.arch:
                        continue
                    if arch not in known_arches(rules):
                        print(f"SKIP {arch}/{path.stem}: no rules for {arch}")
                        skipped += 1
                        continue
                    includes = args.include or [root / "include" / arch, root / "include" / "common"]
                    result = run_case(path, arch, Path(tmp) / arch / path.stem, args.rules, includes)
                    if result.skipped:
                        print(f"SKIP {arch}/{path.stem}: {result.skipped}")
                        skipped += 1
                    elif result.failures:
                        print(f"FAIL {arch}/{path.stem}: {'; '.join(result.failures)}")
                        failed += 1
                    else:
                        print(f"PASS {arch}/{path.stem}")
                        passed += 1
    print(f"rules: {passed} passed, {failed} failed, {skipped} skipped")
    return EXIT_BAD_INPUT if failed else EXIT_OK
