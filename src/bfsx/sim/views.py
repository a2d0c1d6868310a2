"""Answers shaped from the engine's state: the REST replies (board, ticker, executions, child
orders, positions, balances, collateral and its history), the realtime board snapshots, diffs and tickers, and the
``/_sim/state`` JSON.

Owns no state of its own: every function reads an :class:`~bfsx.sim.engine.Engine`. Two counters
move as the exchange's do: :func:`ticker` bumps the market's ``tick_id``, :func:`take_diff` clears
the book's changed prices.
"""

from __future__ import annotations

import itertools
from typing import Any

from bfsx.bitflyer import timestamps
from bfsx.sim.engine import Engine
from bfsx.sim.model import BUY, SAT, SELL, SIDE_NAME, Account, btc, jpy


def _mid_json(mid: float | None) -> float:
    if mid is None:
        return 0.0
    return float(mid) if mid != int(mid) else float(int(mid))


def board(engine: Engine, product: str, depth: int | None = None, *, ws: bool = False) -> dict[str, Any]:
    """getboard / snapshot payload (``ws`` prints prices as floats, like the realtime feed)."""
    book = engine.markets[product].book
    conv: Any = float if ws else int
    bids, asks = book.bids, book.asks
    # the book's own sorted prices, read directly: a snapshot is hundreds of levels every few seconds
    bid_prices, ask_prices = bids.prices(), asks.prices()
    if depth is not None:
        bid_prices = bid_prices[-depth:] if depth > 0 else []
        ask_prices = ask_prices[:depth] if depth > 0 else []
    bid_prices = bid_prices[::-1]  # best (highest) first
    return {
        "mid_price": _mid_json(book.mid()) if ws else _rest_mid(book.mid()),
        "bids": [{"price": conv(p), "size": bids[p].total / SAT} for p in bid_prices],
        "asks": [{"price": conv(p), "size": asks[p].total / SAT} for p in ask_prices],
    }


def take_diff(engine: Engine, product: str) -> dict[str, Any] | None:
    """The levels changed since the last call (size = new total, 0 = gone), or None."""
    book = engine.markets[product].book
    if not book.dirty_bids and not book.dirty_asks:
        return None
    stale = engine.config.market.stale_deletions
    bid, ask = book.bids.get, book.asks.get  # size 0.0: the level is gone
    bids = [{"price": float(p), "size": lvl.total / SAT if (lvl := bid(p)) is not None else 0.0}
            for p in sorted(book.dirty_bids, reverse=True)]
    asks = [{"price": float(p), "size": lvl.total / SAT if (lvl := ask(p)) is not None else 0.0}
            for p in sorted(book.dirty_asks)]
    if stale > 0:  # a missed deletion leaves a stale level until the next snapshot
        bids = [x for x in bids if x["size"] or engine.diff_rng.random() >= stale]
        asks = [x for x in asks if x["size"] or engine.diff_rng.random() >= stale]
    book.dirty_bids.clear()
    book.dirty_asks.clear()
    return {"mid_price": _mid_json(book.mid()), "bids": bids, "asks": asks}


def ticker(engine: Engine, product: str, *, ws: bool = False) -> dict[str, Any]:
    mkt = engine.markets[product]
    book = mkt.book
    mkt.tick_id += 1
    bb, ba = book.touch(BUY), book.touch(SELL)
    when = engine.now()
    out: dict[str, Any] = {
        "product_code": product,
        "state": engine.board_state(),
        "timestamp": timestamps.ws(when) if ws else timestamps.rest_ms(when),
        "tick_id": mkt.tick_id,
        "best_bid": float(bb or 0),
        "best_ask": float(ba or 0),
        "best_bid_size": btc(book.bids[bb].total) if bb is not None else 0.0,
        "best_ask_size": btc(book.asks[ba].total) if ba is not None else 0.0,
        "total_bid_depth": btc(book.depth[BUY]),
        "total_ask_depth": btc(book.depth[SELL]),
        "market_bid_size": 0.0,
        "market_ask_size": 0.0,
        "ltp": float(mkt.ltp),
        "volume": btc(mkt.volume),
        "volume_by_product": btc(mkt.volume),
    }
    if ws:
        out["preopen_end"] = None
        out["circuit_break_end"] = None
    return out


def public_executions(
    engine: Engine, product: str, count: int = 100, before: int | None = None, after: int | None = None
) -> list[dict[str, Any]]:
    """getexecutions rows, newest first, ids in (after, before)."""
    out: list[dict[str, Any]] = []
    for xid, side, price, size, when, b, s in reversed(engine.markets[product].history):
        if before is not None and xid >= before:
            continue
        if after is not None and xid <= after:
            break
        out.append(
            {
                "id": xid,
                "side": SIDE_NAME.get(side, ""),  # "" for an upstream Itayose print
                "price": price,
                "size": btc(size),
                "exec_date": timestamps.rest_ms(when),
                "buy_child_order_acceptance_id": b,
                "sell_child_order_acceptance_id": s,
            }
        )
        if len(out) >= count:
            break
    return out


