"""klpdiff build's pieces, in process, on small fake trees: kbuild records, patches, shadows, finding objects.
The whole command on a real built kernel is proven by tests/e2e/run.sh (tree untouched, SIGINT, QEMU)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from klpdiff.build.command import BuildOptions, _allowed_layouts, find_objects
from klpdiff.build.kbuild import Tree, cross_prefix, parse_cmd, with_flags
from klpdiff.build.patches import FileKind, apply, classify_path, read_patch
from klpdiff.build.shadow import Shadow
from klpdiff.core.errors import InputError

CMD = """savedcmd_fs/foo.o := gcc -Wp,-MMD,fs/.foo.o.d -nostdinc -I./include -DKBUILD_MODFILE='"fs/foo"' \
-c -o fs/foo.o fs/foo.c   ; ./tools/objtool/objtool --orc   fs/foo.o

source_fs/foo.o := fs/foo.c

deps_fs/foo.o := \\
  include/linux/compiler-version.h \\
    $(wildcard include/config/CC_VERSION_TEXT) \\
  include/linux/kconfig.h \\
  fs/internal.h \\

fs/foo.o: $(deps_fs/foo.o)

$(deps_fs/foo.o):
"""


def test_cmd_records_give_command_source_and_dependencies() -> None:
    rec = parse_cmd("fs/foo.o", CMD)
    assert rec.source == "fs/foo.c"
    assert rec.command.startswith("gcc -Wp,-MMD,fs/.foo.o.d") and rec.command.endswith("--orc   fs/foo.o")
    assert rec.deps == ("include/linux/compiler-version.h", "include/linux/kconfig.h", "fs/internal.h")


def test_flags_go_after_the_recorded_ones_and_quoting_survives() -> None:
    rec = parse_cmd("fs/foo.o", CMD)
    cmd = with_flags(rec.command, ["-ffunction-sections", "-fdata-sections"])
    compile_part, objtool = cmd.split(";")
    words = shlex.split(compile_part)
    assert words[-2:] == ["-ffunction-sections", "-fdata-sections"]
    assert "-DKBUILD_MODFILE=\"fs/foo\"" in words
    assert objtool.split() == ["./tools/objtool/objtool", "--orc", "fs/foo.o"]


def test_commands_split_at_the_first_unquoted_semicolon() -> None:
    cmd = "gcc -D'A=1;2' -DB=\\; -c x.c ; objtool x.o ; true"
    assert with_flags(cmd, ["-g"]) == "gcc -D'A=1;2' -DB=\\; -c x.c -g ; objtool x.o ; true"


@pytest.mark.parametrize(("compiler", "prefix"), [
    ("gcc", ""), ("s390x-linux-gnu-gcc", "s390x-linux-gnu-"), ("/usr/bin/powerpc64le-linux-gnu-gcc-12",
                                                                  "powerpc64le-linux-gnu-"), ("clang", ""),
])
def test_cross_prefix_of_the_recorded_compiler(compiler: str, prefix: str) -> None:
    assert cross_prefix(compiler) == prefix


PATCH = """From 1 Mon Sep 17 00:00:00 2001
Subject: [PATCH] a fix

diff --git a/fs/foo.c b/fs/foo.c
--- a/fs/foo.c
+++ b/fs/foo.c
@@ -1,3 +1,4 @@
 int a;
+int b;
 int c;
 int d;
