"""The arches' relocation-less branch forms (relocations.yaml `branches`): each decodes the target of a
real instruction, as the arch's objdump shows it, and nothing else."""

from __future__ import annotations

import pytest

from klpdiff.ruleset.load import default_rules_dir, load_ruleset

# (arch, code bytes in memory order, offset of the instruction, its target as objdump prints it)
CASES = [
    ("x86_64", bytes.fromhex("e8ebffffff"), 0x10, 0x0),             # call 0 <setup_a>
    ("x86_64", bytes.fromhex("e9f0000000"), 0x0, 0xF5),             # jmp rel32 forward
    ("x86_64", bytes.fromhex("ebfe"), 0x4, 0x4),                    # jmp . (rel8)
    ("x86_64", bytes.fromhex("0f8410000000"), 0x0, 0x16),           # je rel32
    ("ppc64le", bytes.fromhex("cdffff4b"), 0x34, 0x0),              # bl 0 <setup_a>
    ("ppc64le", bytes.fromhex("10000048"), 0x8, 0x18),              # b +0x10
    ("aarch64", bytes.fromhex("faffff97"), 0x18, 0x0),              # bl 0 <setup_a>
    ("aarch64", bytes.fromhex("04000014"), 0x0, 0x10),              # b +0x10
    ("s390x", bytes.fromhex("c0e5fffffff0"), 0x20, 0x0),            # brasl %r14,0
    ("s390x", bytes.fromhex("c0f400000008"), 0x0, 0x10),            # jg +0x10
]


@pytest.mark.parametrize(("arch", "code", "at", "target"), CASES)
def test_branch_targets(arch: str, code: bytes, at: int, target: int) -> None:
    rs = load_ruleset([default_rules_dir()], arch)
    padded = bytes(at) + code
    found = {br.target(padded, at, arch != "s390x") for br in rs.branches} - {None}
    assert found == {target}


@pytest.mark.parametrize("arch", ["x86_64", "ppc64le", "aarch64", "s390x"])
def test_other_instructions_are_no_branch(arch: str) -> None:
    rs = load_ruleset([default_rules_dir()], arch)
    others = {"x86_64": "83c007c3", "ppc64le": "0000423c", "aarch64": "fd7bbfa9", "s390x": "a72a0007"}
    code = bytes.fromhex(others[arch])
    assert all(br.target(code, 0, arch != "s390x") is None for br in rs.branches)
