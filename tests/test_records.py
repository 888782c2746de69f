"""`records.record`: dataclasses immutable by type, compared and printed like frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mypy import api as mypy_api

if TYPE_CHECKING:  # mypy checks engine/ as `engine`, and sees klpdiff's names as untyped
    from engine.core.records import record
else:
    from klpdiff.core.records import record

ROOT = Path(__file__).resolve().parent.parent


@record
class Point:
    """A record compared by value."""

    x: int
    tags: tuple[str, ...] = ()


@record(eq=False)
class Handle:
    """A record compared by identity."""

    name: str
    items: list[int] = field(default_factory=list)


@record(frozen=False)
class Tally:
    """A record the stages fill in."""

    count: int = 0
    parts: list[Tally] = field(default_factory=list)


@dataclass(frozen=True)
class FrozenPoint:
    """The frozen dataclass `Point` stands for."""

    x: int
    tags: tuple[str, ...] = ()


def test_a_record_prints_compares_and_hashes_as_a_frozen_dataclass() -> None:
    assert repr(Point(1, ("a",))) == repr(FrozenPoint(1, ("a",))).replace("FrozenPoint", "Point")
    assert Point(1) == Point(1) and Point(1) != Point(2)
    assert hash(Point(1, ("a",))) == hash(Point(1, ("a",)))
    assert len({Point(1), Point(1), Point(2)}) == 2


def test_records_compare_by_class_and_by_the_fields_they_compare() -> None:
    @record
    class One:
        """A record of one field."""

        x: int

    @record
    class Other:
        """Another class with the same field."""

        x: int

    @record
    class Tagged:
        """A record with a field left out of comparisons."""

        x: int
        note: str = field(default="", compare=False)

    assert One(1) == One(1) and One(1) != One(2) and hash(One(1)) == hash(One(1))
    one, other = One(1), Other(1)
    assert one != other and other != one  # type: ignore[comparison-overlap]
    assert Tagged(1, "a") == Tagged(1, "b") and hash(Tagged(1, "a")) == hash(Tagged(1, "b"))
    assert Tagged(1) != Tagged(2)


def test_a_record_that_would_hash_other_fields_than_it_compares_is_refused() -> None:
    with pytest.raises(TypeError, match="hashes exactly the fields it compares"):
        @record
        class Odd:
            """A field compared but not hashed."""

            x: int = field(hash=False)


def test_a_record_compared_by_identity_is_hashable_by_identity() -> None:
    a, b = Handle("h"), Handle("h")
    assert a != b and a == a
    assert len({a, b}) == 2
    assert repr(a) == "Handle(name='h', items=[])"


def test_a_mutable_record_is_unhashable_and_prints_a_cycle_once() -> None:
    t = Tally()
    t.parts.append(t)
    assert repr(t) == "Tally(count=0, parts=[...])"
    with pytest.raises(TypeError):
        hash(t)


def test_a_class_keeps_its_own_repr_and_hash() -> None:
    @record
    class Named:
        """A record with its own text."""

        name: str

        def __repr__(self) -> str:
            return f"<{self.name}>"

    @record(frozen=False)
    class Keyed:
        """A mutable record with its own hash."""

        key: int

        def __hash__(self) -> int:
            return self.key

    assert repr(Named("x")) == "<x>"
    assert hash(Keyed(7)) == 7 and Keyed(7) == Keyed(7)


@pytest.mark.parametrize("target", ["Origin('a.yaml', 1).line = 2", "Point(1).x = 2"])
def test_the_type_checker_refuses_to_assign_a_field_of_a_frozen_record(target: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # the runtime guards of frozen dataclasses are left out for start-up time; mypy --strict, which
    # the tests run, is what keeps records immutable, and it must see them as frozen
    program = "\n".join([
        "from engine.core.errors import Origin",
        "from engine.core.records import record",
        "@record",
        "class Point:",
        "    x: int",
        target,
    ])
    monkeypatch.chdir(ROOT)  # where `engine` is a package
    out, err, status = mypy_api.run(["--config-file", "", "--strict", "--follow-imports=silent",
                                     "--cache-dir", "/dev/null", "-c", program])
    assert status == 1, out + err
    assert "is read-only" in out and out.count("error:") == 1, out


def test_the_type_checker_lets_a_mutable_record_be_filled_in(monkeypatch: pytest.MonkeyPatch) -> None:
    program = "\n".join([
        "from engine.core.records import record",
        "@record(frozen=False)",
        "class Tally:",
        "    count: int = 0",
        "Tally().count = 2",
    ])
    monkeypatch.chdir(ROOT)  # where `engine` is a package
    out, err, status = mypy_api.run(["--config-file", "", "--strict", "--follow-imports=silent",
                                     "--cache-dir", "/dev/null", "-c", program])
    assert status == 0, out + err


def test_the_engine_makes_every_record_class_with_record() -> None:
    # a plain @dataclass would bring back the generated methods the command pays for at every start
    engine = ROOT / "engine"
    direct = [f"{path.name}:{n}" for path in sorted(engine.rglob("*.py")) if path.name != "records.py"
              for n, line in enumerate(path.read_text().splitlines(), 1) if line.lstrip().startswith("@dataclass")]
    assert not direct, f"use records.record instead of @dataclass: {direct}"
