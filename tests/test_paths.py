"""Portable paths (metastore.mypy.paths): tokens, and the check that lets reads skip decoding."""

from __future__ import annotations

import json

import pytest

from metastore.mypy.paths import Roots


@pytest.fixture()
def roots() -> Roots:
    return Roots.from_dirs([("cwd", "/work/proj"), ("package_path0", "/venv/site-packages")])


def test_tokenize_and_resolve_round_trip(roots: Roots) -> None:
    token = roots.tokenize("/venv/site-packages/attr/__init__.pyi")
    assert token != "/venv/site-packages/attr/__init__.pyi" and token.startswith("\0")
    assert roots.resolve(token) == "/venv/site-packages/attr/__init__.pyi"
    assert roots.tokenize("pkg/mod.py") == "pkg/mod.py"  # relative: left alone
    assert roots.resolve("\0package_path7\0x.pyi") is None  # a root this run lacks


@pytest.mark.parametrize("encode", [lambda s: s.encode(), lambda s: json.dumps([s]).encode()],
                         ids=["raw", "json"])
def test_may_hold_tokens_sees_every_token(roots: Roots, encode: object) -> None:
    """The read path returns an entry undecoded when this says False, so it must never say
    False for an entry holding a token, raw (fixed format) or JSON-escaped."""
    assert callable(encode)
    for path in ("/venv/site-packages/a.pyi", "/work/proj/pkg/b.py"):
        assert Roots.may_hold_tokens(b"\x01\x02" + encode(roots.tokenize(path)) + b"\x00")
    assert Roots.may_hold_tokens(encode("\0package_path7\0x.pyi"))
    assert not Roots.may_hold_tokens(encode("pkg/mod.py") + b"\x00\x07\x00")
