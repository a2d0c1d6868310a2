"""The account's control state (posserver/controls.py) rule by rule: written from the survivors of
mutation run F (docs/mutation-survivors.md, "Run F"). Each test isolates a rule that a surviving
mutant showed no fast test held: the every-market scope, what an unfreeze lifts and keeps, an
adopt of zero, the generation, and what controls.json must hold to be restored."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from bfsx.bitflyer.products import PRODUCTS
from bfsx.posserver.controls import FROZEN, SELF_TRADE, Controls

FX, SPOT, ETH = "FX_BTC_JPY", "BTC_JPY", "ETH_JPY"
D = Decimal
KNOWN = frozenset(PRODUCTS)


def _saved(tmp_path: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((tmp_path / "controls.json").read_text())
    return out


def _restored(tmp_path: Path, content: dict[str, Any]) -> Controls:
    (tmp_path / "controls.json").write_text(json.dumps(content))
    c = Controls(tmp_path)
    c.load(KNOWN)
    return c


# ------------------------------------------------------------------------------ scopes
def test_a_memory_only_state_has_no_file_and_loads_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    c = Controls()
    assert c.path is None
    c.load(KNOWN)  # nothing to read: no error
    assert c.hold("ctl", FX) is True and c.bot_control(FX).mode == "close-only"
    assert c.save_errors == 0 and list(tmp_path.iterdir()) == []


def test_every_market_scope_pauses_and_freezes_each_market(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    assert c.pause("ctl") is True  # bfsx ctl pause (no market)
    assert c.paused(FX) == ["ctl"] and c.bot_control(SPOT).mode == "pause"
    assert c.freeze(None, "all frozen") is True
    assert c.frozen_why(FX) == "all frozen" and c.frozen_why(ETH) == "all frozen"


def test_releasing_a_markets_hold_leaves_the_every_market_one(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    c.hold("ctl", FX)
    c.hold("ctl")
    assert c.release("ctl", FX) is True
    assert c.holds == {"*": {"ctl"}} and c.held(FX) == ["ctl"]
    assert c.release("ctl", SPOT) is False and c.release("ctl") is True and c.bot_control(FX).mode == "run"


def test_scopes_name_every_market_any_control_names(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    c.hold("ctl", FX)
    c.pause("ctl", SPOT)
    c.freeze(ETH, "why")
    c.adopt("BTC_USD", D("0.1"))
    c.allow_reopen(["FX_BTC_JPY", "XRP_JPY"])
    assert c.scopes() == {FX, SPOT, ETH, "BTC_USD", "XRP_JPY"}


# ------------------------------------------------------------------------------ unfreeze
def test_unfreeze_of_one_market_lifts_only_its_freeze_and_keeps_other_reasons(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    for m in (FX, SPOT):
        c.freeze(m, f"{m} why")
        c.pause(FROZEN, m)
    c.pause("ctl", FX)
    assert c.unfreeze(FX) == [FX]
    assert c.frozen == {SPOT: f"{SPOT} why"} and c.paused(FX) == ["ctl"] and c.paused(SPOT) == [FROZEN]
    assert _saved(tmp_path)["pauses"] == {FX: ["ctl"], SPOT: [FROZEN]}
    # A frozen pause without a freeze (left by an older server) is lifted, said and saved too.
    c.pause(FROZEN, ETH)
    assert c.unfreeze(ETH) == [ETH] and c.paused(ETH) == [] and ETH not in _saved(tmp_path)["pauses"]
    assert c.unfreeze(ETH) == []


def test_unfreeze_of_every_market_lifts_every_freeze_and_frozen_hold(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    c.freeze(FX, "fx")
    c.freeze(None, "all")
    c.pause(FROZEN, FX)
    c.hold(FROZEN, SPOT)
    c.pause("ctl", ETH)
    assert sorted(c.unfreeze(None)) == sorted(["*", FX, SPOT])
    assert c.frozen == {} and c.pauses == {ETH: {"ctl"}} and c.holds == {}
    saved = _saved(tmp_path)
    assert saved["frozen"] == {} and saved["pauses"] == {ETH: ["ctl"]} and saved["holds"] == {}


# ------------------------------------------------------------------------------ re-open, adopt, step aside
def test_allowing_a_re_open_keeps_the_markets_already_allowed(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    c.allow_reopen([FX])
    c.allow_reopen([FX, SPOT])
    assert c.reopen_allowed(FX) and c.reopen_allowed(SPOT)
    assert _saved(tmp_path)["reopen"] == [SPOT, FX]


def test_adopting_zero_takes_the_adjust_back_and_one_is_kept(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    c.adopt(FX, D(1))  # a whole coin
    assert c.adjust_of(FX) == D(1) and _saved(tmp_path)["base_adjust"] == {FX: "1"}
    c.adopt(FX, D(0))
    assert c.adjust_of(FX) == 0 and c.base_adjust == {} and _saved(tmp_path)["base_adjust"] == {}
    c.adopt(SPOT, D(0))  # nothing adopted there: nothing to take back
    assert c.base_adjust == {} and c.scopes() == set()


def test_a_failed_step_aside_is_no_longer_aside(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    c.step_aside(FX, 5.0)
    c.step_aside_failed(FX)
    assert c.aside_since(FX) is None and c.step_aside_useless(FX) and c.paused(FX) == []
    assert c.step_aside_over(FX) is False  # nothing was aside any more
    assert not c.step_aside_useless(FX)


# ------------------------------------------------------------------------------ generation
def test_the_generation_counts_every_change_once(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    assert c.generation == 0 and c.bot_control(FX).generation == 0
    c.hold("ctl", FX)
    c.pause("ctl", FX)
    c.hold("ctl", FX)  # no change
    c.freeze(FX, "why")
    assert c.generation == 3 and c.bot_control(FX).generation == 3 and _saved(tmp_path)["generation"] == 3


def test_a_restored_generation_is_a_non_negative_integer_or_zero(tmp_path: Path) -> None:
    assert _restored(tmp_path, {"generation": 7}).generation == 7
    assert _restored(tmp_path, {}).generation == 0
    for bad in (-5, True, "7", 2.5, None):
        c = _restored(tmp_path, {"generation": bad, "holds": {FX: ["ctl"]}})
        assert c.generation == 0 and c.held(FX) == ["ctl"], bad


# ------------------------------------------------------------------------------ controls.json
def test_a_file_with_only_some_tables_restores_them(tmp_path: Path) -> None:
    """Every table is optional: a file with one of them (hand-written, or an older layout) is read."""
    assert _restored(tmp_path, {"holds": {FX: ["ctl"]}}).held(FX) == ["ctl"]
    assert _restored(tmp_path, {"frozen": {FX: "why"}}).frozen_why(FX) == "why"
    assert _restored(tmp_path, {"base_adjust": {FX: "0.5"}}).adjust_of(FX) == D("0.5")
    assert _restored(tmp_path, {"reopen": [FX]}).reopen_allowed(FX)


def test_restored_reasons_are_one_to_64_printable_characters(tmp_path: Path) -> None:
    c = _restored(tmp_path, {"holds": {FX: ["", "x", "y" * 64, "z" * 65, "a\tb", 3, SELF_TRADE]}})
    assert c.holds == {FX: {"x", "y" * 64}}  # the volatile self-trade reason is never restored


def test_a_restored_re_open_names_only_known_markets(tmp_path: Path) -> None:
    c = _restored(tmp_path, {"reopen": ["NOPE", FX, 5]})
    assert c.reopen == {FX}


def test_a_save_into_a_state_dir_not_made_yet_makes_it(tmp_path: Path) -> None:
    c = Controls(tmp_path / "a" / "b")
    c.hold("ctl", FX)
    assert c.save_errors == 0 and _saved(tmp_path / "a" / "b")["holds"] == {FX: ["ctl"]}


def test_every_failed_save_is_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = Controls(blocker / "sub")
    c.hold("ctl", FX)
    c.pause("ctl", FX)
    assert c.save_errors == 2 and c.bot_control(FX).mode == "pause"
