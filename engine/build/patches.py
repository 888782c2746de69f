"""Source patches: which files they touch, and applying them inside a shadow tree.

In: unified-diff files (`git format-patch`, `diff -u`, quilt; paths with one
leading component, as `patch -p1` takes them). Out: the files each patch
changes, classified by what a livepatch can do with them, and the patched
sources, written by GNU patch into a `Shadow` (never into the user's tree).
"""

from __future__ import annotations

import subprocess
from enum import Enum
from pathlib import Path, PurePosixPath

from ..core.errors import InputError
from ..core.inputs import read_input
from ..core.records import record
from .shadow import Shadow


class FileKind(Enum):
    C_SOURCE = "C source"
    HEADER = "header"
    ASSEMBLY = "assembly"
    BUILD = "build file"                # Makefile, Kbuild, Kconfig, linker scripts
    DOCUMENTATION = "documentation"     # not part of the kernel image: Documentation/, tools/, scripts/, ...
    UNSUPPORTED = "unsupported file"    # anything else (Rust, device trees, firmware, ...)


@record
class FileChange:
    path: str          # relative to the tree (after -p1)
    kind: FileKind
    created: bool = False
    deleted: bool = False


_NOT_IN_IMAGE = ("Documentation", "tools", "samples", "scripts", "LICENSES", "usr")


def classify_path(path: str) -> FileKind:
    p = PurePosixPath(path)
    name = p.name
    if (p.parts and p.parts[0] in _NOT_IN_IMAGE) or name in ("MAINTAINERS", "CREDITS", "README", "COPYING") \
            or p.suffix in (".rst", ".txt", ".md"):
        return FileKind.DOCUMENTATION
    if name in ("Makefile", "Kbuild") or name.startswith("Kconfig") or ".lds" in name:
        return FileKind.BUILD
    return {".c": FileKind.C_SOURCE, ".h": FileKind.HEADER, ".S": FileKind.ASSEMBLY,
            ".s": FileKind.ASSEMBLY}.get(p.suffix, FileKind.UNSUPPORTED)


def _strip(name: str) -> str | None:
    name = name.split("\t")[0].strip()
    if name == "/dev/null":
        return None
    parts = PurePosixPath(name).parts
    if len(parts) < 2:
        raise ValueError(name)
    return str(PurePosixPath(*parts[1:]))


class _Outside(Exception):
    """A file name that reaches outside the tree."""


def _inside(original: str, stripped: str | None) -> str | None:
    """The stripped name, when the patch's name stays in the tree (not absolute, no `..`)."""
    name = original.split("\t")[0].strip()
    if stripped is not None and (name.startswith("/") or ".." in PurePosixPath(stripped).parts):
        raise _Outside(name)
    return stripped


# git's extended headers for what a livepatch cannot do, and how to say it
_GIT_REFUSED = (("deleted file mode", "deletes {}"), ("rename from", "renames {}"), ("copy from", "copies {}"),
                ("old mode", "changes the mode of {}"), ("GIT binary patch", "changes the binary file {}"),
                ("Binary files", "changes the binary file {}"))


def _refused_git_change(path: Path, lines: list[str]) -> None:
    """Refuse, naming it, a file deletion, rename, copy, mode change or binary change."""
    current = "a file"
    for line in lines:
        if line.startswith("diff --git "):
            current = line[len("diff --git "):].split(" ")[-1].removeprefix("b/")
        for header, what in _GIT_REFUSED:
            if line.startswith(header):
                raise InputError(f"{path}: {what.format(current)}: a livepatch replaces functions of files that "
                                 f"stay; it cannot delete, rename or copy files, change their mode or binary files")


def read_patch(path: Path) -> list[FileChange]:
    """The files a patch changes, from its `---`/`+++` headers."""
    text = read_input(path, "a patch").decode("utf-8", "surrogateescape")  # a name's bytes kept as they are
    changes: list[FileChange] = []
    lines = text.split("\n")  # as patch(1) reads it: not at form feeds, \x1c or U+2028, as splitlines() would
    _refused_git_change(path, lines)
    for i, line in enumerate(lines[:-1]):
        if not (line.startswith("--- ") and lines[i + 1].startswith("+++ ")):
            continue
        try:
            old, new = _inside(line[4:], _strip(line[4:])), _inside(lines[i + 1][4:], _strip(lines[i + 1][4:]))
        except ValueError as err:
            raise InputError(f"{path}: file name '{err}' has no leading folder to strip (klpdiff applies "
                             f"patches as patch -p1 does)") from err
        except _Outside as err:
            raise InputError(f"{path}: {err} is outside the kernel tree: a patch may change only files in it") \
                from err
        target = new or old
        assert target is not None
        if new is None:
            raise InputError(f"{path}: deletes {target}: a livepatch replaces functions of files that stay; it "
                             f"cannot delete files")
        changes.append(FileChange(target, classify_path(target), created=old is None, deleted=new is None))
    if not changes:
        raise InputError(f"{path}: no file changes found (expected a unified diff, as from git diff or diff -u)")
    return changes


def apply(shadow: Shadow, patch: Path, changes: list[FileChange], fuzz: int | None) -> None:
    """Apply `patch` inside the shadow; on failure, raise with GNU patch's own message."""
    for change in changes:
        shadow.own_copy(change.path)
    cmd = ["patch", "-p1", "-N", "-s", "--no-backup-if-mismatch", "-r", "-", "-d", str(shadow.root),
           "-i", str(patch.resolve())]
    if fuzz is not None:
        cmd.append(f"--fuzz={fuzz}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="surrogateescape")
    except FileNotFoundError as err:
        raise InputError("GNU patch is not installed (apt-get install patch)") from err
    if proc.returncode != 0:
        message = " ".join((proc.stdout + proc.stderr).split())
        raise InputError(f"{patch}: does not apply: {message}")
