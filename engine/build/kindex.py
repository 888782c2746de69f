"""What a kernel tree would record about itself if it were built, for a tree kbuild only prepared.

In: a kernel source tree that is configured and prepared (`make prepare`) but not built — a
distribution's source with its stock config — and the make variables that build it. Out: a
`TreeIndex`, kept in a folder of klpdiff's cache, that answers what `kbuild.Tree` reads from
`.<object>.cmd` records in a built tree:

- every object's compile command and source, from kbuild's own dry run (`make -n`): kbuild hands
  each command to `scripts/basic/fixdep` to be saved as the object's record, so the dry run
  prints exactly the text a build would save (`records.json.gz`, made once per tree);
- which objects include a header, asked of the compiler: each C object's own command run as a
  preprocessor that lists the files it reads (`-MM -MG`, as kbuild's `-Wp,-MMD` does while it
  compiles) — made the first time a patch changes a header, once per tree (`includes.txt.gz`).

Writes only into the index folder; each file is complete or absent (written beside, then renamed).
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import re
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import InputError
from ..core.outputs import Progress, atomic_write
from .kbuild import CompiledObject, split_first

RECORDS = "records.json.gz"
INCLUDES = "includes.txt.gz"
_FORMAT = 1

# kbuild's cmd_and_fixdep: `...; scripts/basic/fixdep DEPFILE TARGET 'SAVED COMMAND' > .TARGET.cmd`,
# the saved command single-quoted for the shell ('\'' for a quote inside)
_FIXDEP = re.compile(r"(?:^|[\s;])(?:\S*/)?scripts/basic/fixdep (?P<dep>\S+) (?P<target>\S+) "
                     r"(?P<cmd>'(?:[^']|'\\'')*')")
_DEP_OPTION = re.compile(r"^-Wp,-MM?D,")


def parse_dry_run(lines: Iterable[str]) -> dict[str, CompiledObject]:
    """The C objects a `make -n` transcript would compile, with their saved commands and sources."""
    found: dict[str, CompiledObject] = {}
    for line in lines:
        if "scripts/basic/fixdep " not in line:
            continue
        for m in _FIXDEP.finditer(line):
            target = m.group("target")
            command = m.group("cmd")[1:-1].replace("'\\''", "'")
            source = compiled_source(target, command)
            if target.endswith(".o") and source is not None:
                found[target] = CompiledObject(target, source, command)
    return found


def compiled_source(obj: str, command: str) -> str | None:
    """The C source `command` compiles into `obj` (kbuild's `-c -o $@ $<`), or None."""
    m = re.search(r"\s-o " + re.escape(obj) + r" (\S+\.c)(?=\s|;|$)", command)
    return m.group(1) if m else None


def dependency_argv(command: str, depfile: str) -> list[str]:
    """The compile command's compiler invocation turned into one that only lists, into `depfile`,
    the files it reads: same flags, no object written; missing (generated) headers are listed, not
    fatal; system headers left out, as kbuild's -MMD leaves them out."""
    words = shlex.split(split_first(command)[0])
    argv: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "-o":
            skip = True
        elif word != "-c" and not _DEP_OPTION.match(word):
            argv.append(word)
    return [*argv, "-MM", "-MG", "-MF", depfile]


def parse_make_deps(text: str) -> list[str]:
    """The prerequisites of a make-format dependency file (`obj.o: src.c a.h \\` ...), in order."""
    joined = text.replace("\\\n", " ")
    _target, sep, rest = joined.partition(": ")
    if not sep:
        return []
    return [word for word in rest.split() if word != "\\"]


class TreeIndex:
    """The records of a prepared tree, read from (and, for the includes, made into) `folder`."""

    def __init__(self, root: Path, folder: Path) -> None:
        self.root = root
        self.folder = folder
        self._records: dict[str, CompiledObject] | None = None
        self._by_source: dict[str, list[str]] | None = None
        self._lock = threading.Lock()

    # -- records -----------------------------------------------------------------------------------
    @property
    def records(self) -> dict[str, CompiledObject]:
        if self._records is None:
            path = self.folder / RECORDS
            try:
                with gzip.open(path, "rt") as f:
                    doc = json.load(f)
            except (OSError, ValueError, EOFError) as e:
                raise InputError(f"{path}: unreadable tree index ({e}); remove {self.folder} to rebuild it") from e
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
                raise InputError(f"{path}: a tree index of another klpdiff version; remove {self.folder}")
            self._records = {obj: CompiledObject(obj, src, cmd) for obj, (src, cmd) in doc["objects"].items()}
        return self._records

    def compiled(self, obj: str) -> CompiledObject | None:
        return self.records.get(obj)

    def objects_of_source(self, source: str) -> list[str]:
        if self._by_source is None:
            by_source: dict[str, list[str]] = {}
            for rec in self.records.values():
                by_source.setdefault(rec.source.removeprefix("./"), []).append(rec.path)
            self._by_source = by_source
        return sorted(self._by_source.get(source, []))

    # -- includes ---------------------------------------------------------------------------------
    @property
    def has_includes(self) -> bool:
        return (self.folder / INCLUDES).is_file()

    def objects_including(self, header: str) -> list[str]:
        return self.including(header)[0]

    def including(self, header: str) -> tuple[list[str], list[str]]:
        """The objects that include `header`, and the objects whose headers are unknown (their
        generated source could not be made, or the compiler could not read it)."""
        path = self.folder / INCLUDES
        if not path.is_file():
            raise InputError(f"{self.folder}: the header index is not made yet")
        prefix = header + "\t"
        with gzip.open(path, "rt") as f:
            names = f.readline().rstrip("\n").split(" ")
            unknown = [names[int(i)] for i in f.readline().split()]
            for line in f:
                if line.startswith(prefix):
                    return sorted(names[int(i)] for i in line[len(prefix):].split()), unknown
        return [], unknown

    def make_includes(self, make_args: Sequence[str], jobs: int, progress: Progress) -> None:
        """List what each C object reads, by its own command, and write the header -> objects index.
        An object whose source or headers kbuild generates (code and tables made by host programs)
        cannot be read before they exist: kbuild makes those objects, then they are read."""
        with self._lock, locked(self.folder / "includes.lock"):  # one process makes it; the others wait
            if self.has_includes:
                return
            objects = sorted(self.records)
            progress(f"index: the headers {len(objects)} object(s) include, asked of the compiler once for this "
                     f"tree ({jobs} at a time)")
            reads = _read_lists(self.root, [self.records[o] for o in objects], jobs, progress)
            failed = [o for o in objects if reads[o] is None]
            if failed:
                progress(f"index: {len(failed)} object(s) read what kbuild generates: making them with kbuild")
                subprocess.run(["make", "-k", "-C", str(self.root), f"-j{max(1, jobs)}", *make_args, *failed],
                               capture_output=True, text=True, errors="surrogateescape")
                reads.update(_read_lists(self.root, [self.records[o] for o in failed], jobs, progress))
            including: dict[str, list[int]] = {}
            unknown: list[int] = []
            for n, obj in enumerate(objects):
                deps = reads[obj]
                if deps is None:
                    unknown.append(n)
                    continue
                for dep in sorted({d.removeprefix("./") for d in deps}):
                    including.setdefault(dep, []).append(n)
            text = " ".join(objects) + "\n" + " ".join(map(str, unknown)) + "\n" + "".join(
                f"{h}\t{' '.join(map(str, ids))}\n" for h, ids in sorted(including.items()))
            atomic_write(self.folder / INCLUDES, gzip.compress(text.encode(), 6))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if missing) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_lists(root: Path, recs: Sequence[CompiledObject], jobs: int,
                progress: Progress) -> dict[str, list[str] | None]:
    """What each object's compile reads (its source left out), by running its dependency command;
    None where the compiler could not tell."""
    done = 0
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="klpdiff-deps-") as tmp:
        def one(rec: CompiledObject) -> tuple[str, list[str] | None]:
            nonlocal done
            depfile = os.path.join(tmp, rec.path.replace("/", "__") + ".d")
            proc = subprocess.run(dependency_argv(rec.command, depfile), cwd=root, capture_output=True)
            deps = parse_make_deps(Path(depfile).read_text(errors="replace")) if proc.returncode == 0 else []
            with lock:
                done += 1
                if done % 1000 == 0:
                    progress(f"index: {done} of {len(recs)} object(s)")
            return rec.path, deps[1:] if deps else None

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return dict(pool.map(one, recs))


def make_records(root: Path, make_args: Sequence[str], folder: Path) -> int:
    """Run kbuild's dry run of the whole build on the prepared tree at `root` and write the records
    index into `folder`; the number of C objects found."""
    with tempfile.TemporaryFile("w+", prefix="klpdiff-dryrun-") as out:
        proc = subprocess.run(["make", "-n", "-k", "-C", str(root), *make_args, "all"], stdout=out,
                              stderr=subprocess.PIPE, text=True, errors="surrogateescape")
        out.seek(0)
        found = parse_dry_run(out)
    if not found:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise InputError(f"{root}: kbuild's dry run listed no object to compile ({tail})")
    doc = {"format": _FORMAT, "objects": {o: [r.source, r.command] for o, r in sorted(found.items())}}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / RECORDS, gzip.compress(json.dumps(doc).encode(), 6))
    return len(found)
