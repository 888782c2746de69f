"""The command line on good and bad input: exit codes, one-line errors, no partial output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from .conftest import ROOT, need_tool

EXAMPLE = ROOT / "tests" / "examples" / "cmdline.c"
FLAGS = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections",
         "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c"]


def klpdiff(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "klpdiff.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    gcc = need_tool("x86_64", "gcc")
    work = tmp_path_factory.mktemp("pair")
    orig, patched = work / "cmdline.ORIG.o", work / "cmdline.PATCHED.o"
    subprocess.run([gcc, *FLAGS, str(EXAMPLE), "-o", str(orig)], check=True)
    subprocess.run([gcc, *FLAGS, "-DPATCHED", str(EXAMPLE), "-o", str(patched)], check=True)
    return orig, patched


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_example_pair_diffs(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out, report = tmp_path / "out.o", tmp_path / "report.json"
    proc = klpdiff(*pair, "-o", out, "--json", report)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    assert doc["verdict"] == "ok"
    assert doc["changed_functions"] == ["cmdline_proc_show"]
    assert doc["included_functions"] == ["cmdline_proc_show"]
    assert "cmdline_proc_show" in proc.stdout
    readelf = need_tool("x86_64", "readelf")
    syms = subprocess.run([readelf, "-sW", str(out)], capture_output=True, text=True, check=True).stdout
    assert " UND cmdline_len" in syms  # the unchanged helper stays a reference
    assert "version_proc_show" not in syms


def test_same_object_is_no_change(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.o"
    proc = klpdiff(pair[0], pair[0], "-o", out)
    assert proc.returncode == 3
    assert not out.exists()


def test_explicit_arch_must_match(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.o"
    assert klpdiff("--arch", "x86_64", *pair, "-o", out).returncode == 0
    out.unlink()
    assert_one_line_error(klpdiff("--arch", "s390x", *pair, "-o", out), 1, "is not s390x")
    assert not out.exists()
    assert_one_line_error(klpdiff("--arch", "vax", *pair, "-o", out), 1, "no rules for that architecture")


def test_not_elf(pair: tuple[Path, Path], tmp_path: Path) -> None:
    bogus = tmp_path / "notes.o"
    bogus.write_text("not an object\n")
    assert_one_line_error(klpdiff(bogus, pair[1], "-o", tmp_path / "o.o"), 1, str(bogus), "not an ELF file")


def test_truncated(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.o"
    data = pair[1].read_bytes()
    for size in (20, 100, len(data) // 2, len(data) - 10):
        cut.write_bytes(data[:size])
        out = tmp_path / "o.o"
        proc = klpdiff(pair[0], cut, "-o", out)
        assert_one_line_error(proc, 1, str(cut))
        assert not out.exists()
        assert not list(tmp_path.glob(".o.o.*")), "temporary output left behind"


def test_missing_file(pair: tuple[Path, Path], tmp_path: Path) -> None:
    assert_one_line_error(klpdiff(tmp_path / "nope.o", pair[1], "-o", tmp_path / "o.o"), 1, "no such file")


def test_mismatched_pair(pair: tuple[Path, Path], tmp_path: Path) -> None:
    gcc = need_tool("s390x", "gcc")
    other = tmp_path / "s390.o"
    subprocess.run([gcc, "-O2", "-c", str(EXAMPLE), "-o", str(other)], check=True)
    assert_one_line_error(klpdiff(pair[0], other, "-o", tmp_path / "o.o"), 1, str(other), "does not match")


def test_usage_errors(pair: tuple[Path, Path], tmp_path: Path) -> None:
    proc = klpdiff(*pair)
    assert proc.returncode == 1 and "required" in proc.stderr
    proc = klpdiff(*pair, "-o", tmp_path / "o.o", "--struct-size", "jump_entry")
    assert proc.returncode == 1 and "NAME=BYTES" in proc.stderr


def test_unwritable_output(pair: tuple[Path, Path], tmp_path: Path) -> None:
    assert_one_line_error(klpdiff(*pair, "-o", tmp_path / "no" / "dir" / "o.o"), 1, "the folder", "does not exist")


def test_broken_rule_file(pair: tuple[Path, Path], tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("kind: refusals\nrefuse:\n  - when: 'sym.nmae == \"x\"'\n")
    proc = klpdiff(*pair, "-o", tmp_path / "o.o", "--rules", rules)
    assert_one_line_error(proc, 1, f"{rules / 'bad.yaml'}:3:", "unknown name 'nmae'")
    assert not (tmp_path / "o.o").exists()


def test_struct_size_override_must_fit(tmp_path: Path) -> None:
    gcc = need_tool("x86_64", "gcc")
    src = tmp_path / "t.c"
    src.write_text('void f(void) { asm volatile("1: nop\\n.pushsection .smp_locks,\\"a\\"\\n.long 1b - .\\n'
                   '.popsection"); }\n#ifdef PATCHED\nint g;\n#endif\nvoid h(void) { f(); }\n')
    objs: list[Path] = []
    for flags in ([], ["-DPATCHED", "-Dh=h2"]):
        obj = tmp_path / f"t{len(objs)}.o"
        subprocess.run([gcc, *FLAGS, *flags, str(src), "-o", str(obj)], check=True)
        objs.append(obj)
    proc = klpdiff(*objs, "-o", tmp_path / "o.o", "--struct-size", "s32_code_pointer=3")
    assert_one_line_error(proc, 1, ".smp_locks", "s32_code_pointer=3")


def test_an_input_is_never_overwritten(pair: tuple[Path, Path], tmp_path: Path) -> None:
    orig = tmp_path / "orig.o"
    orig.write_bytes(pair[0].read_bytes())
    link = tmp_path / "alias.o"
    link.symlink_to(orig)  # the same file under another name
    for out in (orig, link):
        assert_one_line_error(klpdiff(orig, pair[1], "-o", out), 1, str(out), "is the input", "refusing")
        assert orig.read_bytes() == pair[0].read_bytes()


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_special_files_are_never_replaced(pair: tuple[Path, Path], tmp_path: Path, kind: str) -> None:
    import os
    import stat

    if kind == "fifo":
        out = tmp_path / "fifo"
        os.mkfifo(out)
    elif kind == "folder":
        out = tmp_path / "folder"
        out.mkdir()
    else:
        out = Path("/dev/null")
    mode = os.stat(out).st_mode
    assert_one_line_error(klpdiff(*pair, "-o", out), 1, str(out), "klpdiff only replaces regular files")
    assert stat.S_IFMT(os.stat(out).st_mode) == stat.S_IFMT(mode)
    assert_one_line_error(klpdiff(*pair, "-o", tmp_path / "x.o", "--json", out), 1, str(out))
    assert not (tmp_path / "x.o").exists()


def test_a_failed_run_leaves_no_stale_output(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.o"
    out.write_text("from an earlier run")
    assert klpdiff(pair[0], pair[0], "-o", out).returncode == 3  # nothing changed
    assert not out.exists()
    assert klpdiff(*pair, "-o", out, "--json", tmp_path / "r.json").returncode == 0
    assert out.exists() and json.loads((tmp_path / "r.json").read_text())["verdict"] == "ok"


def test_options_naming_missing_files_are_refused_first(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "x.o"
    assert_one_line_error(klpdiff(*pair, "-o", out, "--symvers", tmp_path / "nope"), 1, "nope", "--symvers")
    assert_one_line_error(klpdiff(*pair, "-o", out, "--json", tmp_path / "no" / "r.json"), 1, "does not exist")
    assert not out.exists()


def test_a_binary_symvers_and_a_non_utf8_rule_file_are_bad_input(pair: tuple[Path, Path], tmp_path: Path) -> None:
    binary = tmp_path / "Module.symvers"
    binary.write_bytes(b"\x7fELF\x02\x01\xff\xfe binary")
    assert_one_line_error(klpdiff(*pair, "-o", tmp_path / "x.o", "--symtab", pair[0], "--symvers", binary), 1,
                          str(binary), "not a Module.symvers")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_bytes(b"kind: noise\n# \xff\xfe\n")
    assert_one_line_error(klpdiff(*pair, "-o", tmp_path / "x.o", "--rules", rules), 1, "bad.yaml:2:3",
                          "UTF-8")


def test_an_internal_error_names_the_version_and_the_command(pair: tuple[Path, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from klpdiff import __version__
    from klpdiff.cli import main as cli

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "run", broken)
    out = tmp_path / "out.o"
    assert cli.main([str(pair[0]), str(pair[1]), "-o", str(out)]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"klpdiff {__version__}: internal error: RuntimeError: a bug" in err
    assert f"command: klpdiff {pair[0]} {pair[1]} -o {out}" in err and "please report it" in err


def test_the_output_depends_only_on_the_inputs_contents(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """The same objects under other names, in another folder, give a byte-identical diff and report."""
    other = tmp_path / "elsewhere" / "deeper"
    other.mkdir(parents=True)
    a, b = other / "before.o", other / "after.o"
    a.write_bytes(pair[0].read_bytes())
    b.write_bytes(pair[1].read_bytes())
    assert klpdiff(*pair, "-o", tmp_path / "one.o").returncode == 0
    assert klpdiff(a, b, "-o", other / "two.o").returncode == 0
    assert (tmp_path / "one.o").read_bytes() == (other / "two.o").read_bytes()


def test_a_report_that_cannot_be_written_is_one_line_and_leaves_no_output(pair: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    """Writing the summary to a full device was an internal error (exit 4) with the output left behind."""
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full on this system")
    out = tmp_path / "o.o"
    with full.open("w") as stdout:
        proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", *map(str, pair), "-o", str(out)],
                              stdout=stdout, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == ["klpdiff: cannot write: No space left on device"]
    assert not out.exists()
    with full.open("w") as stdout:  # the other commands too
        proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "rules", "show", "--arch", "x86_64"],
                              stdout=stdout, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 1 and proc.stderr.strip() == "klpdiff: cannot write: No space left on device"


def test_a_diff_frees_its_objects_as_it_ends(pair: tuple[Path, Path], tmp_path: Path) -> None:
    # a diff runs with the cycle collector paused: a reference cycle among its objects (an object and
    # its relocation index held each other) kept every diff of a batch alive, 600 MB over 200 pairs
    import gc

    from klpdiff.diff.pipeline import Options, run
    from klpdiff.elf.model import ElfObject

    gc.collect()
    outcome = run(pair[0], pair[1], tmp_path / "out.o", Options())
    assert outcome.output is not None
    del outcome
    inputs = {str(pair[0]), str(pair[1])}
    assert not [o for o in gc.get_objects() if isinstance(o, ElfObject) and o.path in inputs]


def test_help_is_as_wide_as_columns_says(monkeypatch: pytest.MonkeyPatch) -> None:
    from klpdiff.cli.main import parser

    monkeypatch.setenv("COLUMNS", "60")
    narrow = parser().format_help().splitlines()
    monkeypatch.setenv("COLUMNS", "200")
    wide = parser().format_help().splitlines()
    assert max(len(line) for line in narrow) <= 60 < max(len(line) for line in wide)
    assert len(wide) < len(narrow)


@pytest.mark.parametrize("kind", ["fifo", "folder", "zero", "urandom"])
def test_an_input_that_is_not_a_regular_file_is_refused_without_reading_it(pair: tuple[Path, Path], tmp_path: Path,
                                                                           kind: str) -> None:
    """A FIFO blocked forever and /dev/zero ran out of memory (issue 23): now one line, exit 1, nothing read."""
    special = {"fifo": tmp_path / "pipe.o", "folder": tmp_path, "zero": Path("/dev/zero"),
               "urandom": Path("/dev/urandom")}[kind]
    if kind == "fifo":
        os.mkfifo(special)
    words = {"fifo": "a FIFO", "folder": "a folder", "zero": "a character device",
             "urandom": "a character device"}[kind]
    out = tmp_path / "out.o"
    for args in ((special, pair[1]), (pair[0], special)):
        proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", *map(str, args), "-o", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert_one_line_error(proc, 1, str(special), words, "not an object file")
        assert not out.exists()


def test_two_outputs_naming_one_file_are_refused_before_any_work(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """--json naming -o's file wrote the report over the object and said 'wrote out.o' (issue 23)."""
    out = tmp_path / "out.o"
    for report in (out, tmp_path / "." / "out.o"):
        assert_one_line_error(klpdiff(*pair, "-o", out, "--json", report), 1, "names the same file as the output")
        assert not out.exists()


