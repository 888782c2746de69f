"""Where this installation of klpdiff keeps its code and data.

In: nothing but this file's place. Out: the package's root folder (engine/ in a checkout, klpdiff/ when
installed), its source files, and its data folders: `rules/` and the patch-author headers `include/`,
which sit beside engine/ in a checkout and inside the package when installed.
"""

from __future__ import annotations

from pathlib import Path

ENGINE_ROOT = Path(__file__).resolve().parent.parent


def data_dir(name: str, marker: str | None = None) -> Path | None:
    """The data folder `name` (the one holding `marker`, if given), from a checkout or an installation."""
    for candidate in (ENGINE_ROOT.parent / name, ENGINE_ROOT / name):
        if (candidate / marker).exists() if marker else candidate.is_dir():
            return candidate
    return None


def source_files() -> list[Path]:
    """Every file of the engine's code (Python and the expression grammar), sorted."""
    return sorted(p for p in ENGINE_ROOT.rglob("*") if p.suffix in (".py", ".lark"))