--- a/include/linux/x.h\t2024-01-01
+++ b/include/linux/x.h\t2024-01-02
@@ -1 +1 @@
-#define X 1
+#define X 2
--- /dev/null
+++ b/Documentation/fix.rst
@@ -0,0 +1 @@
+notes
"""


def test_patch_files_and_kinds(tmp_path: Path) -> None:
    path = tmp_path / "fix.patch"
    path.write_text(PATCH)
    changes = read_patch(path)
    assert [(c.path, c.kind, c.created) for c in changes] == [
        ("fs/foo.c", FileKind.C_SOURCE, False), ("include/linux/x.h", FileKind.HEADER, False),
        ("Documentation/fix.rst", FileKind.DOCUMENTATION, True)]


@pytest.mark.parametrize(("path", "kind"), [
    ("arch/x86/entry/entry_64.S", FileKind.ASSEMBLY), ("fs/Makefile", FileKind.BUILD),
    ("arch/x86/Kconfig.debug", FileKind.BUILD), ("arch/x86/kernel/vmlinux.lds.S", FileKind.BUILD),
    ("rust/kernel/lib.rs", FileKind.UNSUPPORTED), ("arch/arm64/boot/dts/x.dts", FileKind.UNSUPPORTED),
    ("tools/objtool/check.c", FileKind.DOCUMENTATION), ("scripts/setlocalversion", FileKind.DOCUMENTATION),
])
def test_what_a_livepatch_cannot_carry_is_classified(path: str, kind: FileKind) -> None:
    assert classify_path(path) is kind


def test_not_a_patch(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just words\n")
    with pytest.raises(InputError, match=r"notes\.txt: no file changes found"):
        read_patch(path)


def _fake_tree(tmp_path: Path) -> Path:
    root = tmp_path / "linux"
    (root / "fs").mkdir(parents=True)
    (root / "include" / "linux").mkdir(parents=True)
    (root / "arch" / "x86" / "include" / "generated").mkdir(parents=True)  # a built tree's ARCH=
    (root / "fs" / "foo.c").write_text("int a;\nint c;\nint d;\n")
    (root / "fs" / ".foo.o.cmd").write_text(CMD)
    (root / "fs" / "bar.c").write_text("int bar;\n")
    (root / "fs" / ".bar.o.cmd").write_text(CMD.replace("foo", "bar").replace("  fs/internal.h \\\n", ""))
    (root / "fs" / "foo.o").write_bytes(b"object")
    (root / "include" / "linux" / "x.h").write_text("#define X 1\n")
    return root


def test_sources_and_headers_map_to_the_objects_that_compiled_them(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path)
    patch = tmp_path / "fix.patch"
    patch.write_text(PATCH)
    notes: list[str] = []
    assert find_objects(Tree(root), read_patch(patch), notes) == ["fs/foo.o"]
    assert "Documentation/fix.rst: not part of the kernel image, passed over" in notes
    assert Tree(root).objects_including("fs/internal.h") == ["fs/foo.o"]
    assert Tree(root).objects_including("include/linux/kconfig.h") == ["fs/bar.o", "fs/foo.o"]


@pytest.mark.parametrize(("changed", "message"), [
    ("arch/x86/entry/entry_64.S", r"entry_64\.S \(assembly\); only C sources and headers"),
    ("fs/Makefile", r"fs/Makefile \(build file\)"),
    ("fs/never.c", r"fs/never\.c was never compiled by this build \(no \.never\.o\.cmd"),
    ("fs/nowhere.c", r"fs/nowhere\.c: no such file in .*\(is the patch for another kernel version"),
])
def test_what_cannot_be_built_is_refused_by_name(tmp_path: Path, changed: str, message: str) -> None:
    root = _fake_tree(tmp_path)
    if changed == "fs/never.c":  # a source the tree has but its config does not compile
        (root / changed).write_text("int never;\n")
    patch = tmp_path / "bad.patch"
    patch.write_text(f"--- a/{changed}\n+++ b/{changed}\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(InputError, match=message):
        find_objects(Tree(root), read_patch(patch), [])


def test_a_shadow_reads_the_tree_and_writes_only_itself(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path)
    shadow = Shadow(root, tmp_path / "shadow")
    assert (shadow.path("fs/foo.c")).read_text() == "int a;\nint c;\nint d;\n"
    shadow.writable("fs/foo.o").write_bytes(b"new object")
    shadow.own_copy("fs/foo.c").write_text("patched\n")
    shadow.writable("fs/new/deep/x.o").write_bytes(b"x")
    assert (root / "fs" / "foo.o").read_bytes() == b"object"
    assert (root / "fs" / "foo.c").read_text() == "int a;\nint c;\nint d;\n"
    assert not (root / "fs" / "new").exists()
    assert (shadow.path("fs/bar.c")).read_text() == "int bar;\n"  # siblings still seen through links
    with pytest.raises(InputError, match="not a path inside the kernel tree"):
        shadow.writable("../escape.o")
    folder = shadow.folder("fs")  # a working folder: real, so relative writes from it stay private
    assert folder.is_dir() and not folder.is_symlink()
    (folder / "from_cwd.o").write_bytes(b"x")
    assert not (root / "fs" / "from_cwd.o").exists()


def test_a_shadow_folder_is_whole_when_writable_returns_whatever_other_threads_do(tmp_path: Path) -> None:
    # Making a folder real fills it entry by entry; a caller that returned before it was full
    # compiled against a folder with files missing (CI: "fs/proc/meminfo.c: No such file").
    root = tmp_path / "linux"
    (root / "fs" / "proc").mkdir(parents=True)
    names = [f"f{i}.c" for i in range(3000)]
    for name in names:
        (root / "fs" / "proc" / name).write_text("")
    shadow = Shadow(root, tmp_path / "shadow")
    start = threading.Barrier(8)

    def prepare_and_look(i: int) -> list[str]:
        start.wait()
        shadow.writable(f"fs/proc/obj{i}.o")
        return [n for n in names if not shadow.path(f"fs/proc/{n}").exists()]

    with ThreadPoolExecutor(8) as pool:
        missing = list(pool.map(prepare_and_look, range(8)))
    assert missing == [[]] * 8


def test_every_object_s_folders_are_made_before_any_compile_runs(tmp_path: Path) -> None:
    from klpdiff.build.command import _compile_all, workspace

    root = tmp_path / "linux"
    for folder in ("fs/a", "fs/b"):
        (root / folder).mkdir(parents=True)
    # x.o's compile fails unless y.o's folder is already real in its shadow (and the other way round)
    check = "sh -c 'test -d fs/{other} && ! test -L fs/{other} && echo o > fs/{me}/{obj}' -o fs/{me}/{obj}"
    commands = {"fs/a/x.o": check.format(other="b", me="a", obj="x.o"),
                "fs/b/y.o": check.format(other="a", me="b", obj="y.o")}
    tree = Tree(root)
    orig, patched = workspace(tree, tmp_path / "work", "orig"), workspace(tree, tmp_path / "work", "patched")
    pairs = _compile_all(orig, patched, commands, 1, lambda _line: None)
    assert sorted(pairs) == ["fs/a/x.o", "fs/b/y.o"]
    assert all(p.read_text() == "o\n" for pair in pairs.values() for p in pair)
    assert not (root / "fs" / "a" / "x.o").exists()


@pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch is not installed")
def test_patches_apply_in_the_shadow_and_failures_show_patch_s_words(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path)
    patch = tmp_path / "fix.patch"
    patch.write_text(PATCH)
    shadow = Shadow(root, tmp_path / "shadow")
    apply(shadow, patch, read_patch(patch), None)
    assert shadow.path("fs/foo.c").read_text() == "int a;\nint b;\nint c;\nint d;\n"
    assert shadow.path("include/linux/x.h").read_text() == "#define X 2\n"
    assert (root / "fs" / "foo.c").read_text() == "int a;\nint c;\nint d;\n"
    assert (root / "include" / "linux" / "x.h").read_text() == "#define X 1\n"
    stale = tmp_path / "stale.patch"
    stale.write_text("--- a/fs/foo.c\n+++ b/fs/foo.c\n@@ -1,2 +1,2 @@\n-no such\n-lines\n+x\n+y\n")
    with pytest.raises(InputError, match=r"stale\.patch: does not apply: .*FAILED"):
        apply(Shadow(root, tmp_path / "shadow2"), stale, read_patch(stale), None)
    assert (root / "fs" / "foo.c").read_text() == "int a;\nint c;\nint d;\n"


def test_a_failed_compile_shows_the_compiler_s_words_and_leaves_the_tree(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path)
    for name in ("Makefile", ".config", "vmlinux", "Module.symvers"):
        (root / name).write_text("")
    failing = "sh -c 'echo \"fs/foo.c:3:1: error: expected declaration\" >&2; exit 1' -c -o fs/foo.o fs/foo.c"
    (root / "fs" / ".foo.o.cmd").write_text(CMD.replace(parse_cmd("fs/foo.o", CMD).command, failing))
    patch = tmp_path / "fix.patch"
    patch.write_text(PATCH)
    before = sorted((p.relative_to(root), p.read_bytes()) for p in root.rglob("*") if p.is_file())
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "build", "--kdir", str(root), str(patch),
                           "-o", str(tmp_path / "lp.ko")], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "fs/foo.o: compiling it failed" in proc.stderr and "error: expected declaration" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "lp.ko").exists()
    assert sorted((p.relative_to(root), p.read_bytes()) for p in root.rglob("*") if p.is_file()) == before


def test_build_command_line_errors_are_one_line(tmp_path: Path) -> None:
    patch = tmp_path / "fix.patch"
    patch.write_text(PATCH)
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "build", "--kdir", str(tmp_path / "none"),
                           str(patch)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "none: no such folder (a kernel tree)" in proc.stderr
    assert "Traceback" not in proc.stderr
    root = _fake_tree(tmp_path)
    (root / "Makefile").write_text("")
    (root / ".config").write_text("")
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "build", "--kdir", str(root), str(patch)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "vmlinux: no such file" in proc.stderr


def _o_tree(tmp_path: Path, inside: bool) -> tuple[Tree, Path]:
    """A fake O= build: the sources, and an object folder inside them (kbuild: `..`) or elsewhere."""
    src = _fake_tree(tmp_path)
    out = src / "build" if inside else tmp_path / "objects"
    (out / "fs").mkdir(parents=True)
    (out / "source").symlink_to(".." if inside else str(src))
    ref = ".." if inside else str(src)
    (out / "fs" / ".foo.o.cmd").write_text(CMD.replace(" fs/foo.c", f" {ref}/fs/foo.c")
                                           .replace("  fs/internal.h", f"  {ref}/fs/internal.h")
                                           .replace("  include/linux/kconfig.h", f"  {ref}/include/linux/kconfig.h"))
    return Tree(out), src


@pytest.mark.parametrize("inside", [True, False])
def test_o_folders_map_recorded_paths_to_the_sources(tmp_path: Path, inside: bool) -> None:
    tree, src = _o_tree(tmp_path, inside)
    assert tree.srctree == src.resolve()
    assert tree.src_ref == (".." if inside else str(src.resolve()))
    assert tree.objects_of_source("fs/foo.c") == ["fs/foo.o"]
    assert tree.objects_including("fs/internal.h") == ["fs/foo.o"]
    assert tree.source_path("include/generated/autoconf.h") is None  # a file of the object folder


@pytest.mark.parametrize("inside", [True, False])
def test_o_folder_workspaces_run_in_the_shadow_and_redirect_sources(tmp_path: Path, inside: bool) -> None:
    from klpdiff.build.command import workspace

    tree, src = _o_tree(tmp_path, inside)
    space = workspace(tree, tmp_path / "work", "patched")
    space.sources.own_copy("fs/foo.c").write_text("patched\n")
    space.writable("fs/foo.o").write_bytes(b"new")
    assert space.cwd.is_dir() and not space.cwd.is_symlink()
    cmd = space.command(f"gcc -I{tree.src_ref}/include -c -o fs/foo.o {tree.src_ref}/fs/foo.c")
    source = cmd.split()[-1]
    assert (space.cwd / source).read_text() == "patched\n"  # the command reads the patched copy
    assert (src / "fs" / "foo.c").read_text() == "int a;\nint c;\nint d;\n"
    assert not (tree.root / "fs" / "foo.o").exists()


def test_module_membership_comes_from_the_recorded_command(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path)
    drv = root / "drivers" / "input"
    drv.mkdir(parents=True)
    module_cmd = CMD.replace("fs/foo", "drivers/input/joy-core").replace(
        "-DKBUILD_MODFILE='\"drivers/input/joy-core\"'",
        "-DMODULE -DKBUILD_MODFILE='\"drivers/input/joy-dev\"' -DKBUILD_MODNAME='\"joy_dev\"'")
    (drv / ".joy-core.o.cmd").write_text(module_cmd)
    (drv / "joy-dev.ko").write_bytes(b"\x7fELF")
    tree = Tree(root)
    assert tree.module_of("drivers/input/joy-core.o") == "joy_dev"
    assert tree.module_file("drivers/input/joy-core.o") == drv / "joy-dev.ko"
    assert tree.module_of("fs/foo.o") is None and tree.module_file("fs/foo.o") is None  # vmlinux


@pytest.mark.parametrize(("command", "flags"), [
    ("gcc -O2 -c -o fs/foo.o fs/foo.c", ["-g1"]),                             # no debug information
    ("gcc -O2 -g -gdwarf-5 -c -o fs/foo.o fs/foo.c", []),                     # Debian's: line tables already
    ("gcc -O2 -gdwarf-4 -c -o fs/foo.o fs/foo.c", []),
    ("gcc -O2 -g -g0 -c -o fs/foo.o fs/foo.c", ["-g1"]),                      # the last level wins
    ("gcc -O2 -g0 -c -o fs/foo.o fs/foo.c ; ./tools/objtool/objtool -g fs/foo.o", ["-g1"]),  # compiler only
])
def test_every_compile_makes_line_tables(command: str, flags: list[str]) -> None:
    from klpdiff.build.command import line_table_flags

    assert line_table_flags(command) == flags


def test_the_arch_rules_say_what_klpdiff_build_adds_to_a_kernel_s_compile_command() -> None:
    from klpdiff.build.command import arch_cflags

    # ppc64le: the medium model's TOC-relative data references cannot reach the kernel from a module
    assert arch_cflags([], "powerpc") == ["-mcmodel=large"]
    assert arch_cflags([], "x86") == [] and arch_cflags([], "s390") == [] and arch_cflags([], "arm64") == []
    assert arch_cflags([], "sparc") == []  # no rules for it: nothing added (the diff stage says what is missing)


def test_many_diffs_in_workers_give_what_one_at_a_time_gives(tmp_path: Path) -> None:
    """batch.diff_many: the same verdicts, reports and output bytes with two workers as with one."""
    from klpdiff.build.batch import DiffJob, diff_many
    from klpdiff.diff.pipeline import Options

    from .conftest import CORPUS

    names = ["cmdline-string", "data-new", "meminfo-init", "new-function", "bug-table-section", "no-change"]
    found = [(CORPUS / "x86_64" / f"{n}.ORIG.o", next(iter(sorted((CORPUS / "x86_64").glob(f"{n}.PATCHED*.o"))),
                                                       None)) for n in names]
    pairs = [(o, p) for o, p in found if o.exists() and p is not None]
    if len(pairs) < 3:
        pytest.skip(f"corpus not found at {CORPUS}")
    runs = []
    for workers in (1, 2):
        (tmp_path / str(workers)).mkdir()
        jobs = [DiffJob(o, p, tmp_path / str(workers) / f"{n}.o", Options()) for n, (o, p) in enumerate(pairs)]
        results = diff_many(jobs, workers)
        runs.append([(r.verdict, replace(r.report, output=None), r.output.read_bytes() if r.output else None)
                     for r in results])
    assert runs[0] == runs[1]
    assert {v for v, _f, _o in runs[0]} >= {"ok", "error"}  # refusals come back from the workers too


@pytest.mark.parametrize(("count", "processes"), [(200, 2), (7, 2), (1, 4), (1000, 8), (0, 2)])
def test_jobs_are_handed_out_in_order_in_chunks_that_shrink_to_single_jobs(count: int, processes: int) -> None:
    from klpdiff.build.batch import guided_chunks

    chunks = guided_chunks(count, processes)
    assert [i for start, end in chunks for i in range(start, end)] == list(range(count))
    sizes = [end - start for start, end in chunks]
    assert all(size >= 1 for size in sizes) and sizes == sorted(sizes, reverse=True)
    assert not sizes or sizes[-1] == 1  # the workers end on single jobs, together
    assert len(chunks) <= max(count, 1) and (count < 100 or len(chunks) < count // 4)  # few round trips


def test_a_layout_change_allowed_in_one_file_of_a_patch_is_allowed_for_all_of_it(tmp_path: Path) -> None:
    """KLPDIFF_ALLOW_LAYOUT_CHANGE in one patched object reaches every diff of the build, with the option's."""
    src = tmp_path / "marked.c"
    src.write_text('static const char __klpdiff_allow_layout_1[] __attribute__((used, aligned(1), '
                   'section(".discard.klpdiff.allow_layout_change"))) = "struct  mm_struct";\n'
                   "int plain(int x) { return x; }\n")
    marked, plain = tmp_path / "marked.o", tmp_path / "plain.o"
    subprocess.run(["gcc", "-c", str(src), "-o", str(marked)], check=True)
    subprocess.run(["gcc", "-c", "-x", "c", "-", "-o", str(plain)], input="int f(void) { return 1; }\n",
                   text=True, check=True)
    opts = BuildOptions(kdir=tmp_path, patches=[], name="t", output=tmp_path / "t.ko",
                        allow_layout_changes=["enum state"])
    pairs = {"a.o": (plain, marked), "b.o": (plain, plain)}
    assert _allowed_layouts(pairs, opts) == ["enum state", "struct mm_struct"]