def test_build_takes_a_tree_or_a_kernel_not_both(tmp_path: Path) -> None:
    fix = tmp_path / "fix.patch"
    fix.write_text("--- a/fs/a.c\n+++ b/fs/a.c\n@@ -1 +1 @@\n-a\n+b\n")
    assert_one_line_error(klpdiff("build", "--kdir", tmp_path, "--kernel", "6.1.0-57-amd64", fix), 1,
                          "not allowed with argument")
    assert_one_line_error(klpdiff("build", "--kdir", tmp_path, "--source", tmp_path, fix), 1,
                          "--source goes with --kernel")


def test_build_for_a_kernel_the_archive_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    """With neither --kdir nor --kernel, the running kernel; this machine's is no distribution's
    (or the machine is no distribution klpdiff knows): one line naming it, nothing fetched."""
    fix = tmp_path / "fix.patch"
    fix.write_text("--- a/fs/a.c\n+++ b/fs/a.c\n@@ -1 +1 @@\n-a\n+b\n")
    env = {**os.environ, "KLPDIFF_CACHE_DIR": str(tmp_path / "cache")}
    for args in (["--kernel", "0.0.0-1-none"], []):
        proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "build", *args, str(fix), "-o",
                               str(tmp_path / "lp.ko")], capture_output=True, text=True, env=env)
        release = args[1] if args else os.uname().release
        assert_one_line_error(proc, 1)
        assert release in proc.stderr or "does not know" in proc.stderr, proc.stderr
    assert not (tmp_path / "lp.ko").exists()
    assert not (tmp_path / "cache" / "kernels").exists()


