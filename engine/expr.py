"""Compile rule expressions (grammar: expr.lark) into checked Python predicates.

In: expression text and a `Schema` naming the roots and attributes the rule kind
offers. Out: a `Compiled` callable over an environment object whose attributes
are those roots. Unknown names, bad regular expressions and type slips are found
at compile time and reported with the column inside the expression.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Union

from lark import Lark, Token, Transformer, Tree
from lark.exceptions import LarkError, UnexpectedInput, VisitError

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


BUILTINS: dict[str, tuple[int, Callable[..., Any]]] = {
    "startswith": (2, lambda s, p: str(s).startswith(p)),
    "endswith": (2, lambda s, p: str(s).endswith(p)),
    "contains": (2, lambda s, p: p in str(s)),
    "len": (1, len),
}


@cache
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("expr.lark")).read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, cache=_cache_file(grammar))


def _cache_file(grammar: str) -> str | bool:
    """Where lark keeps the parse tables it built (saves ~0.1 s per run); off if not writable."""
    import hashlib
    import os
    import tempfile

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "klpdiff")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        folder = tempfile.gettempdir()
    if not os.access(folder, os.W_OK):
        return False
    digest = hashlib.sha256(grammar.encode()).hexdigest()[:16]
    return os.path.join(folder, f"expr-{digest}.lark-cache")


class _Compiler(Transformer[Token, Compiled]):
    def __init__(self, schema: Schema) -> None:
        super().__init__()
        self.schema = schema

    # literals
    def number(self, items: list[Token]) -> Compiled:
        value = int(items[0], 0)
        return lambda env: value

    def string(self, items: list[Token]) -> Compiled:
        value = _string_value(items[0])
        return lambda env: value

    def true(self, items: list[Token]) -> Compiled:
        return lambda env: True

    def false(self, items: list[Token]) -> Compiled:
        return lambda env: False

    def list(self, items: builtins.list[Compiled | None]) -> Compiled:
        parts = [i for i in items if i is not None]
        return lambda env: [p(env) for p in parts]

    # names
    def path(self, items: builtins.list[Token]) -> Compiled:
        names = [str(t) for t in items]
        node: Schema | type = self.schema
        for depth, name in enumerate(names):
            if not isinstance(node, Mapping) or name not in node:
                where = ".".join(names[:depth]) or "this rule"
                known = ", ".join(sorted(node)) if isinstance(node, Mapping) else "none"
                raise ExprError(f"unknown name '{name}' in {where} (known: {known})", items[depth].column or 1)
            node = node[name]
        if isinstance(node, Mapping):
            raise ExprError(f"'{'.'.join(names)}' is not a value; pick one of: {', '.join(sorted(node))}",
                            items[0].column or 1)

        def get(env: Env) -> Any:
            value = env
            for name in names:
                value = getattr(value, name)
            return value

        return get

    def call(self, items: builtins.list[Any]) -> Compiled:
        name_token: Token = items[0]
        args = [a for a in items[1:] if a is not None]
        if name_token not in BUILTINS:
            raise ExprError(f"unknown function '{name_token}' (known: {', '.join(sorted(BUILTINS))})",
                            name_token.column or 1)
        arity, fn = BUILTINS[name_token]
        if len(args) != arity:
            raise ExprError(f"{name_token}() takes {arity} argument(s), got {len(args)}", name_token.column or 1)
        return lambda env: fn(*(a(env) for a in args))

    # operators
    def or_(self, items: builtins.list[Compiled]) -> Compiled:
        a, b = items
        return lambda env: bool(a(env)) or bool(b(env))

    def and_(self, items: builtins.list[Compiled]) -> Compiled:
        a, b = items
        return lambda env: bool(a(env)) and bool(b(env))

    def not_(self, items: builtins.list[Compiled]) -> Compiled:
        (a,) = items
        return lambda env: not a(env)

    def add(self, items: builtins.list[Compiled]) -> Compiled:
        a, b = items
        return lambda env: a(env) + b(env)

    def sub(self, items: builtins.list[Compiled]) -> Compiled:
        a, b = items
        return lambda env: a(env) - b(env)

    def member(self, items: builtins.list[Compiled]) -> Compiled:
        a, b = items
        return lambda env: a(env) in b(env)

    def compare(self, items: builtins.list[Any]) -> Compiled:
        a, op, b = items
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "==": lambda x, y: bool(x == y),
            "!=": lambda x, y: bool(x != y),
            "<": lambda x, y: bool(x < y),
            ">": lambda x, y: bool(x > y),
            "<=": lambda x, y: bool(x <= y),
            ">=": lambda x, y: bool(x >= y),
        }
        fn = ops[str(op)]
        return lambda env: fn(a(env), b(env))

    def match(self, items: builtins.list[Any]) -> Compiled:
        a, pattern_token = items
        try:
            pattern = re.compile(_string_value(pattern_token))
        except re.error as err:
            raise ExprError(f"bad regular expression {pattern_token}: {err}", pattern_token.column or 1) from err
        return lambda env: pattern.search(str(a(env))) is not None


def compile_expr(text: str, schema: Schema) -> Compiled:
    """Parse and compile `text`; raise ExprError with a column on any problem."""
    try:
        tree: Tree[Token] = _parser().parse(text)
    except UnexpectedInput as err:
        column = getattr(err, "column", 1) or 1
        snippet = err.get_context(text).splitlines()[0].strip() if text else ""
        raise ExprError(f"cannot parse expression near '{snippet}'", column) from err
    except LarkError as err:
        raise ExprError(f"cannot parse expression: {err}") from err
    try:
        return _Compiler(schema).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, ExprError):
            raise err.orig_exc from err
        raise ExprError(str(err.orig_exc)) from err


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def compile_message(text: str, schema: Schema) -> Callable[[Env], str]:
    """A message template: `{sym.name}` placeholders are paths checked against the schema."""
    getters: dict[str, Compiled] = {}
    for m in _PLACEHOLDER.finditer(text):
        try:
            getters[m.group(1)] = compile_expr(m.group(1), schema)
        except ExprError as err:
            raise ExprError(str(err), m.start(1) + err.column) from err

    def render(env: Env) -> str:
        return _PLACEHOLDER.sub(lambda m: str(getters[m.group(1)](env)), text)

    return render
