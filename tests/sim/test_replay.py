"""``bfsx sim --replay``: a recording made by ``bfsx record`` as the simulator's market
(docs/simulator.md#paper-trading-on-a-live-feed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bfsx.bitflyer import channels, endpoints
from bfsx.market.book import OrderBook
from bfsx.record import DayFiles, Recorder, Store
from bfsx.record.format import Frame
from bfsx.record.reader import read_recordings
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import WireClient, WireSocket, eventually
from bfsx.sim.replay import check_paths
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
TOP = 20  # levels per side compared (the paper simulator's own snapshots carry its snapshot_depth)


def top(book: OrderBook) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    return book.bids(TOP), book.asks(TOP)


def replay_config() -> SimConfig:
    return SimConfig.fast(products=[FX], upstream={"silence_s": 0.0})


async def test_a_recording_replays_its_board_and_executions_to_clients(tmp_path: Path) -> None:
    # record a busy simulator for a moment (two snapshots at least)
    async with SimServer(SimConfig.fast(products=[FX], market={"snapshot_interval": 0.3})) as live:
        rec = Recorder(live.ws_url, [FX], Store(DayFiles(tmp_path / "rec"), flush_s=0.1), silence_s=0.0)
        await rec.start()
        snap = channels.board_snapshot(FX)
        await eventually(lambda: rec.frames_by_product[FX] > 60, what="60 frames recorded")
        await rec.stop()
    recorded = [r for r in read_recordings(tmp_path / "rec" / FX) if isinstance(r, Frame)]
    assert sum(f.channel == snap for f in recorded) >= 2
    # what a client following the live feed had: the book after each board frame, and the prints
    mirror = OrderBook()
    books: list[Any] = []
    prints: list[dict[str, Any]] = []
    for f in recorded:
        if f.channel == snap:
            mirror.apply_snapshot(f.message)
        elif f.channel == channels.board(FX):
            if not mirror.apply_diff(f.message):
                continue
        elif f.channel == channels.executions(FX):
            prints.extend(f.message)
            continue
        else:
            continue
        books.append(top(mirror))
    first_known = next(i for i, f in enumerate(recorded) if f.channel == snap)
    assert prints

    paper = SimServer(replay_config(), replay=[tmp_path / "rec" / FX], speed=4.0)
    feed, paper.feed = paper.feed, None  # the client subscribes before the first recorded frame plays
    assert feed is not None
    async with paper:
        sock = await WireSocket.connect(paper.ws_url)
        try:
            for ch in (channels.board_snapshot(FX), channels.board(FX), channels.executions(FX)):
                await sock.subscribe(ch)
            paper.feed = feed
            await feed.start()
            await eventually(lambda: paper.feed is not None and paper.feed.done.is_set(), what="the replay ends")

            def shown() -> list[Any]:
                """The client's book after each board frame it received so far."""
                seen = OrderBook()
                views: list[Any] = []
                for ch, msg in list(sock.messages):
                    if ch == channels.board_snapshot(FX):
                        seen.apply_snapshot(msg)
                    elif ch == channels.board(FX):
                        if not seen.ready:  # the paper simulator's diffs before its first snapshot: a book from empty
                            seen.apply_snapshot({"mid_price": 0.0, "bids": [], "asks": []})
                        seen.apply_diff(msg)
                    else:
                        continue
                    views.append(top(seen))
                return views

            # The end withdraws every level, after the last frame (the replay is done by now, so that
            # diff is on its way): wait until the client's whole book is empty, not for a diff that
            # only deletes (a mid-run diff may delete only, and end the wait too soon).
            await sock.wait_for(lambda: sum(map(len, sock.channel(channels.executions(FX)))) >= len(prints)
                                and (views := shown()) != [] and views[-1] == ([], []))
            views = shown()
            got = [row for msg in sock.channel(channels.executions(FX)) for row in msg]
        finally:
            await sock.close()
    keys = ("id", "side", "price", "size", "exec_date", "buy_child_order_acceptance_id", "sell_child_order_acceptance_id")
    assert [{k: r[k] for k in keys} for r in got] == [{k: r[k] for k in keys} for r in prints]
    # every book the live client had from the first snapshot on, the replay's client had too, in
    # order. A frame that leaves the top levels as they were (one deep level beyond the snapshot's
    # depth, which the mirror never held, deleted) shows nothing new: consecutive equal books count once.
    want = _distinct(books[books.index(top(_after(recorded, first_known))):])
    it = iter(_distinct(views))
    missing = [i for i, b in enumerate(want) if not any(v == b for v in it)]
    assert not missing, f"{len(missing)} of {len(want)} recorded books never shown (first: {missing[0]})"
    assert views[-1] == ([], [])  # the end of the replay withdraws the book: nothing fills on it


