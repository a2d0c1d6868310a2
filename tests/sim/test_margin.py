"""The simulator's CFD margin model over real HTTP: collateral, open PnL and keep rate
(getcollateral), the collateral history (getcollateralhistory), ``POST /_sim/account`` and the
exchange's loss-cut (MARKET orders no bot placed, seen in getchildorders and child_order_events).

Most tests run on a *quiet* market (no synthetic takers, a still mid, no churn or refill) so only
the tests' own orders move the last price and every figure can be recomputed exactly.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bfsx.sim import paths
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import SimHooks, WireClient, WireSocket, eventually
from bfsx.sim.server import SimServer

FX, SPOT = "FX_BTC_JPY", "BTC_JPY"
KEY, SECRET = "demo-key-1", "demo-secret-1"
KEY2, SECRET2 = "demo-key-2", "demo-secret-2"
QUIET = {"taker_rate": 0, "volatility": 0, "jump_probability": 0, "noise": 0, "impact": 0, "churn_per_second": 0,
         "refill_rate": 0}
LEVERAGE, MARGIN_CALL, LOSS_CUT = 2.0, 1.0, 0.5  # the defaults of sim.yaml's margin section


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig.fast(market=QUIET)


@pytest.fixture
async def rest(sim: SimServer) -> AsyncIterator[WireClient]:
    async with WireClient(sim.url, KEY, SECRET) as c:
        yield c


@pytest.fixture
async def events(sim: SimServer) -> AsyncIterator[WireSocket]:
    ws = await WireSocket.connect(sim.ws_url)
    assert (await ws.auth(KEY, SECRET))["result"] is True
    assert (await ws.subscribe("child_order_events"))["result"] is True
    yield ws
    await ws.close()


# ------------------------------------------------------------------------------------ helpers
async def get(rest: WireClient, path: str, **query: Any) -> Any:
    r = await rest.get(path, **query)
    assert r.status == 200, f"{path}: HTTP {r.status} {r.text}"
    return r.data


async def net(rest: WireClient) -> float:
    lots = await get(rest, "/v1/me/getpositions", product_code=FX)
    return round(float(sum(lot["size"] * (1 if lot["side"] == "BUY" else -1) for lot in lots)), 8)


async def open_long(rest: WireClient, size: float) -> None:
    """A MARKET buy of ``size`` on FX; returns once the position shows it."""
    before = await net(rest)
    await rest.order(FX, "BUY", size)
    await eventually(lambda: _near(net(rest), before + size), what=f"a {size} BTC long")


async def _near(value: Any, target: float) -> bool:
    return bool(abs(await value - target) < 1e-9)


async def independent(rest: WireClient) -> dict[str, float]:
    """Open PnL, required collateral and keep rate computed here from getpositions, getticker's
    last price and the collateral, with the documented formulas (not read from getcollateral)."""
    lots = await get(rest, "/v1/me/getpositions", product_code=FX)
    ltp = (await get(rest, "/v1/getticker", product_code=FX))["ltp"]
    collateral = (await get(rest, "/v1/me/getcollateral"))["collateral"]
    pnl = sum((ltp - lot["price"]) * lot["size"] * (1 if lot["side"] == "BUY" else -1) for lot in lots)
    req = sum(lot["price"] * lot["size"] for lot in lots) / LEVERAGE
    return {"pnl": pnl, "req": req, "collateral": collateral, "keep": (collateral + pnl) / req if req else 0.0}


def withdrawal_for(fig: dict[str, float], keep_rate: float) -> float:
    """The collateral (JPY) that puts the keep rate at ``keep_rate`` with these positions."""
    return round(keep_rate * fig["req"] - fig["pnl"], 2)


async def history(rest: WireClient, **query: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await get(rest, "/v1/me/getcollateralhistory", **query)
    return rows


def acct_state(sim: SimServer, key: str = KEY) -> dict[str, Any]:
    acct: dict[str, Any] = sim.state()["accounts"][key]
    return acct


# -------------------------------------------------------------------------------------- tests
async def test_keep_rate_and_open_pnl_follow_the_positions_and_the_last_price(sim: SimServer, rest: WireClient) -> None:
    flat = await get(rest, "/v1/me/getcollateral")
    assert flat == {"collateral": 10_000_000, "open_position_pnl": 0, "require_collateral": 0, "keep_rate": 0.0,
                    "margin_call_amount": 0, "margin_call_due_date": None}
    await open_long(rest, 0.5)
    await rest.order(FX, "SELL", 0.2)  # closes 0.2 of the oldest lots: a realised loss (the spread)
    await eventually(lambda: _near(net(rest), 0.3), what="0.3 BTC left")
    coll = await get(rest, "/v1/me/getcollateral")
    fig = await independent(rest)
    assert coll["collateral"] == fig["collateral"] < 10_000_000
    assert coll["open_position_pnl"] == pytest.approx(fig["pnl"], abs=1e-6)
    assert coll["require_collateral"] == pytest.approx(fig["req"], abs=1e-6)
    assert coll["keep_rate"] == pytest.approx(fig["keep"], abs=1e-4)
    assert acct_state(sim)["keep_rate"] == pytest.approx(fig["keep"], rel=1e-12)
    assert fig["keep"] > 6  # 10M JPY behind 0.3 BTC at 2x
    assert coll["margin_call_amount"] == 0 and coll["margin_call_due_date"] is None
    lots = await get(rest, "/v1/me/getpositions", product_code=FX)
    assert sum(lot["pnl"] for lot in lots) == pytest.approx(coll["open_position_pnl"], abs=1e-6)
    assert sum(lot["require_collateral"] for lot in lots) == pytest.approx(coll["require_collateral"], abs=1e-4)
    assert {lot["leverage"] for lot in lots} == {2}


async def test_collateral_history_sums_to_the_collateral_newest_first_and_pages(sim: SimServer, rest: WireClient) -> None:
    first = await history(rest)
    assert len(first) == 1 and first[0]["reason_code"] == "DEPOSIT"
    assert first[0]["change"] == first[0]["amount"] == 10_000_000 and first[0]["currency_code"] == "JPY"
    assert set(first[0]) == {"id", "currency_code", "change", "amount", "reason_code", "date"}
    await open_long(rest, 0.3)
    for _ in range(2):  # two closing fills at a loss: two CLEARING_COLL rows (or more, one per fill)
        before = await net(rest)
        await rest.order(FX, "SELL", 0.1)
        await eventually(lambda b=before: _near(net(rest), b - 0.1), what="a partial close")
    await SimHooks(sim.url).set_account(KEY, 12_345_678.9)  # a deposit
    rows = await history(rest)
    coll = (await get(rest, "/v1/me/getcollateral"))["collateral"]
    assert coll == 12_345_678.9
    assert sum(r["change"] for r in rows) == pytest.approx(coll, abs=1e-6)
    assert rows[0]["amount"] == coll and rows[0]["reason_code"] == "DEPOSIT" and rows[0]["change"] > 0
    assert {r["reason_code"] for r in rows[1:-1]} == {"CLEARING_COLL"} and len(rows) >= 4
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    for newer, older in itertools.pairwise(rows):  # amount = the collateral after each change
        assert newer["amount"] == pytest.approx(older["amount"] + newer["change"], abs=1e-6)
        assert newer["date"] >= older["date"]
    assert [r["id"] for r in await history(rest, count=2)] == ids[:2]
    assert [r["id"] for r in await history(rest, count=2, before=ids[1])] == ids[2:4]
    assert [r["id"] for r in await history(rest, after=ids[2])] == ids[:2]
    assert (await rest.get("/v1/me/getcollateralhistory", count=0)).status == 400
    assert "/v1/me/getcollateralhistory" in await get(rest, "/v1/me/getpermissions")


async def test_a_margin_call_shows_in_getcollateral_but_closes_nothing(sim: SimServer, rest: WireClient) -> None:
    await open_long(rest, 0.5)
    fig = await independent(rest)
    reply = await SimHooks(sim.url).set_account(KEY, withdrawal_for(fig, 0.8))
    assert reply["loss_cut"] is False and reply["loss_cuts"] == 0
    coll = await get(rest, "/v1/me/getcollateral")
    assert reply["collateral"] == coll
    assert coll["keep_rate"] == pytest.approx(0.8, abs=1e-4) and coll["keep_rate"] < MARGIN_CALL
    # what a deposit must add to be back at the margin-call ratio, in whole yen (rounded up)
    assert coll["margin_call_amount"] == pytest.approx(fig["req"] * MARGIN_CALL - (coll["collateral"] + fig["pnl"]), abs=1)
    assert coll["margin_call_amount"] > 0 and coll["margin_call_due_date"] is None
    assert await net(rest) == 0.5
    assert [o["child_order_type"] for o in await get(rest, "/v1/me/getchildorders", product_code=FX)] == ["MARKET"]
    assert acct_state(sim)["loss_cuts"] == 0
    rows = await history(rest)
    assert rows[0]["reason_code"] == "WITHDRAWAL" and rows[0]["amount"] == coll["collateral"]
    # a deposit back above the ratio clears the margin call
    await SimHooks(sim.url).set_account(KEY, 10_000_000)
    coll = await get(rest, "/v1/me/getcollateral")
    assert coll["keep_rate"] > MARGIN_CALL and coll["margin_call_amount"] == 0


async def test_just_above_the_loss_cut_ratio_nothing_happens(sim: SimServer, rest: WireClient, events: WireSocket) -> None:
    await open_long(rest, 0.5)
    await events.wait_for(lambda: [e for e in events.events() if e["event_type"] == "EXECUTION"])
    n_events = len(events.events())
    reply = await SimHooks(sim.url).set_account(KEY, withdrawal_for(await independent(rest), LOSS_CUT + 0.01))
    assert reply["loss_cut"] is False and reply["collateral"]["keep_rate"] == pytest.approx(0.51, abs=1e-4)
    assert await net(rest) == 0.5
    assert len(await get(rest, "/v1/me/getchildorders", product_code=FX)) == 1
    assert acct_state(sim)["loss_cuts"] == 0
    # a marker order after the withdrawal: once its ORDER is in, nothing else came before it
    bid = (await get(rest, "/v1/getticker", product_code=FX))["best_bid"]
    marker = await rest.order(FX, "BUY", 0.001, bid - 50_000)
    await events.wait_for(lambda: events.events(marker))
    assert [e["child_order_acceptance_id"] for e in events.events()[n_events:]] == [marker]


async def test_a_withdrawal_below_the_loss_cut_ratio_closes_every_cfd_position_at_market(
    sim: SimServer, rest: WireClient, events: WireSocket
) -> None:
    mine = [await rest.order(SPOT, "BUY", 0.01)]  # spot: a fill, then a resting order, both untouched
    bid = (await get(rest, "/v1/getticker", product_code=SPOT))["best_bid"]
    mine.append(await rest.order(SPOT, "BUY", 0.01, bid - 50_000))
    fx_bid = (await get(rest, "/v1/getticker", product_code=FX))["best_bid"]
    mine.append(await rest.order(FX, "BUY", 0.01, fx_bid - 50_000))  # a resting CFD order: cancelled
    for size in (0.3, 0.2):  # two market buys (several lots)
        before = await net(rest)
        mine.append(await rest.order(FX, "BUY", size))
        await eventually(lambda b=before, s=size: _near(net(rest), b + s), what="the long")
    await eventually(lambda: len(acct_state(sim)["open_orders"]) == 2, what="two resting orders")
    balances = await get(rest, "/v1/me/getbalance")
    fig = await independent(rest)

    target = withdrawal_for(fig, LOSS_CUT - 0.05)
    reply = await SimHooks(sim.url).set_account(KEY, target)
    assert reply["loss_cut"] is True and reply["loss_cuts"] == 1

    assert await get(rest, "/v1/me/getpositions", product_code=FX) == []
    coll = await get(rest, "/v1/me/getcollateral")
    assert coll["open_position_pnl"] == coll["require_collateral"] == coll["keep_rate"] == 0
    st = acct_state(sim)
    assert st["positions"][FX]["net"] == 0 and st["loss_cuts"] == 1 and st["keep_rate"] == 0
    # the exchange's own order: a MARKET SELL of the whole position, which no one here sent
    rows = await get(rest, "/v1/me/getchildorders", product_code=FX)
    theirs = [o for o in rows if o["child_order_acceptance_id"] not in mine]
    assert len(theirs) == 1
    cut = theirs[0]
    assert (cut["child_order_type"], cut["side"], cut["child_order_state"]) == ("MARKET", "SELL", "COMPLETED")
    assert cut["size"] == cut["executed_size"] == 0.5 and cut["child_order_id"].startswith("JFX")
    states = {o["child_order_acceptance_id"]: o["child_order_state"] for o in rows}
    assert states[mine[2]] == "CANCELED"  # the resting CFD bid could have re-opened the position
    # on the account's realtime socket: CANCEL of its bid, ORDER and EXECUTIONs of the foreign order
    acc = cut["child_order_acceptance_id"]

    def cut_events() -> list[str] | None:
        types = [e["event_type"] for e in events.events(acc)]
        filled = sum(e["size"] for e in events.events(acc) if e["event_type"] == "EXECUTION")
        return types if abs(filled - 0.5) < 1e-9 else None

    types = await events.wait_for(cut_events)
    assert types[0] == "ORDER" and set(types[1:]) == {"EXECUTION"}
    order_ev = events.events(acc)[0]
    assert order_ev["child_order_type"] == "MARKET" and order_ev["side"] == "SELL" and order_ev["size"] == 0.5
    await events.wait_for(lambda: [e for e in events.events(mine[2]) if e["event_type"] == "CANCEL"])
    # spot: balances and the resting spot order as they were
    assert await get(rest, "/v1/me/getbalance") == balances
    spot_rows = {o["child_order_acceptance_id"]: o for o in await get(rest, "/v1/me/getchildorders", product_code=SPOT)}
    assert spot_rows[mine[1]]["child_order_state"] == "ACTIVE"
    # the history: the withdrawal, then the loss-cut's realised PnL; still summing to the collateral
    hist = await history(rest)
    assert "WITHDRAWAL" in [r["reason_code"] for r in hist]
    assert hist[0]["reason_code"] == "CLEARING_COLL" and hist[0]["amount"] == coll["collateral"]
    assert sum(r["change"] for r in hist) == pytest.approx(coll["collateral"], abs=1e-6)
    assert coll["collateral"] < target  # sold into the bids: the spread is lost
    assert acct_state(sim, KEY2)["loss_cuts"] == 0


async def test_a_price_move_through_the_loss_cut_ratio_cuts_too(sim: SimServer, rest: WireClient) -> None:
    """No withdrawal at the moment of the cut: another account's sale moves the last price and
    the check after that trade finds the keep rate below the ratio."""
    await open_long(rest, 1.0)
    fig = await independent(rest)
    await SimHooks(sim.url).set_account(KEY, withdrawal_for(fig, LOSS_CUT + 0.0001))
    assert (await independent(rest))["keep"] > LOSS_CUT and acct_state(sim)["loss_cuts"] == 0
    await SimHooks(sim.url).set_account(KEY2, 100_000_000)  # a deposit: room for a big short
    async with WireClient(sim.url, KEY2, SECRET2) as other:
        await other.order(FX, "SELL", 3.0)  # walks the bids down by well over 1,000 JPY
    await eventually(lambda: acct_state(sim)["loss_cuts"] == 1, what="the loss-cut")
    await eventually(lambda: _near(net(rest), 0.0), what="a flat account")
    assert acct_state(sim)["positions"][FX]["net"] == 0


async def test_a_loss_cut_on_a_real_simulator_process(sim_process: Any) -> None:
    """``bfsx sim`` with its default (moving) market: a withdrawal loss-cuts the account, the
    foreign order reaches the account's socket, and /_sim/state counts it."""
    ws = await WireSocket.connect(sim_process.ws_url)
    try:
        assert (await ws.auth(KEY, SECRET))["result"] is True
        assert (await ws.subscribe("child_order_events"))["result"] is True
        async with WireClient(sim_process.url, KEY, SECRET) as rest:
            mine = await rest.order(FX, "BUY", 0.1)
            await eventually(lambda: _near(net(rest), 0.1), what="the long")
            reply = await sim_process.set_account(KEY, 50_000)  # keep rate ≈ 0.1
            assert reply["loss_cut"] is True
            await eventually(lambda: _near(net(rest), 0.0), what="a flat account")
            rows = await get(rest, "/v1/me/getchildorders", product_code=FX)
            theirs = [o for o in rows if o["child_order_acceptance_id"] != mine]
            assert [(o["child_order_type"], o["side"], o["size"]) for o in theirs] == [("MARKET", "SELL", 0.1)]
            acc = theirs[0]["child_order_acceptance_id"]
            await ws.wait_for(lambda: {"ORDER", "EXECUTION"} <= {e["event_type"] for e in ws.events(acc)})
        state = await sim_process.fetch_state()
        assert state["accounts"][KEY]["loss_cuts"] == 1 and state["accounts"][KEY]["keep_rate"] == 0
    finally:
        await ws.close()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "body is not JSON"),
        (b"[1, 2]", 400, "expected a JSON object"),
        (b'{"collateral_jpy": 1}', 400, "api_key: Field required"),
        (b'{"api_key": "demo-key-1"}', 400, "collateral_jpy: Field required"),
        (b'{"api_key": "demo-key-1", "collateral_jpy": -1}', 400, "collateral_jpy: Input should be greater than or equal to 0"),
        (b'{"api_key": "demo-key-1", "collateral_jpy": "5"}', 400, "collateral_jpy: Input should be a valid number"),
        (b'{"api_key": "demo-key-1", "collateral_jpy": true}', 400, "collateral_jpy: Input should be a valid number"),
        (b'{"api_key": "demo-key-1", "collateral_jpy": 1e16}', 400, "collateral_jpy: Input should be less than or equal to"),
        (b'{"api_key": "demo-key-1", "collateral_jpy": NaN}', 400, "body is not JSON"),
        (b'{"api_key": "demo-key-1", "collateral_jpy": 1, "btc": 1}', 400, "btc: Extra inputs are not permitted"),
        (b'{"api_key": "nobody", "collateral_jpy": 1}', 404, "unknown api_key 'nobody'"),
    ],
)
async def test_bad_account_bodies_get_one_clear_error(sim: SimServer, body: bytes, status: int, message: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{sim.url}{paths.ACCOUNT}", data=body) as r:
        data = await r.json()
    assert r.status == status and set(data) == {"error"}
    assert data["error"].startswith(message) and "\n" not in data["error"]
    assert acct_state(sim)["collateral"]["collateral"] == 10_000_000  # nothing changed
    with pytest.raises(ValueError, match="unknown api_key 'nobody'"):
        await SimHooks(sim.url).set_account("nobody", 1)
    with pytest.raises(ValueError, match="unknown api_key 'nobody'"):  # in-process, the same
        await sim.set_account("nobody", 1)
    with pytest.raises(ValueError, match="collateral_jpy: Input should be greater than or equal to 0"):
        await sim.set_account(KEY, -1)


def test_margin_config_keys_and_their_order() -> None:
    cfg = SimConfig()
    assert (cfg.margin.leverage, cfg.margin.margin_call_ratio, cfg.margin.loss_cut_ratio) == (2, 1, 0.5)
    assert SimConfig.fast(margin={"leverage": 4, "loss_cut_ratio": 0.3}).margin.leverage == 4
    with pytest.raises(ValueError, match=re.escape("loss_cut_ratio <= margin_call_ratio, got 0.5 > 0.4")):
        SimConfig.fast(margin={"margin_call_ratio": 0.4})
    with pytest.raises(ValueError, match=re.escape("'fx_leverage' is now 'margin: {leverage: ...}'")):
        SimConfig.model_validate({"fx_leverage": 2})