def test_every_command_answers_version() -> None:
    for args in ([], ["build"], ["rules"], ["post-link"]):
        proc = klpdiff(*args, "--version")
        assert (proc.returncode, proc.stdout.split()[0]) == (0, "klpdiff"), proc.stderr
        assert re.fullmatch(r"klpdiff [0-9]+\.[0-9]+\.[0-9]+\n", proc.stdout)


def test_a_mistyped_command_is_named_with_the_closest_one(tmp_path: Path) -> None:
    assert_one_line_error(klpdiff("biuld", "fix.patch"), 1, "'biuld' is not a command", "did you mean 'klpdiff build'")
    assert_one_line_error(klpdiff("xyzzy"), 1, "'xyzzy' is not a command", "commands: build")
    # an object file whose name reads like a word is still an object file
    (tmp_path / "fixed").write_bytes(b"not an ELF file")
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "fixed", "fixed", "-o", "out.o"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert "is not a command" not in proc.stderr and proc.returncode == 1


def test_usage_errors_point_at_the_command_s_own_help() -> None:
    assert_one_line_error(klpdiff("build"), 1, "klpdiff build:", "see klpdiff build --help")
    assert_one_line_error(klpdiff("rules", "test", "--nope"), 1, "see klpdiff rules test --help")
    assert "post-link" in klpdiff("--help").stdout


