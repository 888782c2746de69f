"""`klpdiff build`: from source patches to a livepatch module, on the tree the running kernel came from.

In: a configured and built kernel tree (built in place, the normal way: no
section flags) or a distribution's stock kernel by name (`stock`: fetched and
prepared once, its records from `kindex`), one or more patches, and options. Out: a `BuildResult` — per
affected object its verdict and the diff's analysis, and the livepatch module
when one was written.

Phases:
1. find: the objects the patches affect, from kbuild's records (`kbuild.Tree`):
   a `.c` file maps to its object, a header to every object whose recorded
   dependencies name it. Assembly, build files and anything else a livepatch
   cannot carry are refused; documentation is passed over.
2. compile: each object twice, with kbuild's own recorded command plus the
   section flags (and `-g1` where the command makes no debug information, so
   every diff has line tables for exact `__LINE__` decisions; the diff never
   copies debug sections), in two private shadows of the tree
   (`shadow.Shadow`): one as it is, one with the patches applied. The user's
   tree is never written to.
3. diff: every pair, in forked workers (batch.py, -j at a time), with the tree's vmlinux (or the module's
   .ko), Module.symvers and the object's module name.
4. module: `klpdiff module` on the diff objects, built with the tree's kbuild.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import field
from pathlib import Path

from ..core.cachedir import cache_dir
from ..core.errors import InputError, KlpdiffError, Verdict
from ..core.inputs import input_folder
from ..core.installation import ENGINE_ROOT, data_dir
from ..core.outputs import Progress
from ..core.records import record
from ..diff.layoutcheck import allowed_in
from ..diff.pipeline import Options
from ..elf.read import read_elf
from ..klp.module import build_module
from ..ruleset.load import arch_for_kernel, arch_for_machine, load_ruleset, rule_dirs
from .batch import DiffJob, DiffResult, diff_many
from .kbuild import Tree, compiler_of, cross_prefix, split_first, with_flags
from .kindex import TreeIndex
from .patches import FileChange, FileKind, apply, read_patch
from .shadow import Shadow
from .stock import read_config, stock_kernel

SECTION_FLAGS = ["-ffunction-sections", "-fdata-sections"]
# gcc options that set the debug level (the last one wins); -gdwarf[-N] and -ggdb without a level mean 2
_DEBUG_LEVEL = re.compile(r"^-g(?:(?P<level>[0-3])|gdb(?P<gdb>[0-3])?|dwarf(?:-[0-9])?)?$")


def line_table_flags(command: str) -> list[str]:
    """`-g1` (line tables, the least debug information) when the compile command makes none, else
    nothing: gcc's code does not depend on -g, and line tables make `__LINE__` decisions exact."""
    level = 0
    for token in split_first(command)[0].split():
        m = _DEBUG_LEVEL.match(token.strip("'\""))
        if m:
            digits = m.group("level") or m.group("gdb")
            level = int(digits) if digits is not None else max(level, 2)
    return [] if level > 0 else ["-g1"]


def macro_headers_dir() -> Path:
    """klpdiff's patch-author headers (kpatch-macros.h, kpatch-syscall.h, linux/livepatch_helpers.h)."""
    found = data_dir("include", "kpatch-macros.h")
    if found is None:
        raise InputError(f"{ENGINE_ROOT}: the patch-author headers are missing from this installation")
    return found
_DEPFILE = re.compile(r"-Wp,-MM?D,(\S+)|-MF\s+(\S+)")


class BuildFailed(KlpdiffError):
    """A compile or kbuild step failed; the message ends with the tool's own output."""




