"""What klpdiff may read: a file a user named, checked before it is opened.

In: a path from the command line or a rule folder (an object, a patch, a symbol table, Module.symvers, a
rule file or case) and what it should be, in words ("an object file"). Out: its bytes or text, or an
`InputError` (exit 1) naming the path and the problem. The file must be a regular one, checked without
opening it (opening a FIFO waits for a writer; a device never ends), at most `MAX_INPUT_BYTES` long (a
sparse file can claim any size), and readable: a missing file, a link loop, a name too long or a
permission the system refuses is said in one line, never raised as the system's error. `read_once`
keeps what was made of a file for the rest of the process.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from .errors import InputError

# the largest input any kernel has: a vmlinux with its debug information is under 1 GiB
MAX_INPUT_BYTES = 4 << 30

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFDIR: "a folder", stat.S_IFSOCK: "a socket", stat.S_IFREG: "a file"}


def file_kind(mode: int) -> str:
    """What a file is, in words ("a FIFO", "a folder", "a file", ...)."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def input_path(text: str) -> Path:
    """An input file named on the command line (argparse type): a name ending in / names a folder,
    which Path would silently drop (and `x.o/` would then read x.o)."""
    if text.endswith("/") or text in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"'{text}' names a folder, not a file")
    return Path(text)


def _stat(path: Path, what: str, noun: str) -> os.stat_result:
    """os.stat, following links; what the system refuses is an InputError naming `path` (`noun`:
    "file" or "folder", for the message)."""
    try:
        return os.stat(path)
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such {noun} ({what})") from err
    except OSError as err:  # a link loop, a name too long, a permission
        raise InputError(f"{path}: cannot read {what}: {err.strerror or err}") from err
    except ValueError as err:  # a name holding a NUL byte (not from a shell, but from a file or a script)
        raise InputError(f"{path!r}: not a {noun} name ({err})") from err


def input_folder(path: Path, what: str) -> Path:
    """`path`, a folder, as an absolute path with its links resolved (a link loop or a name the system
    refuses is said in one line, not raised as Path.resolve's RuntimeError)."""
    st = _stat(path, what, "folder")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: {file_kind(st.st_mode)}, not {what}")
    return Path(os.path.realpath(path))


def input_size(path: Path, what: str) -> int:
    """The size of `path`, a regular file of at most MAX_INPUT_BYTES; never opens it."""
    st = _stat(path, what, "file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: {file_kind(st.st_mode)}, not {what}")
    if st.st_size > MAX_INPUT_BYTES:
        raise InputError(f"{path}: {st.st_size:,} bytes, larger than {what} can be "
                         f"(at most {MAX_INPUT_BYTES >> 30} GiB)")
    return st.st_size


def read_input(path: Path, what: str) -> bytes:
    """The bytes of `path` (see input_size)."""
    input_size(path, what)
    try:
        return path.read_bytes()
    except MemoryError as err:
        raise InputError(f"{path}: too large to read into this machine's memory") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read {what}: {err.strerror or err}") from err


_T = TypeVar("_T")
_READ_ONCE: dict[tuple[str, str, int, int], object] = {}


def read_once(kind: str, path: Path, read: Callable[[Path], _T]) -> _T:
    """`read(path)`, once per process for the file as it is now (its resolved path, mtime and size), for
    each `kind` of reading: klpdiff build diffs many objects against one vmlinux, one Module.symvers
    and one set of rule files. A file that cannot be examined is read each time (`read` says why)."""
    try:
        st = path.stat()
    except OSError:
        return read(path)
    key = (kind, str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _READ_ONCE:
        _READ_ONCE[key] = read(path)
    return cast(_T, _READ_ONCE[key])