def test_a_rule_file_that_is_no_regular_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    os.mkfifo(rules / "x.yaml")  # reading it would block forever
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "rules", "show", "--arch", "x86_64", "--rules",
                           str(rules)], capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, 1, "x.yaml: a FIFO, not a rule file")


def test_a_yaml_alias_bomb_in_a_rule_file_is_refused_quickly(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    lines = ["kind: noise", 'l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 9)]  # 10^9 values
    (rules / "bomb.yaml").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "rules", "show", "--arch", "x86_64", "--rules",
                           str(rules)], capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, 1, "bomb.yaml:", "aliases (*name) expand the file past 100,000 values")


def test_an_objname_that_is_no_module_name_is_refused_in_one_line(pair: tuple[Path, Path], tmp_path: Path) -> None:
    for name in (os.fsdecode(b"mod\xff"), "a/b", "x" * 56, ""):
        proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", *map(str, pair), "-o", str(tmp_path / "o.o"),
                               "--objname", name], capture_output=True, text=True)
        assert_one_line_error(proc, 1, "--objname", "not a module name")
    assert not (tmp_path / "o.o").exists()
    proc = klpdiff(*pair, "-o", tmp_path / "o.o", "--objname", "ext4-x_1", "--module")
    assert proc.returncode == 0, proc.stderr


def test_a_copied_section_of_an_os_or_processor_specific_type_is_refused(pair: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    orig, patched = pair
    data = bytearray(patched.read_bytes())
    with patched.open("rb") as f:
        elf = ELFFile(f)
        index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".text.cmdline_proc_show")
        at = elf["e_shoff"] + index * elf["e_shentsize"] + 4  # sh_type follows sh_name
    for sh_type, kind in ((0x6FFFFFF6, "OS-specific"), (0x70000000, "processor-specific")):
        data[at:at + 4] = sh_type.to_bytes(4, "little")
        mutated = tmp_path / "mutated.o"
        mutated.write_bytes(bytes(data))
        out = tmp_path / "out.o"
        assert_one_line_error(klpdiff(orig, mutated, "-o", out), 1, ".text.cmdline_proc_show", kind)
        assert not out.exists()


def test_a_closed_standard_output_is_one_line_and_leaves_no_output(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.o"
    command = " ".join([sys.executable, "-m", "klpdiff.cli", *map(str, pair), "-o", str(out)])
    proc = subprocess.run(["sh", "-c", f"exec {command} >&-"], capture_output=False, stderr=subprocess.PIPE,
                          text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "klpdiff: standard output is closed: nothing done (redirect it to /dev/null to discard the report)"]
    assert not out.exists()


def test_output_names_are_taken_as_given(pair: tuple[Path, Path], tmp_path: Path) -> None:
    # a name ending in / names a folder: refused, nothing written under the name without it
    assert_one_line_error(klpdiff(*pair, "-o", f"{tmp_path}/x.o/"), 1, "'", "x.o/' names a folder")
    assert not (tmp_path / "x.o").exists()
    # the longest valid names are writable: the temporary file beside the output has a short name
    for length in (238, 255):
        out = tmp_path / ("a" * (length - 2) + ".o")
        proc = klpdiff(*pair, "-o", out, "-q")
        assert proc.returncode == 0, proc.stderr
        assert out.is_file() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
        out.unlink()
