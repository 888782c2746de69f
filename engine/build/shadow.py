"""A private view of a kernel tree, in which sources can be patched and objects compiled.

In: the user's tree and a private folder. Out: a `Shadow` — the folder holds one
symbolic link per top-level entry of the tree, so every path resolves to the
user's file, except the folders on the way to a file klpdiff must change: those
are real folders of links, and the changed files (patched sources, compiled
objects, dependency files) are real files. Commands run with the shadow as
their working folder therefore see the tree as kbuild left it, with relative
paths, `__FILE__` and debug paths unchanged, while every write lands in the
private folder. Nothing is ever written into the user's tree: a failed or
interrupted build leaves it as it was.

Making a folder real replaces its link by a folder that is filled entry by
entry: until that is done, a command reading through it may miss a file. So
every change to the shadow is made under one lock, and callers make the paths
they will write before they start commands that read the shadow.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from ..core.errors import InputError


class Shadow:
    def __init__(self, tree: Path, root: Path) -> None:
        self.tree = tree.resolve()
        self.root = root
        self._lock = threading.RLock()
        root.mkdir(parents=True, exist_ok=True)
        self._real: set[Path] = {Path(".")}
        self._populate(Path("."))

    def _populate(self, rel: Path) -> None:
        """Make `rel` a real folder whose entries are links into the tree."""
        target = self.root / rel
        source = self.tree / rel
        for entry in os.scandir(source):
            link = target / entry.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(source / entry.name)

    def _real_dir(self, rel: Path) -> Path:
        """The shadow folder for `rel`, made real (with links for its entries) if it was a link."""
        if rel in self._real:
            return self.root / rel
        parent = self._real_dir(rel.parent)
        here = parent / rel.name
        if here.is_symlink():
            here.unlink()
        if not here.exists():
            here.mkdir()
            if (self.tree / rel).is_dir():
                self._populate(rel)
        self._real.add(rel)
        return here

    def writable(self, rel: str) -> Path:
        """A path inside the shadow where `rel` may be written without touching the tree: its folder
        is real and any link of that name is gone."""
        path = Path(rel)
        if path.is_absolute() or ".." in path.parts:
            raise InputError(f"{rel}: not a path inside the kernel tree")
        with self._lock:
            folder = self._real_dir(path.parent)
            out = folder / path.name
            if out.is_symlink():
                out.unlink()
            return out

    def folder(self, rel: str) -> Path:
        """The shadow folder `rel`, made real, so that commands run in it write into the shadow."""
        with self._lock:
            return self._real_dir(Path(rel))

    def own_copy(self, rel: str) -> Path:
        """Make `rel` a real file of the shadow with the tree's content (for patching)."""
        with self._lock:
            out = self.writable(rel)
            if not out.exists() and (self.tree / rel).is_file():
                shutil.copyfile(self.tree / rel, out)
            return out

    def path(self, rel: str) -> Path:
        return self.root / rel
