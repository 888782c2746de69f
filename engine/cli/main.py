"""The `klpdiff` command line.

    klpdiff [--arch ARCH] ORIG.o PATCHED.o -o OUT.o [--json REPORT] [--rules DIR]...
            [--struct-size NAME=BYTES]... [--module] [--allow-layout-change TYPE]...
    klpdiff explain ORIG.o PATCHED.o SYMBOL|SECTION[N] [--rules DIR]...
    klpdiff rules lint [DIR...]
    klpdiff rules audit OBJ.o... [--arch ARCH] [--rules DIR]...
    klpdiff rules show --arch ARCH [--rules DIR]...
    klpdiff rules test [DIR...] [--arch ARCH] [--rules DIR]...
    klpdiff post-link MODULE.ko [-o OUT.ko]
    klpdiff module --kdir KDIR --name NAME DIFF.o... [-o livepatch-NAME.ko]
    klpdiff build [--kdir KDIR | --kernel RELEASE] FIX.patch... [--name NAME] [-o livepatch-NAME.ko]
                  [-j N] [--json REPORT] [--source TREE|TARBALL] [--skip-compiler-check]

In: the command line. Out: for a diff, OUT.o and the report (a summary on stdout, or stderr when
refused; --json); the other commands are commands.py's. Exit codes: 0 diff written, 1 bad input or
usage, 2 cannot be livepatched, 3 nothing changed, 4 internal error. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import os
import re
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..core.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, InputError, KlpdiffError, one_line
from ..core.inputs import input_path, input_size
from ..core.outputs import check_outputs, output_path, stale_output
from ..diff.pipeline import Options, run
from ..diff.report import diff_report, report_json, summary, write_json
from .args import Parser, add_rules_option


def _struct_size(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    try:
        size = int(value, 0)
    except ValueError:
        size = -1
    if not sep or not name or size <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=BYTES")
    return name, size


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="klpdiff", description="Diff two kernel objects into a livepatch object. "
               "Other commands: 'klpdiff build', 'klpdiff module', 'klpdiff post-link', "
               "'klpdiff rules lint|audit|show|test', 'klpdiff explain' (each with --help).")
    p.add_argument("--version", action="version", version=f"klpdiff {__version__}")
    p.add_argument("orig", type=input_path, metavar="ORIG.o")
    p.add_argument("patched", type=input_path, metavar="PATCHED.o")
    p.add_argument("-o", "--output", type=output_path, required=True, metavar="OUT.o")
    p.add_argument("--arch", help="expected architecture (default: from the ELF header)")
    p.add_argument("--json", type=output_path, metavar="REPORT", help="also write the report as JSON")
    add_rules_option(p)
    p.add_argument("--struct-size", type=_struct_size, action="append", default=[], metavar="NAME=BYTES",
                   help="entry size of a special-section struct, when it cannot be found")
    p.add_argument("--module", action="store_true",
                   help="the object belongs to a module (not vmlinux): module-owned keys are checked")
    p.add_argument("--symtab", type=input_path, metavar="FILE",
                   help="the running kernel's symbols (vmlinux/.ko, or `readelf -sW` of it): references to "
                        "unexported symbols become livepatch relocations")
    p.add_argument("--symvers", type=input_path, metavar="Module.symvers", help="the kernel's exports")
    p.add_argument("--objname", default="vmlinux", help="vmlinux, or the module the object belongs to")
    p.add_argument("--allow-layout-change", action="append", default=[], metavar="TYPE",
                   help="the included code may use TYPE ('struct foo') though its layout changed; may repeat")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


COMMANDS = ("build", "module", "post-link", "rules", "explain")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--version" in argv[:2]:  # klpdiff --version, klpdiff build --version, ...
        print(f"klpdiff {__version__}")
        return EXIT_OK
    if argv and argv[0] in COMMANDS:
        from .commands import run_tool

        return _guarded(lambda: run_tool(argv), argv)
    if argv and _mistyped_command(argv[0]):
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"did you mean 'klpdiff {close[0]}'? " if close else ""
        print(one_line(f"klpdiff: '{argv[0]}' is not a command nor an object file; {hint}(commands: "
                       f"{', '.join(COMMANDS)}; or klpdiff ORIG.o PATCHED.o -o OUT.o; see klpdiff --help)"),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return _guarded(lambda: _diff(argv), argv)


def _mistyped_command(word: str) -> bool:
    """A first word that is neither an option nor a path that exists, and reads as a command name."""
    return (not word.startswith("-") and re.fullmatch(r"[a-z][a-z-]*", word) is not None
            and not os.path.lexists(word))


def _guarded(action: Callable[[], int], argv: Sequence[str] = ()) -> int:
    try:
        return action()
    except KlpdiffError as err:
        print(one_line(f"klpdiff: {err}"), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        if err.errno in _NAME_ERRNOS and err.filename is not None:
            print(one_line(f"klpdiff: {os.fsdecode(err.filename)}: {err.strerror}"), file=sys.stderr)
            return EXIT_BAD_INPUT
        if err.errno not in _ENVIRONMENT_ERRNOS:
            return _internal_error(err, argv)
        # the system would not take what klpdiff wrote (a full disk, a closed pipe): not a klpdiff bug
        with contextlib.suppress(OSError):
            print(f"klpdiff: cannot write: {err.strerror or err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # a bug: still one line, and a distinct code
        return _internal_error(err, argv)


# errno values that mean the system refused a write, whatever klpdiff was writing
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EPIPE, errno.EIO, errno.EROFS}
# errno values that the system gives for a name the user gave (a path checked anywhere, as a folder
# or a file): said with the name, in one line
_NAME_ERRNOS = {errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES}


def _internal_error(err: Exception, argv: Sequence[str]) -> int:
    command = " ".join(["klpdiff", *argv])
    print(one_line(f"klpdiff {__version__}: internal error: {type(err).__name__}: {err} (command: {command}); "
                   f"this is a bug in klpdiff: please report it with the command and its input files"),
          file=sys.stderr)
    return EXIT_INTERNAL


def _diff(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    check_outputs([args.output, args.json], [args.orig, args.patched, args.symtab, args.symvers])
    for option, path in (("--symtab", args.symtab), ("--symvers", args.symvers)):
        if path is not None:
            input_size(path, f"the {option} file")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,55}", args.objname):  # MODULE_NAME_LEN is 56 with its NUL
        raise InputError(f"--objname '{args.objname}': not a module name (vmlinux, or up to 55 letters, digits, "
                         f"_ and -)")
    opts = Options(arch=args.arch, rules_dirs=args.rules, struct_sizes=dict(args.struct_size),
                   patching_module=args.module or args.objname != "vmlinux", symtab=args.symtab,
                   symvers=args.symvers, objname=args.objname, allow_layout_changes=args.allow_layout_change)
    written = False
    try:
        outcome = run(args.orig, args.patched, args.output, opts)
        report = diff_report(outcome.analysis, outcome.output, outcome.verdict, outcome.analysis.refused)
        code = outcome.verdict.exit_code
        if not args.quiet:
            print(summary(report), file=sys.stderr if code else sys.stdout, flush=True)
        if args.json:
            write_json(args.json, report_json(report))
        written = code == EXIT_OK
        return code
    finally:
        if not written:  # exit 0 if and only if OUT.o is this run's output
            stale_output(args.output)


def entry() -> None:
    """The `klpdiff` command: main(), then exit without tearing the interpreter down. Every output is
    written and closed by then; freeing a large diff's millions of objects one by one, only to hand
    the memory back to the system, would take longer than some diffs (0.6 s of 3.7 s for an object of
    20,000 functions)."""
    if sys.stdout is None:  # started with standard output closed: nothing could report what was written
        if sys.stderr is not None:
            print("klpdiff: standard output is closed: nothing done (redirect it to /dev/null to discard "
                  "the report)", file=sys.stderr, flush=True)
        os._exit(EXIT_BAD_INPUT)
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away: the exit code still says what happened
            if stream is not None:
                stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
