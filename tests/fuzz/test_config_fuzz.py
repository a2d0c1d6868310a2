"""Fuzzing the config loaders: ``load_trade_config``, ``load_strategy_config`` and ``load_sim_config``.

Inputs: random text made of YAML's own punctuation, random bytes, and random mappings dumped as
YAML (known keys with values of any type, misspelt and unknown keys, NaN / inf, huge numbers,
dates, keys with newlines, deep nesting). Property: each loader returns its model or raises
:class:`ConfigError` (a :class:`UserError`) whose message is one non-empty line; never anything else.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel

import bfsx.config.run
from bfsx.config import ConfigError
from bfsx.config.run import load_strategy_config, load_trade_config
from bfsx.config.strategy import StrategyConfig
from bfsx.config.trade import TradeConfig
from bfsx.errors import UserError
from bfsx.sim.config import SimConfig, load_sim_config


@pytest.fixture(autouse=True, scope="module")
def _no_global_secrets() -> Iterator[None]:
    """Random 'secrets' must not be redacted from the logs of every later test in this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bfsx.config.run, "add_secret", lambda s: None)
        yield


def _load(kind: str, path: Path) -> Any:
    if kind == "trade":
        return load_trade_config(path, env={})
    if kind == "strategy":
        return load_strategy_config(path)
    return load_sim_config(path)


MODELS: dict[str, type[BaseModel]] = {"trade": TradeConfig, "strategy": StrategyConfig, "sim": SimConfig}


def _check(kind: str, data: bytes) -> None:
    """The loader's verdict on a file holding ``data``: a model, or one line of ConfigError."""
    with tempfile.TemporaryDirectory(prefix="bfsx-fuzz-") as d:
        path = Path(d) / ("trade.yaml" if kind == "trade" else f"{kind}.yaml")
        path.write_bytes(data)
        try:
            cfg = _load(kind, path)
        except ConfigError as e:
            msg = str(e)
            assert isinstance(e, UserError)
            assert msg.strip() and len(msg.splitlines()) == 1, msg
            return
    assert isinstance(cfg, MODELS[kind])


kinds = st.sampled_from(sorted(MODELS))

# --------------------------------------------------------------------------------- raw text

_yaml_text = st.text(st.sampled_from([*"ab: -[]{},'\"#&*!|>%@`\t\n\r\\?0123456789.eE+_~", "\x00", "\ufeff", "é",
                                     "\u2028", "\x85", "\x0c"]), max_size=120)
_depths = st.sampled_from([2, 50, 400, 1200, 3000])  # PyYAML composes recursively: past ~1000 it overflows
_nested = st.one_of(
    st.integers(1, 60).map(lambda n: "[" * n + "]" * n),  # deeper: 1.5 s of PyYAML each, see the @example
    _depths.map(lambda n: "{a: " * n + "}" * n),
    _depths.map(lambda n: "- " * n + "x"), st.integers(1, 150).map(lambda n: "".join(f"{' ' * i}k:\n" for i in range(n))),
)


@example(kind="trade", text="[" * 3000 + "]" * 3000)
@given(kind=kinds, text=_yaml_text | _nested)
def test_random_yaml_text(kind: str, text: str) -> None:
    _check(kind, text.encode("utf-8", "surrogatepass"))


@given(kind=kinds, data=st.binary(max_size=200))
def test_random_bytes(kind: str, data: bytes) -> None:
    _check(kind, data)


# ------------------------------------------------------------------------------ random mappings

_chars = st.characters(exclude_categories=("Cs",))
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),  # NaN, inf and all
    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 1e308, "", " ", "~", "yes", "13:30", "4:15", "FX_BTC_JPY",
                     "http://127.0.0.1:1", "ws://x", "a.py", "a.yaml", "03:55-04:15", "mon", "月", "DEBUG",
                     "SUPER BUSY", "127.0.0.1:5000", "{m}", "{0}", "%s", "a\nb", "x" * 300]),
    st.text(_chars, max_size=15), st.dates().map(date.isoformat), st.just(date(2026, 1, 1)),
    st.just(datetime(2026, 1, 1, 3, 55)),
)
_values = st.recursive(_scalars, lambda k: st.lists(k, max_size=3) | st.dictionaries(
    st.text(_chars, max_size=8) | st.integers(), k, max_size=3), max_leaves=8)


def _keys(model: type[BaseModel]) -> list[str]:
    out = list(model.model_fields)
    for name, f in model.model_fields.items():
        ann = f.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is not None:
            out += [f"{name}.{k}" for k in sub.model_fields]
    return out


@st.composite
def mappings(draw: st.DrawFn, kind: str) -> dict[Any, Any]:
    model = MODELS[kind]
    known = _keys(model)
    data: dict[Any, Any] = {}
    for key in draw(st.lists(st.sampled_from(known), max_size=6, unique=True)):
        head, _, tail = key.partition(".")
        if tail:
            data.setdefault(head, {})
            if isinstance(data[head], dict):
                data[head][tail] = draw(_values)
        else:
            data[head] = draw(_values)
    for _ in range(draw(st.integers(0, 2))):  # misspelt and unknown keys, keys of other types
        key = draw(st.sampled_from(known).map(lambda k: k.split(".")[0][:-1] + "x") | st.text(_chars, max_size=10)
                   | st.integers() | st.booleans() | st.none() | st.just("a\nb") | st.just(""))
        data[key] = draw(_values)
    return data


@st.composite
def dumped(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(kinds)
    data = draw(mappings(kind))
    doc: Any = data if draw(st.integers(0, 9)) else draw(_values)  # sometimes not a mapping at all
    return kind, yaml.safe_dump(doc, allow_unicode=draw(st.booleans())).encode()


@example(kd=("trade", b'"bad\\nkey": 1\n'))
@example(kd=("strategy", b'"bad\\x85key": 1\n'))
@example(kd=("trade", b"strategy_py: " + b"a" * 5000 + b".py\n"))
@example(kd=("strategy", b"? [1, 2]\n: 3\n"))
@given(kd=dumped())
def test_random_mappings_dumped_as_yaml(kd: tuple[str, bytes]) -> None:
    _check(*kd)


@given(kind=kinds, key=st.text(_chars, min_size=1, max_size=10), value=_values, dup=st.booleans())
def test_duplicate_and_anchored_keys(kind: str, key: str, value: Any, dup: bool) -> None:
    body = yaml.safe_dump({key: value}).strip()
    text = f"{body}\n{body}\n" if dup else f"base: &a {{x: 1}}\nother:\n  <<: *a\n{body}\n"
    _check(kind, text.encode())


def test_the_loaders_accept_their_defaults() -> None:
    """The property is not vacuous: an empty file is a valid config for every loader."""
    for kind in MODELS:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"{kind}.yaml"
            path.write_text("")
            assert isinstance(_load(kind, path), MODELS[kind])
