"""Compile rule expressions (grammar: expr.lark) into checked Python predicates.

In: expression text and a `Schema` naming the roots and attributes the rule kind
offers. Out: a `Compiled` callable over an environment object whose attributes
are those roots: the checked expression written as one Python lambda (the names
it reads are attribute paths the schema allows, its constants are literals,
compiled regular expressions and the listed functions). Unknown names, bad
regular expressions and type slips are found at compile time and reported with
the column inside the expression.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from types import CodeType, FunctionType
from typing import TYPE_CHECKING, Any, Union

from ..core.records import record

if TYPE_CHECKING:  # lark is imported when an expression is parsed, not by a cached rule set's loading
    from lark import Lark, Token, Tree

# A schema maps a root name to the attributes it has (nested) or to a leaf type.
Schema = Mapping[str, Union["Schema", type]]
Env = Any
Compiled = Callable[[Env], Any]


class ExprError(Exception):
    """A compile error; `column` is 1-based within the expression text."""

    def __init__(self, message: str, column: int = 1) -> None:
        super().__init__(message)
        self.column = column


def _string_value(token: str) -> str:
    """A quoted literal. Backslashes stay as written (strings are mostly regular expressions);
    only an escaped quote loses its backslash."""
    quote, body = token[0], token[1:-1]
    return body.replace("\\" + quote, quote)


# the functions rule expressions may call (named: a compiled rule set is stored with them)
def _startswith(s: Any, prefix: str) -> bool:
    return str(s).startswith(prefix)


def _endswith(s: Any, suffix: str) -> bool:
    return str(s).endswith(suffix)


def _contains(s: Any, part: str) -> bool:
    return part in str(s)


# name -> (arity, function, the types each argument may have, the result's type)
BUILTINS: dict[str, tuple[int, Callable[..., Any], tuple[tuple[type, ...], ...], type]] = {
    "startswith": (2, _startswith, ((str,), (str,)), bool),
    "endswith": (2, _endswith, ((str,), (str,)), bool),
    "contains": (2, _contains, ((str,), (str,)), bool),
    "len": (1, len, ((str, list),), int),
}

# what a compiled expression's code may name besides its constants
_RULE_BUILTINS = {"bool": bool, "str": str, "True": True, "False": False}
RULE_FILENAME = "<rule: "  # how a compiled expression's code names its file: "<rule: TEXT>"


def rule_function(code: CodeType, consts: Mapping[str, Any]) -> Compiled:
    """The predicate a compiled expression's code object and constants make (also how a cached rule
    set gets its predicates back: see ruleset/cache.py)."""
    fn: Compiled = FunctionType(code, {"__builtins__": _RULE_BUILTINS, **consts})
    return fn


@cache
def _parser() -> Lark:
    from lark import Lark

    grammar = (Path(__file__).with_name("expr.lark")).read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, cache=_cache_file(grammar))


def _cache_file(grammar: str) -> str | bool:
    """Where lark keeps the parse tables it built (saves ~0.1 s per compile); off when the cache folder
    (cachedir) is off or cannot be made."""
    import zlib

    from ..core.cachedir import cache_dir

    folder = cache_dir()
    if folder is None:
        return False
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return False
    return str(folder / f"expr-{zlib.crc32(grammar.encode()):08x}-{len(grammar)}.lark-cache")


@record
class _Node:
    """A compiled sub-expression: Python source over `env` (every operator parenthesised), its static
    type (None: not known until run time), and the column where it starts (for errors)."""

    code: str
    type: type | None
    column: int


def _type_name(t: type | None) -> str:
    return "unknown" if t is None else {str: "text", int: "a number", bool: "true/false", list: "a list"}.get(
        t, t.__name__)


def _column(token: Token) -> int:
    return token.column or 1


class _ExprTranslator:
    """Checks each node's type and writes it as Python source: a comparison, a match, `in`, `+`, `-` or a
    function call on the wrong kind of value is an error at compile time, with its column. Regular
    expressions and functions are constants the source names (`consts`). One method per grammar rule,
    called bottom-up with the rule's children (nodes already compiled, tokens as they are)."""

    def __init__(self, schema: Schema, const_prefix: str = "_k") -> None:
        self.schema = schema
        self.consts: dict[str, Any] = {}
        self.const_prefix = const_prefix

    def compile(self, tree: Tree[Token]) -> _Node:
        from lark import Tree

        children = [self.compile(c) if isinstance(c, Tree) else c for c in tree.children]
        rule: Callable[[builtins.list[Any]], _Node] = getattr(self, str(tree.data))
        return rule(children)

    def _const(self, value: Any) -> str:
        name = f"{self.const_prefix}{len(self.consts)}"
        self.consts[name] = value
        return name

    # literals
    def number(self, items: builtins.list[Token]) -> _Node:
        return _Node(repr(int(items[0], 0)), int, _column(items[0]))

    def string(self, items: builtins.list[Token]) -> _Node:
        return _Node(repr(_string_value(items[0])), str, _column(items[0]))

    def true(self, items: builtins.list[Token]) -> _Node:
        return _Node("True", bool, 1)

    def false(self, items: builtins.list[Token]) -> _Node:
        return _Node("False", bool, 1)

    def list(self, items: builtins.list[_Node | None]) -> _Node:
        parts = [i for i in items if i is not None]
        return _Node("[" + ", ".join(p.code for p in parts) + "]", builtins.list, parts[0].column if parts else 1)

    # names
    def path(self, items: builtins.list[Token]) -> _Node:
        names = [str(t) for t in items]
        node: Schema | type = self.schema
        for depth, name in enumerate(names):
            if not isinstance(node, Mapping) or name not in node:
                where = ".".join(names[:depth]) or "this rule"
                known = ", ".join(sorted(node)) if isinstance(node, Mapping) else "none"
                raise ExprError(f"unknown name '{name}' in {where} (known: {known})", _column(items[depth]))
            node = node[name]
        if isinstance(node, Mapping):
            raise ExprError(f"'{'.'.join(names)}' is not a value; pick one of: {', '.join(sorted(node))}",
                            _column(items[0]))
        return _Node("env." + ".".join(names), node, _column(items[0]))

    def call(self, items: builtins.list[Any]) -> _Node:
        name_token: Token = items[0]
        args: builtins.list[_Node] = [a for a in items[1:] if a is not None]
        if name_token not in BUILTINS:
            raise ExprError(f"unknown function '{name_token}' (known: {', '.join(sorted(BUILTINS))})",
                            _column(name_token))
        arity, fn, wants, gives = BUILTINS[name_token]
        if len(args) != arity:
            raise ExprError(f"{name_token}() takes {arity} argument(s), got {len(args)}", _column(name_token))
        for arg, allowed in zip(args, wants, strict=True):
            if arg.type is not None and arg.type not in allowed:
                raise ExprError(f"{name_token}() takes {' or '.join(_type_name(t) for t in allowed)}, not "
                                f"{_type_name(arg.type)}", arg.column)
        return _Node(f"{self._const(fn)}({', '.join(a.code for a in args)})", gives, _column(name_token))

    # operators
    def or_(self, items: builtins.list[_Node]) -> _Node:
        a, b = items
        return _Node(f"(bool({a.code}) or bool({b.code}))", bool, a.column)

    def and_(self, items: builtins.list[_Node]) -> _Node:
        a, b = items
        return _Node(f"(bool({a.code}) and bool({b.code}))", bool, a.column)

    def not_(self, items: builtins.list[_Node]) -> _Node:
        (a,) = items
        return _Node(f"(not {a.code})", bool, a.column)

    def add(self, items: builtins.list[_Node]) -> _Node:
        a, b = items
        kind = _same_kind(a, b, "+", (int, str, builtins.list))
        return _Node(f"({a.code} + {b.code})", kind, a.column)

    def sub(self, items: builtins.list[_Node]) -> _Node:
        a, b = items
        kind = _same_kind(a, b, "-", (int,))
        return _Node(f"({a.code} - {b.code})", kind, a.column)

    def member(self, items: builtins.list[_Node]) -> _Node:
        a, b = items
        if b.type is not None and b.type not in (builtins.list, str):
            raise ExprError(f"'in' looks in a list or in text, not in {_type_name(b.type)}", b.column)
        if b.type is str and a.type is not None and a.type is not str:
            raise ExprError(f"'in' text looks for text, not for {_type_name(a.type)}", a.column)
        return _Node(f"({a.code} in {b.code})", bool, a.column)

    def compare(self, items: builtins.list[Any]) -> _Node:
        a, op, b = items
        symbol = str(op)
        if symbol in ("<", ">", "<=", ">="):
            _same_kind(a, b, symbol, (int,), _column(op))
        elif a.type is not None and b.type is not None and a.type is not b.type:
            raise ExprError(f"'{symbol}' compares {_type_name(a.type)} with {_type_name(b.type)}: never equal",
                            _column(op))
        return _Node(f"bool({a.code} {symbol} {b.code})", bool, a.column)

    def match(self, items: builtins.list[Any]) -> _Node:
        a, pattern_token = items
        if a.type is not None and a.type is not str:
            raise ExprError(f"'=~' matches text, not {_type_name(a.type)}", a.column)
        try:
            pattern = re.compile(_string_value(pattern_token))
        except re.error as err:
            raise ExprError(f"bad regular expression {pattern_token}: {err}", _column(pattern_token)) from err
        return _Node(f"({self._const(pattern.search)}(str({a.code})) is not None)", bool, a.column)