@record(frozen=False)
class BuildOptions:
    kdir: Path | None                # a tree built as the running kernel was; None: a stock kernel by name
    patches: Sequence[Path]
    name: str
    output: Path
    jobs: int = 2
    fuzz: int | None = None
    workdir: Path | None = None      # keep shadows, objects and diffs here (default: a temporary folder)
    rules_dirs: Sequence[Path] = ()
    check: bool = False              # find, compile and diff only: verdicts, no livepatch relocations, no module
    # the running kernel's files, when they are not in the tree (a distribution kernel: its debug vmlinux,
    # its headers package's Module.symvers, and that package's folder to build the module against)
    vmlinux: Path | None = None
    symvers: Path | None = None
    module_kdir: Path | None = None
    modules: Path | None = None      # where the running kernel's .ko files are (/lib/modules/VERSION)
    allow_layout_changes: Sequence[str] = ()  # types whose layout change the author allows
    kernel: str | None = None        # a distribution's stock kernel by release (default: the running kernel)
    source: Path | None = None       # its source (a tree or tarball), when the archive lacks the right one
    skip_compiler_check: bool = False


@record
class Target:
    """The kernel a build is for: its tree, the running kernel's files and how kbuild is called."""

    tree: Tree
    vmlinux: Path
    symvers: Path
    modules: Path | None
    module_kdir: Path
    make_vars: tuple[str, ...] = ()


def target_of(opts: BuildOptions, progress: Progress, notes: list[str]) -> Target:
    """A tree the user built (--kdir), or a distribution's stock kernel (--kernel, or the running one)."""
    if opts.kdir is None:
        stock = stock_kernel(opts.kernel or os.uname().release, rule_dirs(opts.rules_dirs), cache_dir(),
                             opts.source, opts.skip_compiler_check, opts.jobs, progress)
        notes.extend(stock.notes)
        files = stock.files
        return Target(Tree(stock.tree, index=stock.index), opts.vmlinux or files.vmlinux,
                      opts.symvers or files.symvers, opts.modules or files.modules, opts.module_kdir or stock.tree,
                      stock.make_vars)
    tree = Tree(input_folder(opts.kdir, "a kernel tree"))
    if not (tree.root / "Makefile").is_file() or not (tree.root / ".config").is_file():
        raise InputError(f"{opts.kdir}: not a configured kernel tree (no Makefile or .config)")
    return Target(tree, opts.vmlinux or tree.root / "vmlinux", opts.symvers or tree.root / "Module.symvers",
                  opts.modules, opts.module_kdir or tree.root,
                  toolchain_vars(read_config((tree.root / ".config").read_text(errors="replace"))))


def toolchain_vars(config: dict[str, str]) -> tuple[str, ...]:
    """What kbuild must be told to build a module with the toolchain the tree was built with: clang
    (LLVM=1 when it also linked with lld) is never kbuild's default."""
    if config.get("CONFIG_CC_IS_CLANG") != "y":
        return ()
    return ("LLVM=1",) if config.get("CONFIG_LD_IS_LLD") == "y" else ("CC=clang",)


@record(frozen=False)
class ObjectResult:
    obj: str                          # fs/dcache.o
    objname: str                      # vmlinux or the module's name
    diff: DiffResult

    @property
    def verdict(self) -> Verdict:
        return self.diff.verdict


