"""The installed package ships every folder of data files the checkout has, and claims only the Pythons
the code is checked against.

setuptools only ships (and stops warning about) a data folder that `pyproject.toml` lists as a package,
so a new `rules/<arch>/` or `include/<dir>/` folder must be listed there too.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_GLOBS = ("*.yaml", "*.h", "*.lark")


def _configured() -> tuple[dict[str, str], set[str], list[str]]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tool = doc["tool"]["setuptools"]
    return tool["package-dir"], set(tool["packages"]), tool["package-data"]["*"]


def _package_of(folder: Path, package_dir: dict[str, str]) -> str | None:
    rel = folder.relative_to(ROOT)
    for package, top in package_dir.items():
        top_path = Path(top)
        if rel == top_path or top_path in rel.parents:
            return ".".join([package, *rel.relative_to(top_path).parts])
    return None


def test_every_data_folder_is_a_listed_package() -> None:
    package_dir, packages, _ = _configured()
    folders = {p.parent for top in package_dir.values() for g in DATA_GLOBS for p in (ROOT / top).rglob(g)}
    assert folders, "no data files found under the package folders"
    unlisted = sorted(str(f.relative_to(ROOT)) for f in folders if _package_of(f, package_dir) not in packages)
    assert not unlisted, f"add these folders to [tool.setuptools] packages in pyproject.toml: {unlisted}"


def test_every_listed_package_is_a_folder_with_its_data_shipped() -> None:
    package_dir, packages, data = _configured()
    assert set(data) == set(DATA_GLOBS)
    for package in packages:
        top = next(p for p in sorted(package_dir, key=len, reverse=True) if package == p or package.startswith(p + "."))
        folder = ROOT / package_dir[top] / Path(*package[len(top):].split(".")[1:])
        assert folder.is_dir(), f"{package} is listed but {folder} is not a folder"


def test_the_type_checker_and_linter_check_the_oldest_python_the_package_claims() -> None:
    # requires-python said 3.10 while the engine used enum.StrEnum (3.11): pip would have installed a
    # klpdiff that cannot start. mypy checks the standard library of the version it is told.
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    oldest = doc["project"]["requires-python"].removeprefix(">=")
    assert doc["tool"]["mypy"]["python_version"] == oldest
    assert doc["tool"]["ruff"]["target-version"] == "py" + oldest.replace(".", "")