def _same_kind(a: _Node, b: _Node, symbol: str, allowed: tuple[type, ...], column: int | None = None) -> type | None:
    """The type both operands of `symbol` share, which must be one of `allowed`."""
    for side in (a, b):
        if side.type is not None and side.type not in allowed:
            raise ExprError(f"'{symbol}' works on {' or '.join(_type_name(t) for t in allowed)}, not on "
                            f"{_type_name(side.type)}", column or side.column)
    if a.type is not None and b.type is not None and a.type is not b.type:
        raise ExprError(f"'{symbol}' mixes {_type_name(a.type)} and {_type_name(b.type)}", column or b.column)
    return a.type or b.type


def _translate(text: str, schema: Schema, const_prefix: str = "_k") -> tuple[str, dict[str, Any]]:
    """The checked expression as Python source over `env`, and the constants that source names."""
    from lark.exceptions import LarkError, UnexpectedInput

    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        column = getattr(err, "column", 1) or 1
        snippet = err.get_context(text).splitlines()[0].strip() if text else ""
        raise ExprError(f"cannot parse expression near '{snippet}'", column) from err
    except LarkError as err:
        raise ExprError(f"cannot parse expression: {err}") from err
    compiler = _ExprTranslator(schema, const_prefix)
    return compiler.compile(tree).code, compiler.consts