@record(frozen=False)
class BuildResult:
    objects: list[ObjectResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    module: Path | None = None
    checked: bool = False  # --check: no module was meant to be built
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase: find, compile, diff, module

    @property
    def verdict(self) -> Verdict:
        """error when any object is refused; ok when a module was written (or, with --check, would be);
        else no-change."""
        if any(r.verdict is Verdict.ERROR for r in self.objects):
            return Verdict.ERROR
        if self.module is not None or (self.checked and any(r.verdict is Verdict.OK for r in self.objects)):
            return Verdict.OK
        return Verdict.NO_CHANGE


def find_objects(tree: Tree, changes: list[FileChange], notes: list[str]) -> list[str]:
    """The objects the changed files affect; refuse what a livepatch cannot carry."""
    refused = [c for c in changes if c.kind in (FileKind.ASSEMBLY, FileKind.BUILD, FileKind.UNSUPPORTED)]
    if refused:
        listed = ", ".join(f"{c.path} ({c.kind.value})" for c in refused)
        raise InputError(f"the patch changes what a livepatch cannot carry: {listed}; only C sources and "
                         f"headers can be livepatched")
    objects: set[str] = set()
    for change in changes:
        if change.kind is FileKind.DOCUMENTATION:
            notes.append(f"{change.path}: not part of the kernel image, passed over")
        elif change.kind is FileKind.C_SOURCE:
            found = tree.objects_of_source(change.path)
            if not found and not change.created and not os.path.lexists(tree.root / change.path):
                raise InputError(f"{change.path}: no such file in {tree.root} (is the patch for another kernel "
                                 f"version, or are its paths not a/... and b/...?)")
            if not found:
                what = "is a new file" if change.created else "was never compiled by this build"
                where = (f"not among the objects {tree.root}'s config compiles" if tree.index is not None else
                         f"no {tree.cmd_file(_object_of(change.path)).name} in {tree.root}")
                raise InputError(f"{change.path} {what} ({where}): is it enabled in .config?")
            objects.update(found)
        elif change.kind is FileKind.HEADER:
            found = tree.objects_including(change.path)
            notes.append(f"{change.path}: included by {len(found)} compiled object(s)")
            if isinstance(tree.index, TreeIndex):
                unknown = tree.index.including(change.path)[1]
                if unknown:
                    notes.append(f"{change.path}: {len(unknown)} object(s) compile sources the prepared tree "
                                 f"could not make, whose headers are unknown: {', '.join(unknown[:5])}")
            objects.update(found)
    return sorted(objects)


def _object_of(source: str) -> str:
    return str(Path(source).with_suffix(".o"))


def _outputs(obj: str, command: str) -> list[str]:
    """What compiling `obj` writes: the object and the dependency file the command names."""
    out = [obj]
    for m in _DEPFILE.finditer(split_first(command)[0]):
        out.append(m.group(1) or m.group(2))
    return out


@record(frozen=False)
class Workspace:
    """One private view of the build (the original, or the patched): commands run in `cwd`, the
    object tree's files are written through `objects` (at `prefix` inside it), patched sources go
    into `sources`. With an O= folder outside the sources, commands name the sources by absolute
    path, which `redirect` maps to the shadow."""

    name: str
    objects: Shadow
    prefix: str
    sources: Shadow
    redirect: tuple[str, str] | None = None

    @property
    def cwd(self) -> Path:
        """A real folder of the shadow (never a link into the tree): relative writes stay private."""
        return self.objects.folder(self.prefix) if self.prefix else self.objects.root

    def object_path(self, obj: str) -> Path:
        return self.objects.path(f"{self.prefix}/{obj}" if self.prefix else obj)

    def writable(self, obj_rel: str) -> Path:
        return self.objects.writable(f"{self.prefix}/{obj_rel}" if self.prefix else obj_rel)

    def command(self, recorded: str) -> str:
        if self.redirect is None:
            return recorded
        src, shadow = self.redirect
        return re.sub(re.escape(src) + r"(?=/|\s|$)", shadow, recorded)


def workspace(tree: Tree, root: Path, name: str) -> Workspace:
    """The shadows for one variant, laid out as the tree is: built in place, in an O= folder right
    inside the sources (kbuild names the sources `..`), or in an O= folder elsewhere (absolute)."""
    ref = tree.src_ref
    if ref == ".":
        shadow = Shadow(tree.root, root / name)
        return Workspace(name, shadow, "", shadow)
    if ref == "..":
        shadow = Shadow(tree.srctree, root / name)
        return Workspace(name, shadow, tree.root.resolve().name, shadow)
    objects, sources = Shadow(tree.root, root / name / "obj"), Shadow(tree.srctree, root / name / "src")
    return Workspace(name, objects, "", sources, (str(tree.srctree), str(sources.root)))


def _prepare(space: Workspace, obj: str, command: str) -> None:
    """Make the paths compiling `obj` writes writable in `space` (its folders real, no links)."""
    for rel in _outputs(obj, command):
        space.writable(rel)


class _CompileRunner:
    """Runs compile commands in shadows; `stop` terminates every one still running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[str]] = set()
        self._stopped = False

    def compile(self, space: Workspace, obj: str, command: str) -> Path:
        """Compile `obj` in `space`, whose output paths `_prepare` has made writable."""
        with self._lock:
            if self._stopped:
                raise BuildFailed(f"{obj}: not compiled, the build was stopped")
            proc = subprocess.Popen(["sh", "-c", space.command(command)], cwd=space.cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, errors="surrogateescape", start_new_session=True)
            self._running.add(proc)
        try:
            _out, err = proc.communicate()
        finally:
            with self._lock:
                self._running.discard(proc)
        if proc.returncode != 0:
            raise BuildFailed(f"{obj}: compiling it failed ({space.name}):\n{err.rstrip()}")
        return space.object_path(obj)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for proc in self._running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)


def build(opts: BuildOptions, progress: Progress) -> BuildResult:
    result = BuildResult(checked=opts.check)
    clock = time.monotonic()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.monotonic()
        result.seconds[phase] = round(now - clock, 3)
        clock = now

    changes = [c for p in opts.patches for c in read_patch(p)]
    target = target_of(opts, progress, result.notes)
    if target.tree.index is not None:
        lap("kernel")
    tree = target.tree
    for needed, option in () if opts.check else ((target.vmlinux, "--vmlinux"), (target.symvers, "--symvers")):
        if not needed.is_file():
            raise InputError(f"{needed}: no such file: klpdiff build needs the running kernel's {needed.name} "
                             f"(a tree built as the running kernel was, or {option})")
    if isinstance(tree.index, TreeIndex) and any(c.kind is FileKind.HEADER for c in changes):
        tree.index.make_includes(target.make_vars, opts.jobs, progress)
    objects = find_objects(tree, changes, result.notes)
    lap("find")
    progress(f"find: {len(objects)} object(s) to rebuild" + (f": {', '.join(objects)}" if objects else ""))
    if not objects:
        return result
    records = {obj: tree.compiled(obj) for obj in objects}
    owned = opts.workdir is None
    work = Path(tempfile.mkdtemp(prefix="klpdiff-build-")) if opts.workdir is None else opts.workdir
    try:
        work.mkdir(parents=True, exist_ok=True)
        orig, patched = workspace(tree, work, "orig"), workspace(tree, work, "patched")
        for patch in opts.patches:
            apply(patched.sources, patch, read_patch(patch), opts.fuzz)
        pairs = _compile_all(orig, patched, {o: r.command for o, r in records.items() if r}, opts.jobs, progress,
                             arch_cflags(opts.rules_dirs, tree.karch()))
        lap("compile")
        result.objects = _diff_all(target, pairs, work / "diff", opts, progress)
        lap("diff")
        diffs = [work / "diff" / _flat(r.obj) for r in result.objects if r.verdict is Verdict.OK]
        if result.verdict is Verdict.ERROR or not diffs or opts.check:
            return result
        progress(f"module: building livepatch-{opts.name}.ko from {len(diffs)} diff object(s)")
        compiler = compiler_of(next(r.command for r in records.values() if r))
        result.module = build_module(diffs, target.module_kdir, opts.name, opts.output, tree.karch(),
                                     cross_compile=cross_prefix(compiler), make_vars=target.make_vars)
        lap("module")
        return result
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)


def arch_cflags(rules_dirs: Sequence[Path], karch: str) -> list[str]:
    """What the arch rules add to the kernel's compile commands (arch.yaml kbuild.cflags)."""
    rule = arch_for_kernel(rule_dirs(rules_dirs), karch)
    return list(rule.kbuild.cflags) if rule is not None else []


def _compile_all(orig: Workspace, patched: Workspace, commands: dict[str, str], jobs: int,
                 progress: Progress, arch_flags: Sequence[str] = ()) -> dict[str, tuple[Path, Path]]:
    # the section flags, the arch rules' own, and klpdiff's macro headers after the tree's include folders
    flags = [*SECTION_FLAGS, *arch_flags, "-I", str(macro_headers_dir())]
    flagged = {obj: with_flags(cmd, [*flags, *line_table_flags(cmd)]) for obj, cmd in commands.items()}
    jobs_list = [(space, obj) for obj in sorted(flagged) for space in (orig, patched)]
    for space, obj in jobs_list:  # before any compile runs: making a folder real hides its files a while
        _prepare(space, obj, flagged[obj])
    progress(f"compile: {len(jobs_list)} compile(s) of {len(flagged)} object(s), {jobs} at a time")
    compiler = _CompileRunner()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = {(space.name, obj): pool.submit(compiler.compile, space, obj, flagged[obj])
                   for space, obj in jobs_list}
        done = {key: f.result() for key, f in futures.items()}
    except BaseException:  # a failed compile or Ctrl-C: stop the others before the shadows go
        compiler.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return {obj: (done[("orig", obj)], done[("patched", obj)]) for obj in flagged}


def _installed_module(folder: Path | None, module: str, work: Path) -> Path | None:
    """The running kernel's `module`.ko under `folder` (as /lib/modules/VERSION has them: maybe xz- or
    gzip-compressed, and with - or _ in the file name), decompressed into `work` when it has to be."""
    if folder is None:
        return None
    for path in sorted(folder.rglob("*.ko*")):
        stem, _, ext = path.name.partition(".ko")
        if stem.replace("-", "_") != module or ext not in ("", ".xz", ".gz"):
            continue
        if not ext:
            return path
        opener = lzma.open if ext == ".xz" else gzip.open
        plain = work / f"{module}.ko"
        with opener(path, "rb") as src:
            plain.write_bytes(src.read())
        return plain
    return None


def _flat(obj: str) -> str:
    return obj.replace("/", "__")


def _allowed_layouts(pairs: dict[str, tuple[Path, Path]], opts: BuildOptions) -> list[str]:
    """The types whose layout change the author allows: by option, and by KLPDIFF_ALLOW_LAYOUT_CHANGE in
    any file of the patch (a marker in one object allows the type for every object of the patch)."""
    allowed = set(opts.allow_layout_changes)
    dirs = list(opts.rules_dirs) or rule_dirs([])
    for _orig, patched in pairs.values():
        obj = read_elf(patched)
        arch = arch_for_machine(dirs, obj.machine)
        if arch is not None:
            allowed |= allowed_in(obj, load_ruleset(dirs, arch).markers)
    return sorted(allowed)


def _diff_all(target: Target, pairs: dict[str, tuple[Path, Path]], out_dir: Path, opts: BuildOptions,
              progress: Progress) -> list[ObjectResult]:
    tree, vmlinux, symvers = target.tree, target.vmlinux, target.symvers
    out_dir.mkdir(parents=True, exist_ok=True)
    allowed = _allowed_layouts(pairs, opts)
    jobs, names = [], []
    for obj, (orig, patched) in sorted(pairs.items()):
        module = tree.module_of(obj)
        symtab = vmlinux if module is None else tree.module_file(obj) or _installed_module(target.modules, module,
                                                                                            out_dir)
        if symtab is None and not opts.check:
            raise InputError(f"{obj}: belongs to module {module}, but its .ko is neither in {tree.root} nor "
                             f"under --modules")
        diff_opts = Options(rules_dirs=opts.rules_dirs, patching_module=module is not None,
                            symtab=None if opts.check else symtab,
                            symvers=None if opts.check else symvers, objname=module or "vmlinux",
                            allow_layout_changes=allowed)
        jobs.append(DiffJob(orig, patched, out_dir / _flat(obj), diff_opts))
        names.append((obj, module or "vmlinux"))
    results = []
    for (obj, objname), diff in zip(names, diff_many(jobs, opts.jobs), strict=True):
        progress(f"diff: {obj} ({objname}): {diff.verdict}")
        results.append(ObjectResult(obj, objname, diff))
    return results