def test_a_clang_built_tree_builds_its_module_with_clang() -> None:
    from klpdiff.build.command import toolchain_vars
    from klpdiff.build.stock import read_config

    assert toolchain_vars(read_config("CONFIG_CC_IS_GCC=y\n")) == ()
    assert toolchain_vars(read_config("CONFIG_CC_IS_CLANG=y\nCONFIG_LD_IS_LLD=y\n")) == ("LLVM=1",)
    assert toolchain_vars(read_config("CONFIG_CC_IS_CLANG=y\nCONFIG_LD_IS_BFD=y\n")) == ("CC=clang",)


@pytest.mark.parametrize(("text", "said"), [
    ("--- a/../../etc/x.c\n+++ b/../../etc/x.c\n@@ -1 +1 @@\n-a\n+b\n", "../../etc/x.c is outside the kernel tree"),
    ("--- /etc/x.c\n+++ /etc/x.c\n@@ -1 +1 @@\n-a\n+b\n", "/etc/x.c is outside the kernel tree"),
    ("diff --git a/fs/a.c b/fs/a.c\ndeleted file mode 100644\n--- a/fs/a.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n",
     "deletes fs/a.c"),
    ("--- a/fs/a.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n", "deletes fs/a.c"),
    ("diff --git a/fs/a.c b/fs/b.c\nsimilarity index 100%\nrename from fs/a.c\nrename to fs/b.c\n", "renames fs/b.c"),
    ("diff --git a/fs/a.c b/fs/a.c\nold mode 100644\nnew mode 100755\n", "changes the mode of fs/a.c"),
    ("diff --git a/fw/x.bin b/fw/x.bin\nindex 1..2 100644\nGIT binary patch\nliteral 3\nKcmZp00\n",
     "changes the binary file fw/x.bin"),
])
def test_patches_a_livepatch_cannot_carry_are_refused_saying_what_they_do(text: str, said: str,
                                                                          tmp_path: Path) -> None:
    from klpdiff.build.patches import read_patch
    from klpdiff.core.errors import InputError

    patch = tmp_path / "fix.patch"
    patch.write_text(text)
    with pytest.raises(InputError) as refused:
        read_patch(patch)
    assert said in str(refused.value) and str(patch) in str(refused.value)


def test_tool_output_with_bytes_that_are_not_utf8_stays_one_line(tmp_path: Path) -> None:
    """Found by the patch fuzzer: patch(1) quotes a malformed line with its Latin-1 bytes, and a compiler
    quotes source lines as they are; reading their output as strict UTF-8 was an internal error."""
    root = _fake_tree(tmp_path)
    for name in ("Makefile", ".config", "vmlinux", "Module.symvers"):
        (root / name).write_text("")
    patch = tmp_path / "fix.patch"
    patch.write_bytes(b"--- a/fs/foo.c\n+++ b/fs/foo.c\n@@ -1,3 +1,3 @@\n int a;\n\xe9\xff int c;\n-int d;\n+int e;\n")
    proc = subprocess.run([sys.executable, "-m", "klpdiff.cli", "build", "--check", "-q", "--kdir", str(root),
                           str(patch)], capture_output=True, text=True, errors="replace")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "does not apply" in proc.stderr and "\\xe9\\xff" in proc.stderr
