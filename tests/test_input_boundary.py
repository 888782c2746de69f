"""What the argument-boundary fuzzer (tests/fuzz/arguments.py) found, each kept as a regression test:
inputs no kernel could have, names the system refuses, names that would break the one-line error, rule
cases that nest or alias without end, and an input path that names a folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from klpdiff.core.errors import InputError, one_line
from klpdiff.core.inputs import MAX_INPUT_BYTES, input_size, read_input

from .test_cli import assert_one_line_error, klpdiff, pair

__all__ = ["pair"]  # the pytest fixture, shared with test_cli


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.write(b"\x7fELF\x02\x01\x01")
        fh.truncate(size)
    return path


def test_one_line_escapes_what_would_break_or_drive_the_line() -> None:
    assert one_line("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert one_line("\x1b[31mred") == "\\x1b[31mred"
    assert one_line("x\u202ey") == "x\\u202ey"  # a right-to-left override reorders what a terminal shows
    assert one_line("\udcff.o") == "\\xff.o"  # os.fsdecode's stand-in for a byte that is not UTF-8
    assert one_line("ünï-cödé: fine") == "ünï-cödé: fine"


def test_input_size_refuses_what_no_kernel_input_can_be(tmp_path: Path) -> None:
    big = _sparse(tmp_path / "big.o", MAX_INPUT_BYTES + 1)
    with pytest.raises(InputError, match=r"big.o: 4,294,967,297 bytes, larger than an object file can be"):
        read_input(big, "an object file")
    with pytest.raises(InputError, match=r"no such file \(a patch\)"):
        input_size(tmp_path / "nope.patch", "a patch")
    with pytest.raises(InputError, match=r"a folder, not a patch"):
        input_size(tmp_path, "a patch")
    with pytest.raises(InputError, match=r"cannot read a patch: File name too long"):
        input_size(tmp_path / ("x" * 300), "a patch")
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(InputError, match=r"loop: cannot read a patch: Too many levels of symbolic links"):
        input_size(tmp_path / "loop", "a patch")


def test_a_sparse_giant_is_refused_not_read(pair: tuple[Path, Path], tmp_path: Path) -> None:
    big = _sparse(tmp_path / "big.o", 64 << 30)
    out = tmp_path / "out.o"
    assert_one_line_error(klpdiff(pair[0], big, "-o", out), 1, "big.o", "larger than an object file can be")
    assert_one_line_error(klpdiff(*pair, "-o", out, "--symvers", big), 1, "big.o", "--symvers")
    assert not out.exists()


def test_a_name_too_long_for_the_system_is_bad_input(pair: tuple[Path, Path], tmp_path: Path) -> None:
    deep = "/".join(["d" * 250] * 20)  # over PATH_MAX
    for option in ("--symtab", "--symvers", "--rules"):
        proc = klpdiff(*pair, "-o", tmp_path / "out.o", option, tmp_path / deep)
        assert_one_line_error(proc, 1, "File name too long")


def test_a_name_with_a_newline_or_escape_stays_one_line(pair: tuple[Path, Path], tmp_path: Path) -> None:
    proc = klpdiff(pair[0], tmp_path / "new\nline\x1b[2J.o", "-o", tmp_path / "out.o")
    assert_one_line_error(proc, 1, "new\\nline\\x1b[2J.o", "no such file")
    argv = [sys.executable, "-m", "klpdiff.cli", *map(str, pair), "-o", str(tmp_path / "out.o"), "--objname"]
    proc = subprocess.run([*map(str.encode, argv), b"a\x0bb\xff"], capture_output=True, text=True)
    assert_one_line_error(proc, 1, "--objname 'a\\x0bb\\xff'", "not a module name")


def test_an_input_named_with_a_trailing_slash_is_a_folder_name(pair: tuple[Path, Path], tmp_path: Path) -> None:
    module = tmp_path / "m.ko"
    shutil.copy(pair[1], module)
    before = module.read_bytes()
    proc = klpdiff("post-link", f"{module}/")
    assert_one_line_error(proc, 1, "m.ko/", "names a folder, not a file")
    assert_one_line_error(klpdiff(f"{pair[0]}/", pair[1], "-o", tmp_path / "o.o"), 1, "names a folder")
    assert module.read_bytes() == before


def test_post_link_leaves_a_file_without_klpdiff_tables_as_it_is(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """An object that never was a klpdiff module, or a module already post-linked: nothing to convert,
    and the file is not rewritten (with -o, it is copied)."""
    module = tmp_path / "m.ko"
    shutil.copy(pair[1], module)
    before = module.stat()
    proc = klpdiff("post-link", module)
    assert proc.returncode == 0 and "0 livepatch relocation(s)" in proc.stdout, proc.stderr
    after = module.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    proc = klpdiff("post-link", module, "-o", tmp_path / "copy.ko")
    assert proc.returncode == 0 and (tmp_path / "copy.ko").read_bytes() == module.read_bytes()


@pytest.mark.parametrize("content", [b"[" * 100_000 + b"]" * 100_000, b"a: " * 20_000 + b"1\n",
                                     b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
                                         f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n"
                                         .encode() for i in range(9))],
                         ids=["nested-lists", "nested-maps", "alias-bomb"])
def test_a_rule_case_that_nests_or_expands_without_end_is_refused(tmp_path: Path, content: bytes) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "x.yaml").write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "rules", "test", str(cases)], capture_output=True,
                          text=True, timeout=60)
    assert_one_line_error(proc, 1, "x.yaml:")


def test_a_folder_that_is_a_link_loop_is_said_in_one_line(tmp_path: Path) -> None:
    """Path.resolve raised RuntimeError on a loop (exit 4) for `rules lint DIR` and `build --kdir`."""
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    assert_one_line_error(klpdiff("rules", "lint", loop), 1, "loop: cannot read a folder of rule files",
                          "symbolic links")
    patch = tmp_path / "fix.patch"
    patch.write_text("--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n")
    assert_one_line_error(klpdiff("build", "--check", "--kdir", loop, patch), 1, "loop: cannot read a kernel tree")
    proc = klpdiff("build", "--check", "--kdir", patch, patch)
    assert_one_line_error(proc, 1, "fix.patch: a file, not a kernel tree")


def test_an_arch_is_a_known_name_not_a_path(tmp_path: Path) -> None:
    """--arch with bytes that are not UTF-8 broke the rule cache's key (exit 4); a path-like one must not
    reach the file system either."""
    for arch in (b"\xd5\x18x", b"../../etc", b"x86_64/.."):
        proc = subprocess.run([sys.executable.encode(), b"-m", b"klpdiff.cli", b"rules", b"show", b"--arch", arch],
                              capture_output=True, text=True)
        assert_one_line_error(proc, 1, "--arch", "no rules for it (known: ", "x86_64")
    rules = tmp_path / "r\udcff"  # a --rules folder whose name is not UTF-8 keys the cache like any other
    (rules / "x86_64").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "rules", "show", "--arch", "x86_64", "--rules",
                           str(rules)], capture_output=True, text=True)
    assert proc.returncode == 0 and "arch x86_64" in proc.stdout, proc.stderr