def child_orders(
    engine: Engine,
    account: Account,
    product: str,
    count: int = 100,
    before: int | None = None,
    after: int | None = None,
    state: str | None = None,
    child_order_id: str | None = None,
    acceptance_id: str | None = None,
) -> list[dict[str, Any]]:
    """getchildorders rows, newest first. ACTIVE rows (id 0) come first and are left out
    when paging by ``before``/``after`` (their id is not assigned yet)."""
    paging = before is not None or after is not None
    rows: list[dict[str, Any]] = []
    actives = [] if paging else sorted(account.active.values(), key=lambda o: -o.serial)
    for o in itertools.chain(actives, reversed(account.finished)):
        if o.product != product:
            continue
        if state and o.state != state.upper():
            continue
        if child_order_id and o.child_order_id != child_order_id:
            continue
        if acceptance_id and o.acceptance_id != acceptance_id:
            continue
        if before is not None and o.page_id >= before:
            continue
        if after is not None and o.page_id <= after:
            continue
        rows.append(o.row())
        if len(rows) >= count:
            break
    return rows


def my_executions(
    engine: Engine,
    account: Account,
    product: str,
    count: int = 100,
    before: int | None = None,
    after: int | None = None,
    child_order_id: str | None = None,
    acceptance_id: str | None = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in reversed(account.fills):
        if f.order.product != product:
            continue
        if before is not None and f.exec_id >= before:
            continue
        if after is not None and f.exec_id <= after:
            break
        if child_order_id and f.order.child_order_id != child_order_id:
            continue
        if acceptance_id and f.order.acceptance_id != acceptance_id:
            continue
        rows.append(f.row())
        if len(rows) >= count:
            break
    return rows


def positions(engine: Engine, account: Account, product: str) -> list[dict[str, Any]]:
    mkt = engine.markets[product]
    mark = mkt.ltp or int(mkt.fair_mid)
    lev = engine.config.margin.leverage
    return [
        {
            "product_code": product,
            "side": SIDE_NAME[lot.side],
            "price": lot.price,
            "size": btc(lot.size),
            "commission": 0,
            "swap_point_accumulate": 0,
            "require_collateral": jpy(round(lot.price * lot.size / lev)),
            "open_date": timestamps.rest_ms(lot.opened),
            "leverage": int(lev) if lev == int(lev) else lev,
            "pnl": jpy((mark - lot.price) * lot.size * lot.side),
            "sfd": 0,
        }
        for lot in account.lots.get(product, ())
    ]


def balance(engine: Engine, account: Account) -> list[dict[str, Any]]:
    return [
        {"currency_code": "JPY", "amount": jpy(account.jpy), "available": jpy(engine.available_jpy(account))},
        {"currency_code": "BTC", "amount": btc(account.btc), "available": btc(engine.available_btc(account))},
    ]


def collateral(engine: Engine, account: Account) -> dict[str, Any]:
    """getcollateral. ``margin_call_amount``: whole yen that would bring the keep rate back to
    ``margin.margin_call_ratio`` (0 when it is not below); the simulator sets no due date."""
    return {
        "collateral": jpy(account.collateral),
        "open_position_pnl": jpy(engine.open_pnl(account)),
        "require_collateral": jpy(engine.require_collateral(account)),
        "keep_rate": round(engine.keep_rate(account), 4),
        "margin_call_amount": -(-engine.margin_call_amount(account) // SAT),
        "margin_call_due_date": None,
    }


def collateral_history(
    engine: Engine, account: Account, count: int = 100, before: int | None = None, after: int | None = None
) -> list[dict[str, Any]]:
    """getcollateralhistory rows, newest first, ids in (after, before)."""
    rows: list[dict[str, Any]] = []
    for c in reversed(account.collateral_changes):
        if before is not None and c.change_id >= before:
            continue
        if after is not None and c.change_id <= after:
            break
        rows.append(c.row())
        if len(rows) >= count:
            break
    return rows


def collateral_accounts(engine: Engine, account: Account) -> list[dict[str, Any]]:
    return [{"currency_code": "JPY", "amount": jpy(account.collateral)}, {"currency_code": "BTC", "amount": 0.0}]


def state(engine: Engine) -> dict[str, Any]:
    """GET /_sim/state: markets, accounts (balances, collateral, open orders, positions)."""
    accounts: dict[str, Any] = {}
    for key, acct in engine.accounts.items():
        by_product: dict[str, Any] = {}
        for code, mkt in engine.markets.items():
            if mkt.spec.is_fx:
                by_product[code] = {"net": btc(acct.net(code)), "lots": positions(engine, acct, code)}
            else:
                by_product[code] = {"net": btc(acct.btc), "lots": []}
        accounts[key] = {
            "balances": {b["currency_code"]: b for b in balance(engine, acct)},
            "collateral": collateral(engine, acct),
            "keep_rate": engine.keep_rate(acct),
            "loss_cuts": acct.loss_cuts,
            "open_orders": [o.row() for o in acct.active.values()],
            "positions": by_product,
            "executions": len(acct.fills),
        }
    markets = {}
    for code, mkt in engine.markets.items():
        book = mkt.book
        markets[code] = {
            "best_bid": book.touch(BUY),
            "best_ask": book.touch(SELL),
            "mid_price": book.mid(),
            "fair_mid": mkt.fair_mid,
            "ltp": mkt.ltp,
            "volume": btc(mkt.volume),
            "levels": [len(book.bids), len(book.asks)],
        }
    return {
        "last_execution_id": engine.last_exec_id,
        "board_state": engine.board_state(),
        "health": engine.health(),
        "markets": markets,
        "accounts": accounts,
    }


def _rest_mid(mid: float | None) -> float | int:
    if mid is None:
        return 0
    return int(mid) if mid == int(mid) else mid
