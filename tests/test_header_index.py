"""The header index of a prepared tree is exact: proved against kbuild's own records.

A distribution's kernel is prepared, never built, so no `.cmd` record says which objects include a
header; klpdiff asks kbuild's dry run for every compile command and the compiler for what each one
reads (engine/build/kindex.py). Here the e2e kernel (tests/e2e/kernel.sh: Debian's linux-source-6.12, built
in place) is the yardstick: the same source and config, unpacked afresh and only prepared, must give
the same objects, the same commands, and for a sample of headers exactly the objects kbuild's
`.cmd` records name.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from klpdiff.build.kbuild import Tree, parse_cmd
from klpdiff.build.kindex import TreeIndex, make_records

from .conftest import e2e_tree

ROOT = Path(__file__).resolve().parent.parent
TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
MAKE_ARGS = ["ARCH=x86_64"]  # as tests/e2e/kernel.sh builds it


def _built_c_objects(tree: Tree) -> dict[str, str]:
    """object -> saved command, for every C object kbuild compiled in `tree`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(tree.root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("Documentation", "tools")]
        for name in filenames:
            if name.startswith(".") and name.endswith(".o.cmd"):
                obj = str(Path(dirpath, name[1:-4]).relative_to(tree.root))
                rec = parse_cmd(obj, Path(dirpath, name).read_text(errors="replace"))
                if rec.source.endswith(".c") and rec.command:
                    out[obj] = rec.command
    return out


def _linked_objects(tree: Tree) -> set[str]:
    """The objects kbuild links into vmlinux (the members of vmlinux.a and of the lib.a archives) or
    into a module (its .mod file): the code a livepatch can replace. kbuild compiles others too — the
    boot loader, host programs, each module's .mod.o, the version timestamp — which are none of it."""
    members: set[str] = set()
    for archive in [tree.root / "vmlinux.a", *tree.root.glob("**/lib.a")]:
        listed = subprocess.run(["ar", "t", str(archive.relative_to(tree.root))], cwd=tree.root, capture_output=True,
                                text=True, check=True).stdout  # (thin archives: members as the tree names them)
        members.update(listed.split())
    for mod in tree.root.glob("**/*.mod"):
        members.update(mod.read_text().split())
    return members


def _sample(tree: Tree, objects: list[str], count: int) -> list[str]:
    """`count` source-tree headers spread over how many objects include them (one to all), local
    headers beside their sources among them."""
    includers: dict[str, int] = {}
    for obj in objects:
        rec = tree.compiled(obj)
        assert rec is not None
        for dep in rec.deps:
            path = tree.source_path(dep)
            if path is not None and path.endswith(".h"):
                includers[path] = includers.get(path, 0) + 1
    ranked = sorted(includers, key=lambda h: (includers[h], h))
    picked = {ranked[i * (len(ranked) - 1) // (count - 1)] for i in range(count)}
    local = [h for h in ranked if not h.startswith(("include/", "arch/"))]
    picked.update(local[:: max(1, len(local) // 4)][:4])
    return sorted(picked)


def test_a_prepared_tree_indexes_what_kbuild_records_in_a_built_one(tmp_path: Path) -> None:
    built = Tree(e2e_tree())
    prepared = tmp_path / "linux"
    prepared.mkdir()
    subprocess.run(["tar", "-xf", str(TARBALL), "-C", str(prepared), "--strip-components=1"], check=True)
    assert (prepared / "Makefile").read_text() == (built.root / "Makefile").read_text(), \
        "the e2e tree is not the installed linux-source-6.12 (tests/e2e/kernel.sh unpacks it afresh)"
    (prepared / ".config").write_bytes((built.root / ".config").read_bytes())
    subprocess.run(["make", "-C", str(prepared), "-s", f"-j{os.cpu_count() or 2}", *MAKE_ARGS, "olddefconfig",
                    "modules_prepare"], check=True, capture_output=True)
    assert (prepared / ".config").read_text() == (built.root / ".config").read_text()

    make_records(prepared, MAKE_ARGS, tmp_path / "index")
    index = TreeIndex(prepared, tmp_path / "index")
    index.make_includes(MAKE_ARGS, os.cpu_count() or 2, lambda _line: None)

    # the same objects: every one kbuild compiled for vmlinux or a module, and nothing kbuild did not
    linked = _linked_objects(built)
    compiled = _built_c_objects(built)
    recorded = {obj: cmd for obj, cmd in compiled.items() if obj in linked}
    assert len(recorded) > 500
    assert set(index.records) <= set(compiled)
    assert sorted(set(index.records) & linked) == sorted(recorded)
    # with the same commands
    differ = [obj for obj, cmd in recorded.items() if index.records[obj].command != cmd]
    assert not differ, f"{len(differ)} command(s) differ from kbuild's records, e.g. {differ[:3]}"
    # and, for each header of the sample, exactly the objects whose records name it
    headers = _sample(built, sorted(recorded), 24)
    assert len(headers) >= 20
    for header in headers:
        found, unknown = index.including(header)
        expected = [obj for obj in built.objects_including(header) if obj in linked]
        assert (header, [obj for obj in found if obj in linked]) == (header, expected)
        assert unknown == []