def _distinct(books: list[Any]) -> list[Any]:
    """``books`` without the repeats of the book before (a sequence of changes, not of frames)."""
    return [b for i, b in enumerate(books) if i == 0 or b != books[i - 1]]


def _after(recorded: list[Frame], i: int) -> OrderBook:
    book = OrderBook()
    book.apply_snapshot(recorded[i].message)
    return book


def _line(t_ns: int, channel: str, msg: Any) -> bytes:
    return orjson.dumps({"t": t_ns, "ch": channel, "msg": msg}) + b"\n"


def write_recording(folder: Path, frames: list[tuple[float, str, Any]]) -> Path:
    """A recording written by the recorder's own file writer: ``(seconds from start, channel, message)``."""
    files = DayFiles(folder)
    t0 = 1_780_000_000 * 10**9
    files.write(FX, t0, b"")
    for dt, channel, msg in frames:
        files.write(FX, t0 + int(dt * 1e9), _line(t0 + int(dt * 1e9), channel, msg))
    files.close(t0 + int((frames[-1][0] + 0.1) * 1e9))
    return folder / FX


async def test_a_replayed_print_through_a_resting_order_fills_it(tmp_path: Path) -> None:
    snapshot = {"mid_price": 10_000_000.0, "bids": [{"price": 9_999_900.0, "size": 0.5}],
                "asks": [{"price": 10_000_100.0, "size": 0.5}]}
    through = [{"id": 100 + i, "side": "SELL", "price": 9_999_800.0, "size": 0.004,
                "exec_date": "2026-05-28T20:26:41.1234567Z", "buy_child_order_acceptance_id": "JRF1",
                "sell_child_order_acceptance_id": "JRF2"} for i in range(5)]
    frames: list[tuple[float, str, Any]] = [(0.0, channels.board_snapshot(FX), snapshot)]
    frames += [(1.5 + 0.2 * i, channels.executions(FX), [row]) for i, row in enumerate(through)]
    folder = write_recording(tmp_path / "rec", frames)
    assert check_paths([str(tmp_path / "rec")]) == [folder]  # `bfsx record --out rec` made rec/<PRODUCT>/
    async with SimServer(replay_config(), replay=[folder], speed=1.0) as paper, \
            WireClient(paper.url, "demo-key-1", "demo-secret-1") as me:
        up = paper.upstream_market
        assert up is not None
        await eventually(lambda: up.known(FX), what="the snapshot replayed")
        acc = await me.order(FX, "BUY", 0.01, 9_999_900)
        assert paper.feed is not None
        await eventually(lambda: paper.feed is not None and paper.feed.done.is_set(), what="the replay ends")
        rows = (await me.get(endpoints.GET_CHILD_ORDERS, product_code=FX, child_order_acceptance_id=acc)).data
        # three prints of 0.004 through the bid: 0.004 + 0.004 + 0.002 (a print's size is never counted twice)
        assert rows[0]["executed_size"] == 0.01 and rows[0]["child_order_state"] == "COMPLETED"
        fills = (await me.get(endpoints.GET_MY_EXECUTIONS, product_code=FX)).data
        assert sorted(f["size"] for f in fills) == [0.002, 0.004, 0.004]
        assert {f["price"] for f in fills} == {9_999_900}
        # the end of the recording: the book is unknown, orders are refused with the reason
        r = await me.post(endpoints.SEND_CHILD_ORDER, {"product_code": FX, "child_order_type": "LIMIT",
                                                        "side": "BUY", "size": 0.01, "price": 9_999_900})
        assert r.status == 400 and "replay has ended" in r.data["error_message"]
        # the recorded prints went out with their own ids and times
        tape = (await me.get(endpoints.GET_EXECUTIONS, product_code=FX, count=100)).data
        assert [t["id"] for t in tape if t["id"] in range(100, 105)] == []  # below the simulator's own ids
        assert len(tape) == len(through) + len(fills)
        assert {t["exec_date"] for t in tape if t["price"] == 9_999_800} == {"2026-05-28T20:26:41.123"}