def _function(source: str, filename: str, consts: dict[str, Any]) -> Compiled:
    """The one function `source` defines (a `lambda` or a `def`), bound to `consts`."""
    module = compile(source, filename, "exec")
    code = next(c for c in module.co_consts if isinstance(c, CodeType))
    return rule_function(code, consts)


def compile_expr(text: str, schema: Schema) -> Compiled:
    """Parse and compile `text`; raise ExprError with a column on any problem."""
    code, consts = _translate(text, schema)
    # the checked tree as one Python function: no per-node call at run time
    return _function(f"lambda env: {code}", f"{RULE_FILENAME}{text}>", consts)


def compile_first(texts: Sequence[str], schema: Schema) -> Compiled:
    """One function for a list of predicates: the index of the first that holds for an environment,
    or -1. (Each text must have compiled alone first: its errors are reported there.) A list of
    section rules is evaluated for every section of an object: one call instead of one per rule."""
    lines = ["def first(env):"]
    consts: dict[str, Any] = {}
    for i, text in enumerate(texts):
        code, part = _translate(text, schema, f"_k{i}_")
        consts.update(part)
        lines.append(f"    if {code}:\n        return {i}")
    lines.append("    return -1")
    return _function("\n".join(lines), f"{RULE_FILENAME}{' | '.join(texts)}>", consts)


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


@record
class Message:
    """A compiled message template: called with an environment, it renders its placeholders."""

    text: str
    getters: dict[str, Compiled]

    def __call__(self, env: Env) -> str:
        if not self.getters:
            return self.text
        return _PLACEHOLDER.sub(lambda m: str(self.getters[m.group(1)](env)), self.text)


def compile_message(text: str, schema: Schema) -> Message:
    """A message template: `{sym.name}` placeholders are paths checked against the schema."""
    getters: dict[str, Compiled] = {}
    for m in _PLACEHOLDER.finditer(text):
        try:
            getters[m.group(1)] = compile_expr(m.group(1), schema)
        except ExprError as err:
            raise ExprError(str(err), m.start(1) + err.column) from err
    return Message(text, getters)
