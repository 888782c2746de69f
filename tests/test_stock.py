"""A distribution's stock kernel: the package logic, the refusals and the tree index, in process.

The real runs (Debian's packages fetched as an ordinary user, prepared, built, booted) are
tests/distro/debian-stock.sh; the header index is proved against kbuild's own records on the e2e
tree in tests/kernel/test_header_index.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from klpdiff.build.distro import Debian, DistroError, distribution, fields_of, read_os_release, upstream_series
from klpdiff.build.kbuild import Tree
from klpdiff.build.kindex import (
    TreeIndex,
    compiled_source,
    dependency_argv,
    make_records,
    parse_dry_run,
    parse_make_deps,
)
from klpdiff.build.stock import (
    choose_compiler,
    compiler_candidates,
    compiler_version,
    config_drift,
    kernel_version,
    read_config,
    require_livepatch,
    require_version,
)
from klpdiff.core.errors import InputError

# --- kbuild's dry run ----------------------------------------------------------------------------

CMD = ("gcc-12 -Wp,-MMD,fs/.dcache.o.d -nostdinc -I./include -DKBUILD_MODFILE='\\''\"fs/dcache\"'\\'' "
       "-DKBUILD_MODNAME='\\''\"dcache\"'\\'' -c -o fs/dcache.o fs/dcache.c   ; ./tools/objtool/objtool --orc "
       "fs/dcache.o")
DRY_RUN = [
    "set -e;  echo '  CC      fs/dcache.o'; trap 'rm -f fs/dcache.o' INT; gcc-12 ... -c -o fs/dcache.o fs/dcache.c;"
    f" scripts/basic/fixdep fs/.dcache.o.d fs/dcache.o '{CMD}' > fs/.dcache.o.cmd; rm -f fs/.dcache.o.d\n",
    "  as -o arch/x86/entry/entry_64.o ...; scripts/basic/fixdep arch/x86/entry/.entry_64.o.d "
    "arch/x86/entry/entry_64.o 'gcc -D__ASSEMBLY__ -c -o arch/x86/entry/entry_64.o arch/x86/entry/entry_64.S' "
    "> arch/x86/entry/.entry_64.o.cmd\n",
    "make -f ./scripts/Makefile.build obj=fs\n",
]


def test_the_dry_run_gives_each_c_object_the_command_a_build_would_save() -> None:
    found = parse_dry_run(DRY_RUN)
    assert list(found) == ["fs/dcache.o"]  # the assembly object is not a C object
    rec = found["fs/dcache.o"]
    assert rec.source == "fs/dcache.c"
    # the shell's '\'' quoting undone: the text is what .dcache.o.cmd would hold after savedcmd_
    assert "-DKBUILD_MODNAME='\"dcache\"'" in rec.command
    assert rec.command.endswith("objtool --orc fs/dcache.o")


def test_the_source_is_the_one_compiled_into_the_object() -> None:
    assert compiled_source("fs/a.o", "gcc -c -o fs/a.o fs/a.c ; objtool fs/a.o") == "fs/a.c"
    assert compiled_source("fs/a.o", "gcc -c -o fs/b.o fs/b.c") is None
    assert compiled_source("fs/a.o", "gcc -c -o fs/a.o fs/a.S") is None


def test_the_dependency_command_compiles_nothing_and_lists_missing_headers() -> None:
    argv = dependency_argv("gcc -Wp,-MMD,fs/.a.o.d -I./include -DX='\"y\"' -c -o fs/a.o fs/a.c ; objtool fs/a.o",
                           "/tmp/a.d")
    assert argv == ["gcc", "-I./include", '-DX="y"', "fs/a.c", "-MM", "-MG", "-MF", "/tmp/a.d"]


def test_make_dependency_files_are_read_across_continuations() -> None:
    text = "a.o: fs/a.c include/linux/x.h \\\n include/generated/autoconf.h \\\n  fs/internal.h\n"
    assert parse_make_deps(text) == ["fs/a.c", "include/linux/x.h", "include/generated/autoconf.h", "fs/internal.h"]
    assert parse_make_deps("") == []


@pytest.fixture
def toy_tree(tmp_path: Path) -> Path:
    """A tree with a kbuild-like Makefile whose dry run prints fixdep lines, and real sources."""
    root = tmp_path / "tree"
    (root / "fs").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "x.h").write_text("#include \"y.h\"\n")
    (root / "include" / "y.h").write_text("int y;\n")
    (root / "fs" / "a.c").write_text("#include \"x.h\"\nint a;\n")
    (root / "fs" / "b.c").write_text("int b;\n")
    (root / "fs" / "m.c").write_text("#include \"y.h\"\n#include \"gen.h\"\n")
    rules = []
    for name, module in (("a", ""), ("b", ""), ("m", " -DMODULE -DKBUILD_MODNAME='\"mymod\"'"), ("g", "")):
        cmd = f"gcc -Wp,-MMD,fs/.{name}.o.d -I./include{module} -c -o fs/{name}.o fs/{name}.c"
        quoted = cmd.replace("'", "'\\''")
        rules.append(f"\tgcc -c -o fs/{name}.o fs/{name}.c; scripts/basic/fixdep fs/.{name}.o.d fs/{name}.o "
                     f"'{quoted}' > fs/.{name}.o.cmd")
    # fs/g.c is generated, as kbuild generates sources: it exists once its object is made
    (root / "Makefile").write_text("all:\n" + "\n".join(rules) + "\n"
                                   "fs/g.o:\n\tprintf '#include \"y.h\"\\n' > fs/g.c\n")
    return root


def test_a_prepared_tree_answers_from_its_index(toy_tree: Path, tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    assert make_records(toy_tree, [], index_dir) == 4
    index = TreeIndex(toy_tree, index_dir)
    tree = Tree(toy_tree, index=index)
    assert tree.objects_of_source("fs/a.c") == ["fs/a.o"]
    assert tree.objects_of_source("fs/none.c") == []
    assert tree.module_of("fs/m.o") == "mymod" and tree.module_of("fs/a.o") is None
    assert not list(toy_tree.rglob("*.o")) and not (toy_tree / "fs" / "g.c").exists()  # the dry run made nothing
    index.make_includes([], 2, lambda _line: None)
    # through another header, from a generated source, and a missing header listed rather than fatal
    assert tree.objects_including("include/y.h") == ["fs/a.o", "fs/g.o", "fs/m.o"]
    assert tree.objects_including("include/x.h") == ["fs/a.o"]
    assert index.including("gen.h") == (["fs/m.o"], [])
    assert tree.objects_including("include/none.h") == []


def test_a_tree_index_that_is_not_made_yet_or_damaged_is_one_error(tmp_path: Path) -> None:
    index = TreeIndex(tmp_path, tmp_path / "index")
    with pytest.raises(InputError, match="unreadable tree index"):
        index.compiled("fs/a.o")
    (tmp_path / "index").mkdir()
    with pytest.raises(InputError, match="header index is not made yet"):
        index.objects_including("include/x.h")


# --- Debian's packages ---------------------------------------------------------------------------

class FakeApt:
    """apt-cache as a table: package (or package=version) -> its fields."""

    def __init__(self, shown: dict[str, str], madison: str = "") -> None:
        self.shown = shown
        self.madison = madison
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], cwd: Path | None) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if argv[:2] == ["apt-cache", "madison"]:
            return subprocess.CompletedProcess(list(argv), 0, self.madison, "")
        text = self.shown.get(argv[-1], "")
        return subprocess.CompletedProcess(list(argv), 0 if text else 100, text, "")


R = "6.1.0-57-amd64"
IMAGE = "Package: linux-image-6.1.0-57-amd64-unsigned\nSource: linux\nVersion: 6.1.192-3\nArchitecture: amd64\n"


def debian_with(**extra: str) -> FakeApt:
    shown = {f"linux-image-{R}-unsigned": IMAGE,
             f"linux-image-{R}-dbg:amd64=6.1.192-3": "Package: x\nVersion: 6.1.192-3\n",
             f"linux-headers-{R}:amd64=6.1.192-3": "Package: y\nVersion: 6.1.192-3\n",
             "linux-source-6.1=6.1.192-3": "Package: linux-source-6.1\nVersion: 6.1.192-3\n"}
    shown.update(extra)
    return FakeApt({k: v for k, v in shown.items() if v})


def test_debian_names_the_four_packages_of_one_version() -> None:
    packages = Debian(debian_with()).locate(R, source_given=False)
    assert (packages.version, packages.arch, packages.image, packages.debug, packages.headers, packages.source) == (
        "6.1.192-3", "amd64", f"linux-image-{R}-unsigned", f"linux-image-{R}-dbg", f"linux-headers-{R}",
        "linux-source-6.1")


def test_a_kernel_the_archive_does_not_have_is_refused_by_name() -> None:
    with pytest.raises(DistroError, match=r"6\.18\.44-fc: no such kernel in this machine's Debian package lists"):
        Debian(debian_with()).locate("6.18.44-fc", source_given=False)
    with pytest.raises(DistroError, match="not a kernel release name"):
        Debian(debian_with()).locate("../../etc", source_given=False)


def test_a_source_of_another_version_is_refused_naming_both_unless_given() -> None:
    apt = debian_with(**{"linux-source-6.1=6.1.192-3": ""})
    apt.madison = (" linux-source-6.1 | 6.1.194-1 | http://deb.debian.org/debian-security bookworm-security/main\n"
                   " linux-source-6.1 | 6.1.176-1 | http://deb.debian.org/debian bookworm/main\n")
    with pytest.raises(DistroError) as refused:
        Debian(apt).locate(R, source_given=False)
    message = str(refused.value)
    assert "6.1.192-3" in message and "6.1.176-1, 6.1.194-1" in message and "--source" in message
    assert Debian(apt).locate(R, source_given=True).source is None


def test_a_missing_debug_package_is_refused_with_what_it_carries() -> None:
    apt = debian_with(**{f"linux-image-{R}-dbg:amd64=6.1.192-3": ""})
    with pytest.raises(DistroError, match=r"not linux-image-6\.1\.0-57-amd64-dbg 6\.1\.192-3 \(its vmlinux"):
        Debian(apt).locate(R, source_given=False)


def test_a_signed_image_gives_the_version_it_was_built_from() -> None:
    signed = ("Package: linux-image-6.1.0-57-amd64\nSource: linux-signed-amd64 (6.1.192+3)\nVersion: 6.1.192+3\n"
              "Built-Using: linux (= 6.1.192-3)\nArchitecture: amd64\n")
    apt = debian_with(**{f"linux-image-{R}-unsigned": "", f"linux-image-{R}": signed})
    assert Debian(apt).locate(R, source_given=False).version == "6.1.192-3"


def test_an_unknown_distribution_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    os_release = tmp_path / "os-release"
    os_release.write_text('PRETTY_NAME="Fedora Linux 41"\nID=fedora\n')
    with pytest.raises(DistroError, match=r"Fedora Linux 41, whose kernel packages klpdiff does not know "
                                          r"\(it knows: debian\)"):
        distribution(os_release)
    os_release.write_text('ID="debian"\nVERSION_ID="12"\n')
    assert distribution(os_release).name == "debian"
    assert read_os_release(os_release)["VERSION_ID"] == "12"


def test_package_fields_and_versions() -> None:
    assert fields_of("Package: a\nDescription: x\n more\nVersion: 1\n\nPackage: b\n") == {
        "Package": "a", "Description": "x", "Version": "1"}
    assert upstream_series("6.12.118-1~deb12u1") == "6.12"
    assert kernel_version("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n") == "6.1.192"


# --- the refusals before a tree is prepared ------------------------------------------------------

def test_config_drift_ignores_options_the_stock_config_leaves_out() -> None:
    stock = read_config("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n")
    assert stock == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x"'}
    same = read_config("CONFIG_A=y\nCONFIG_C=\"x\"\nCONFIG_MODULE_SIG_ALL=y\n")
    assert config_drift(stock, same) == []
    moved = read_config("CONFIG_A=m\nCONFIG_B=y\nCONFIG_C=\"x\"\n")
    assert config_drift(stock, moved) == ["CONFIG_A is y in the stock config, m here",
                                          "CONFIG_B is n in the stock config, y here"]


GCC12 = "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"


def test_the_compiler_that_built_the_kernel_is_chosen_by_its_version() -> None:
    assert compiler_version(GCC12) == "(Debian 12.2.0-14+deb12u1) 12.2.0"
    assert compiler_candidates(GCC12, "") == [("CC=gcc-12",), ("CC=gcc",)]
    assert compiler_candidates("Debian clang version 14.0.6", "") == [("LLVM=1",), ("LLVM=-14",)]
    versions = {"gcc-12": None, "gcc": "gcc (Debian 12.2.0-14+deb12u1) 12.2.0"}
    assert choose_compiler(GCC12, "", False, versions.get) == (("CC=gcc",), None)
    cross = {"powerpc64le-linux-gnu-gcc-12": "powerpc64le-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"}
    assert choose_compiler(GCC12, "powerpc64le-linux-gnu-", False, cross.get)[0] == (
        "CC=powerpc64le-linux-gnu-gcc-12",)


def test_another_compiler_is_refused_unless_the_check_is_skipped() -> None:
    other = {"gcc-12": None, "gcc": "gcc (Debian 14.2.0-19) 14.2.0"}
    with pytest.raises(DistroError, match=r"built by 'gcc-12 \(Debian 12\.2\.0-14\+deb12u1\) 12\.2\.0'.*gcc is "
                                          r"'gcc \(Debian 14\.2\.0-19\) 14\.2\.0'.*--skip-compiler-check"):
        choose_compiler(GCC12, "", False, other.get)
    chosen, note = choose_compiler(GCC12, "", True, other.get)
    assert chosen == ("CC=gcc",) and note is not None and "compiler check skipped" in note
    with pytest.raises(DistroError, match="no gcc-12 or gcc on this machine"):
        choose_compiler(GCC12, "", True, {}.get)


def test_a_kernel_without_livepatch_or_a_source_of_another_version_is_refused() -> None:
    config = Path("/boot/config-6.1.0-57-amd64")
    require_livepatch({"CONFIG_LIVEPATCH": "y"}, config, R)
    with pytest.raises(DistroError, match=r"config-6\.1\.0-57-amd64: 6\.1\.0-57-amd64 is built without "
                                          r"CONFIG_LIVEPATCH"):
        require_livepatch(read_config("# CONFIG_LIVEPATCH is not set\n"), config, R)
    packages = Debian(debian_with()).locate(R, source_given=True)
    require_version("6.1.192", packages, Path("linux.tar.xz"))
    with pytest.raises(DistroError, match=r"linux\.tar\.xz: the source of Linux 6\.1\.190, but 6\.1\.0-57-amd64 is "
                                          r"6\.1\.192-3 \(Linux 6\.1\.192\)"):
        require_version("6.1.190", packages, Path("linux.tar.xz"))
