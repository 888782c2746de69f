"""Compiled rules kept on disk between runs, keyed by exactly what they were compiled from.

In: a name for what is built (an arch's rule set, the table of arches), the rule files it is built
from, and the function that builds it. Out: the built value: the one a run before stored, when it
was built from the same files' contents by the same klpdiff under the same Python; otherwise built
now and stored. Reading a stored rule set needs neither the YAML reader, nor pydantic, nor the
expression parser: a diff starts without them.

Where: cachedir.cache_dir() (`~/.cache/klpdiff` unless configured; none: the cache is off). A stored
file is read only when the running user owns it;
one that cannot be read back (corrupt, from another klpdiff) is rebuilt. Failing to store is not
an error: the next run builds again. Storing removes files not rebuilt for 30 days.
"""

from __future__ import annotations

import io
import marshal
import os
import pickle
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from types import FunctionType
from typing import Any, TypeVar

from ..core.cachedir import cache_dir
from ..core.errors import InputError
from ..core.installation import ENGINE_ROOT, source_files
from ..core.outputs import atomic_write
from ..lang.expr import RULE_FILENAME, Compiled, rule_function

T = TypeVar("T")
_MEMORY: dict[bytes, Any] = {}  # this process's values, by key: many diffs in one process share them


def cached(name: str, files: Sequence[Path], make: Callable[[], T]) -> T:
    """`make()`, or the value stored for the same `name`, files and klpdiff."""
    key = _key(name, files)
    if key in _MEMORY:
        return _MEMORY[key]  # type: ignore[no-any-return]
    folder = cache_dir()
    where = folder / f"{_slug(name)}-{zlib.crc32(_bytes(name)):08x}.pickle" if folder else None
    value = _read(where, key) if where is not None else None
    if value is None:
        value = make()
        if where is not None:
            _write(where, key, value)
    _MEMORY[key] = value
    return value


def _key(name: str, files: Sequence[Path]) -> bytes:
    """What a stored value depends on, in full (a stored value is used only when all of it is equal:
    no digest to collide): Python's version (code objects are stored), the engine's source files, the
    name, and each rule file's path and contents (a file that cannot be read counts as such: building
    then reports it)."""
    parts = [_engine_fingerprint(), _bytes(f"{name}\0")]
    for path in files:
        try:
            content = path.read_bytes()
        except OSError:
            content = b"\0unreadable"
        parts.append(_bytes(f"\0{path}\0{len(content)}\0"))
        parts.append(content)
    return b"".join(parts)


@cache
def _engine_fingerprint() -> bytes:
    """Python's version and this klpdiff's source files (the code that runs is the code loaded first)."""
    parts = [f"{sys.implementation.cache_tag}\0{sys.version}\0".encode()]
    for source in source_files():
        st = source.stat()
        parts.append(f"{source.relative_to(ENGINE_ROOT)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return b"".join(parts)


def _bytes(text: str) -> bytes:
    """A name or path as bytes, those of a file name that are not UTF-8 included (as os.fsencode keeps them)."""
    return text.encode("utf-8", "surrogateescape")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def _read(where: Path, key: bytes) -> Any:
    try:
        with open(where, "rb") as f:
            if os.fstat(f.fileno()).st_uid != os.geteuid():
                return None  # only what this user stored is unpickled
            stored_key, value = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:
        return None
    return value if stored_key == key else None


def _write(where: Path, key: bytes, value: Any) -> None:
    buffer = io.BytesIO()
    try:
        _RulePickler(buffer).dump((key, value))
        where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(where, buffer.getvalue(), mode=0o600)
        _prune(where.parent, keep=where)
    except (OSError, InputError, pickle.PicklingError, TypeError, AttributeError):
        return  # not stored (tests/test_rulecache.py checks every arch's rule set pickles): built again next run


_STALE_SECONDS = 30 * 24 * 3600


def _prune(folder: Path, keep: Path) -> None:
    """Stored rule sets (and parser tables) not rebuilt for 30 days go (a rule folder used once, an
    older klpdiff's): the cache stays small however many folders and versions a user has run."""
    cutoff = time.time() - _STALE_SECONDS
    for path in [*folder.glob("*.pickle*"), *folder.glob("*.lark-cache")]:
        try:
            if path != keep and path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue


class _RulePickler(pickle.Pickler):
    """Pickles compiled rule expressions (functions made from their code object, expr.rule_function)
    as their marshalled code and constants."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, FunctionType) and obj.__code__.co_filename.startswith(RULE_FILENAME):
            consts = {k: v for k, v in obj.__globals__.items() if k != "__builtins__"}
            return _rule_predicate, (marshal.dumps(obj.__code__), consts)
        return NotImplemented


def _rule_predicate(code: bytes, consts: dict[str, Any]) -> Compiled:
    return rule_function(marshal.loads(code), consts)
