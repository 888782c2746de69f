"""What klpdiff may write over, checked before any work, and what a failed run leaves.

In: the output paths a command was given and the input paths it reads. Out: nothing, or an
`InputError` (exit 1) naming the path, when writing there could destroy a file: an output may only be a
new path or an existing regular file that is none of the inputs (not a FIFO, device, folder or link to
one), and its folder must exist. `stale_output` removes a regular file an earlier run left at an output
path when this run fails, so that a script can trust "exit 0 if and only if OUT is this run's output"
(as make's .DELETE_ON_ERROR does). `atomic_write` is how every output is written; `Progress` is
where a long command's progress lines go.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import InputError
from .inputs import file_kind

Progress = Callable[[str], None]  # takes one progress line (klpdiff build prints them unless -q)


def output_path(text: str) -> Path:
    """An output file named on the command line (argparse type): a name ending in / names a folder,
    which Path would silently drop."""
    if text.endswith("/") or text in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"'{text}' names a folder, not a file")
    return Path(text)


def check_outputs(outputs: Sequence[Path | None], inputs: Sequence[Path | None]) -> None:
    """Refuse, before any work, every output that could destroy a file or could not be written."""
    identities = {}
    for path in inputs:
        if path is None:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue  # the command reports a missing input itself
        identities[(st.st_dev, st.st_ino)] = path
    named: dict[str, Path] = {}
    for out in outputs:
        if out is None:
            continue
        twice = named.setdefault(os.path.realpath(out), out)
        if twice is not out:
            raise InputError(f"{out}: names the same file as the output {twice}; give each output its own file")
        folder = out.parent if str(out.parent) else Path(".")
        if not folder.is_dir():
            raise InputError(f"{out}: the folder {folder} does not exist")
        try:
            st = os.stat(out)
        except FileNotFoundError:
            continue
        except OSError as err:
            raise InputError(f"{out}: cannot use as output: {err.strerror}") from err
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{out}: is {file_kind(st.st_mode)}; klpdiff only replaces regular files")
        same = identities.get((st.st_dev, st.st_ino))
        if same is not None:
            raise InputError(f"{out}: is the input {same}; refusing to overwrite it")


def stale_output(path: Path | None) -> None:
    """Remove what an earlier run left at `path` (a regular file only) after this run failed."""
    if path is None:
        return
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            path.unlink()
    except OSError:
        pass


def _new_file_beside(directory: Path, prefix: str) -> tuple[int, str]:
    """A new file of our own in `directory` (created exclusively, mode 0600), as tempfile.mkstemp
    makes one; without importing tempfile, which costs every diff 3 ms of start-up."""
    for _attempt in range(100):
        name = str(directory / f"{prefix}{os.urandom(6).hex()}.tmp")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a temporary file beside `path` and rename it over `path`: a reader sees the old
    file or the whole new one, never part of it."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        # (the temporary name is at most 63 bytes, whatever the output's: a valid name stays writable)
        fd, tmp = _new_file_beside(directory, f".{path.name[:40]}.")
    except OSError as err:
        raise InputError(f"{path}: cannot write output: {err.strerror}") from err
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write output: {err.strerror}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
