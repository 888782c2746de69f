"""The rule cache: a stored rule set behaves as a freshly compiled one, follows its files' contents,
survives damage, and spares a diff the YAML reader, pydantic and the expression parser."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from klpdiff.core.errors import EXIT_REFUSED
from klpdiff.ruleset import cache as rulecache
from klpdiff.ruleset.compile import compile_ruleset
from klpdiff.ruleset.compiled import Ruleset
from klpdiff.ruleset.load import default_rules_dir, known_arches, load_ruleset, rule_files

from .conftest import ROOT
from .test_cli import pair  # noqa: F401 - the example pair fixture

RULES = default_rules_dir()


def _run(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "klpdiff.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=ROOT)


def _roundtrip(rs: Ruleset) -> Ruleset:
    buffer = io.BytesIO()
    rulecache._RulePickler(buffer).dump(rs)
    loaded = pickle.loads(buffer.getvalue())
    assert isinstance(loaded, Ruleset)
    return loaded


@pytest.mark.parametrize("arch", known_arches([RULES]))
def test_every_arch_rule_set_reads_back_as_it_was_compiled(arch: str) -> None:
    """Every compiled rule and its origin survive storing; predicates answer as the originals do."""
    fresh = compile_ruleset([RULES], arch, rule_files([RULES], arch))
    back = _roundtrip(fresh)
    assert asdict(back.arch) == asdict(fresh.arch) and back.files == fresh.files
    assert {n: asdict(t) for n, t in back.reloc_types.items()} == {n: asdict(t) for n, t in fresh.reloc_types.items()}
    assert [asdict(s.rule) for s in back.special] == [asdict(s.rule) for s in fresh.special]
    assert [s.origin for s in back.special] == [s.origin for s in fresh.special]
    assert [r.origin for r in back.refusals] == [r.origin for r in fresh.refusals]
    assert [p.pattern for p, _ in back.normalize] == [p.pattern for p, _ in fresh.normalize]
    # a predicate, a message and a name matcher of each kind, on real values
    names = [".text.foo", "__jump_table", ".rela.text", "__bug_table", ".altinstructions", ".data.once"]
    for spec_a, spec_b in zip(fresh.special, back.special, strict=True):
        assert [spec_a.matches(n) for n in names] == [spec_b.matches(n) for n in names]
        assert [spec_a.groups(n) for n in names] == [spec_b.groups(n) for n in names]
    for lists in ("fresh", "anonymous", "plain", "ignore", "carry", "offset_free", "by_object"):
        a, b = getattr(fresh, lists), getattr(back, lists)
        assert [p.text for p in b.items] == [p.text for p in a.items]
        assert b.first.__code__.co_code == a.first.__code__.co_code
        for pa, pb in zip(a.items, b.items, strict=True):
            assert pb.test.__code__.co_code == pa.test.__code__.co_code
    assert [(r.message.text, sorted(r.message.getters)) for r in back.refusals] == \
        [(r.message.text, sorted(r.message.getters)) for r in fresh.refusals]


def test_the_line_noise_calls_are_stored_as_text_and_compiled_when_first_asked() -> None:
    fresh = compile_ruleset([RULES], "x86_64", rule_files([RULES], "x86_64"))
    back = _roundtrip(fresh)
    noise = back.line_noise
    assert noise.sinks_text == fresh.line_noise.sinks_text and noise.sinks_text
    assert "sinks" not in vars(noise)  # not compiled by reading the cache
    assert noise.sinks is not None and noise.sinks.search("__warn_printk") and not noise.sinks.search("kmalloc")
    assert noise.sinks is noise.sinks  # once


def test_a_stored_anonymous_label_rule_still_tells_labels_apart() -> None:
    from types import SimpleNamespace

    back = _roundtrip(compile_ruleset([RULES], "x86_64", rule_files([RULES], "x86_64")))

    def sym(name: str) -> SimpleNamespace:
        return SimpleNamespace(sym=SimpleNamespace(name=name, bind="LOCAL", type="NOTYPE", section=".text",
                                                   object=False, size=0, defined=True, value=0))

    assert back.anonymous.any(sym(".LC0")) and back.anonymous.matching(sym(".LC0")) is back.anonymous.items[0]
    assert not back.anonymous.any(sym("my_function"))


def test_a_diff_from_the_cache_loads_no_yaml_pydantic_or_parser(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    probe = ("import sys; from klpdiff.ruleset.load import default_rules_dir, load_ruleset, arch_for_machine; "
             "d = [default_rules_dir()]; arch_for_machine(d, 62); load_ruleset(d, 'x86_64'); "
             "print(sorted(m for m in ('yaml', 'pydantic', 'lark') if m in sys.modules))")
    env = {**os.environ, "KLPDIFF_CACHE_DIR": str(cache)}
    cold = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert cold.stdout.strip() == "['lark', 'pydantic', 'yaml']"  # compiled, and stored: the arch table and x86_64
    assert len(list(cache.glob("*.pickle"))) == 2
    assert len(list(cache.glob("expr-*.lark-cache"))) == 1  # the parser's tables: in the same folder, not /tmp
    warm = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert warm.stdout.strip() == "[]"


def test_outputs_are_identical_cold_and_warm_and_a_changed_rule_file_is_seen(
        pair: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    cache = tmp_path / "cache"
    env = {"KLPDIFF_CACHE_DIR": str(cache)}
    extra = tmp_path / "rules"
    extra.mkdir()
    rule = extra / "extra.yaml"
    rule.write_text("kind: refusals\nrefuse:\n  - when: 'sym.name == \"no_such_function_\"'\n")
    cold = _run(env, *pair, "-o", tmp_path / "cold.o", "--rules", extra)
    warm = _run(env, *pair, "-o", tmp_path / "warm.o", "--rules", extra)
    assert cold.returncode == warm.returncode == 0, cold.stderr + warm.stderr
    assert (tmp_path / "cold.o").read_bytes() == (tmp_path / "warm.o").read_bytes()
    # same size, same mtime: only the contents tell the new rule apart
    stat = rule.stat()
    rule.write_text("kind: refusals\nrefuse:\n  - when: 'sym.name == \"cmdline_proc_show\"'\n")
    os.utime(rule, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert rule.stat().st_size == stat.st_size
    refused = _run(env, *pair, "-o", tmp_path / "refused.o", "--rules", extra)
    assert refused.returncode == EXIT_REFUSED, refused.stdout + refused.stderr
    assert "cmdline_proc_show" in refused.stdout + refused.stderr


def test_a_damaged_or_foreign_cache_file_is_rebuilt_and_an_unusable_folder_is_no_error(
        pair: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    cache = tmp_path / "cache"
    env = {"KLPDIFF_CACHE_DIR": str(cache)}
    assert _run(env, *pair, "-o", tmp_path / "a.o").returncode == 0
    stored = sorted(cache.iterdir())
    assert stored
    for path in stored:
        path.write_bytes(b"not a pickle")
    again = _run(env, *pair, "-o", tmp_path / "b.o")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "a.o").read_bytes() == (tmp_path / "b.o").read_bytes()
    assert all(p.read_bytes() != b"not a pickle" for p in stored)  # rebuilt and stored again
    if os.geteuid() == 0:  # a file another user wrote is never unpickled
        bomb = tmp_path / "bomb"

        class Payload:
            def __reduce__(self) -> tuple[object, tuple[str]]:
                return os.system, (f"touch {bomb}",)

        for path in stored:
            path.write_bytes(pickle.dumps(("key", Payload())))
            os.chown(path, 12345, 12345)
        assert _run(env, *pair, "-o", tmp_path / "c.o").returncode == 0
        assert not bomb.exists()
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    for folder in (str(blocked / "cache"), ""):  # cannot be created; turned off
        proc = _run({"KLPDIFF_CACHE_DIR": folder}, *pair, "-o", tmp_path / "d.o")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "a.o").read_bytes() == (tmp_path / "d.o").read_bytes()


def test_storing_removes_what_was_not_rebuilt_for_a_month(pair: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    cache = tmp_path / "cache"
    cache.mkdir()
    old, recent = cache / "rules_x_old-00000000.pickle", cache / "rules_x_recent-00000000.pickle"
    for path in (old, recent):
        path.write_bytes(b"x")
    month_ago = os.stat(old).st_mtime - 31 * 24 * 3600
    os.utime(old, (month_ago, month_ago))
    assert _run({"KLPDIFF_CACHE_DIR": str(cache)}, *pair, "-o", tmp_path / "a.o").returncode == 0
    assert not old.exists() and recent.exists()
    assert len(list(cache.glob("*.pickle"))) == 3  # the recent one, and the two this run stored


def test_the_process_keeps_one_rule_set_per_contents() -> None:
    assert load_ruleset([RULES], "s390x") is load_ruleset([RULES], "s390x")


def test_without_a_home_of_its_own_nothing_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    from klpdiff.core.cachedir import cache_dir

    monkeypatch.delenv("KLPDIFF_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(os.path, "expanduser", lambda path: path)  # no HOME and no passwd entry: "~" stays
    assert cache_dir() is None
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    assert cache_dir() is None
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/me")
    assert cache_dir() == Path("/var/cache/me/klpdiff")
    monkeypatch.setenv("KLPDIFF_CACHE_DIR", "")
    assert cache_dir() is None
