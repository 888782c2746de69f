"""Rule files as YAML with positions: every value's `line:col`, so that any problem found later
(a schema error, an expression's type slip) is reported where it was written.

In: a rule file's path. Out: its plain data and a map from each value's path in the document to
its position; `validate_doc` checks that data against the rule models with pydantic, and
`validation_messages` turns pydantic's errors into `file:line:col: path: message`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from ..core.errors import RuleError
from ..core.inputs import read_input
from .schema import RuleDoc, kinds

Position = tuple[int, int]  # 1-based line, column
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster


# Aliases (`*name`) may reuse a value, but nested ones multiply (ten lines can stand for a billion
# values): a rule file may expand to this many values at most. klpdiff's own files use a few thousand.
MAX_VALUES = 100_000
# and nest this deep at most (klpdiff's own go 6 deep); deeper would exhaust Python's stack
MAX_DEPTH = 64


def _to_python(node: yaml.Node, path: tuple[Any, ...], where: dict[tuple[Any, ...], Position],
               budget: list[int] | None = None) -> Any:
    budget = [MAX_VALUES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge(node, f"its aliases (*name) expand the file past {MAX_VALUES:,} values; write the "
                              f"values out instead of nesting aliases")
    if len(path) > MAX_DEPTH:
        raise _TooLarge(node, f"nested more than {MAX_DEPTH} levels deep")
    where[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else _scalar(key_node)
            out[key] = _to_python(value_node, (*path, key), where, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, (*path, i), where, budget) for i, v in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node)


class _TooLarge(Exception):
    """A document whose aliases expand past MAX_VALUES or that nests past MAX_DEPTH; `node` is where."""

    def __init__(self, node: yaml.Node, problem: str) -> None:
        super().__init__(problem)
        self.node = node
        self.problem = problem


_CONSTRUCTOR = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    """Resolve a scalar node with YAML's own rules (ints, bools, nulls, quoted strings)."""
    if isinstance(node, yaml.ScalarNode):
        return _CONSTRUCTOR.construct_object(node, deep=True)
    return yaml.safe_load(yaml.serialize(node))


def read_yaml(path: Path, what: str = "a rule file") -> tuple[Any, dict[tuple[Any, ...], Position]]:
    """The document of a YAML file (a rule file, or `what` it is) and the position of every value;
    RuleError at file:line:col for what is not UTF-8, not YAML, empty, too large or too deep."""
    raw = read_input(path, what)
    try:
        text = raw.decode()
    except UnicodeDecodeError as err:
        before = raw[: err.start]
        row, column = before.count(b"\n") + 1, err.start - before.rfind(b"\n")
        raise RuleError(f"{path}:{row}:{column}: rule files are UTF-8 text; this byte is not") from err
    try:
        node = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RuleError(f"{path}:{line}: YAML error: {problem}") from err
    except RecursionError:  # the pure-Python composer (without libyaml) recurses per level
        raise RuleError(f"{path}:1:1: nested too deeply to read") from None
    where: dict[tuple[Any, ...], Position] = {}
    if node is None:
        raise RuleError(f"{path}:1:1: empty file, not {what}" + (" (expected a mapping with 'kind:')"
                                                                   if what == "a rule file" else ""))
    try:
        return _to_python(node, (), where), where
    except _TooLarge as big:
        mark = big.node.start_mark
        raise RuleError(f"{path}:{mark.line + 1}:{mark.column + 1}: {big.problem}") from None


def position(where: Mapping[tuple[Any, ...], Position], loc: tuple[Any, ...]) -> Position:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in where:
            return where[loc[:cut]]
    return (1, 1)


@cache
def _doc_adapter() -> TypeAdapter[RuleDoc]:
    return TypeAdapter(Annotated[RuleDoc, Field(discriminator="kind")])


def validate_doc(data: Any) -> RuleDoc:
    """The rule model `data` describes; raises pydantic's ValidationError."""
    return _doc_adapter().validate_python(data)


def validation_messages(path: Path, err: ValidationError, where: Mapping[tuple[Any, ...], Position]) -> list[str]:
    """Every schema error as `file:line:col: field.path: message`, in document terms."""
    out = []
    for e in err.errors():
        loc = _doc_path(e["loc"])
        line, col = position(where, loc)
        field_path = ".".join(str(p) for p in loc) or "document"
        msg = e["msg"]
        if e["type"] == "union_tag_invalid":
            msg = f"unknown kind (expected one of: {', '.join(sorted(kinds()))})"
        elif e["type"] == "union_tag_not_found":
            msg = "missing 'kind:'"
        elif e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            msg = "unknown key (not part of this rule kind; see docs/rules.md)"
        out.append(f"{path}:{line}:{col}: {field_path}: {msg}")
    return out


def _doc_path(loc: Any) -> tuple[Any, ...]:
    """A pydantic error location as a path in the YAML document: without the discriminated
    union's tag (the kind name) it starts with."""
    path = tuple(loc)
    return path[1:] if path and path[0] in kinds() else path
