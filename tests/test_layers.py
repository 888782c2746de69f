"""The engine's layers (engine/__init__.py draws them): every import inside engine/ points to its own
layer or one below, so a module can be read knowing only what is under it."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"
# lowest first: each layer may import the ones before it
LAYERS = ["core", "elf", "lang", "ruleset", "klp", "diff", "build", "authoring", "cli"]


def _imports(root: Path, path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(line, module path under `root`) of every relative import of a file, at any depth (those inside
    functions and under TYPE_CHECKING too)."""
    package = path.relative_to(root).parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            out.append((node.lineno, (*base, *node.module.split(".")) if node.module else base))
    return out


def upward_imports(root: Path) -> list[str]:
    """Every import of a module under `root` that reaches a higher layer."""
    found = []
    for path in sorted(root.rglob("*.py")):
        own = path.relative_to(root).parts[:-1]
        for line, target in _imports(root, path):
            if own and target and LAYERS.index(target[0]) > LAYERS.index(own[0]):
                found.append(f"{path.relative_to(root)}:{line} imports {'.'.join(target)}")
    return found


def test_every_module_sits_in_a_layer() -> None:
    loose = [p.name for p in ENGINE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the layers: {loose}"
    assert sorted(p.name for p in ENGINE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)


def test_every_import_points_down() -> None:
    upward = upward_imports(ENGINE)
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    """The check resolves relative imports as Python does, inside functions too (it can fail)."""
    for layer in ("core", "diff"):
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "diff" / "emit.py").write_text("from ..core import records\n")
    (tmp_path / "core" / "outputs.py").write_text("def f() -> None:\n    from ..diff.emit import lay_out\n")
    assert upward_imports(tmp_path) == ["core/outputs.py:2 imports diff.emit"]


def test_the_engine_reads_and_writes_elf_itself() -> None:
    """pyelftools is a dependency, but the engine does not import it: its tables are decoded in bulk
    (elf/read.py, twenty times faster) and pyelftools stays the tests' independent reader of what klpdiff
    writes (pyproject.toml says why)."""
    found: list[str] = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            found.extend(f"{path.relative_to(ENGINE)}:{node.lineno}" for n in names if n.split(".")[0] == "elftools")
    assert not found, found
