"""Fuzzing the realtime path: ``RealtimeClient.dispatch_frame`` and the child-order events behind it.

Properties: no frame (random bytes, random JSON, JSON-RPC envelopes with wrong types, deep nesting,
huge numbers, NaN-like tokens) raises out of ``dispatch_frame``; a channel's handlers get exactly
the messages of that channel, in order, and an invalid frame calls no handler, counts no frame and
resolves no pending request; ``OrderTracker.apply_event`` never raises, a malformed event changes
nothing, a duplicated execution counts once, and a position moves only by finite amounts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from bfsx.account.journal import Journal
from bfsx.account.orders import Fill, Order, OrderTracker
from bfsx.account.position import Position
from bfsx.bitflyer import channels
from bfsx.bitflyer.realtime import RealtimeClient
from bfsx.bot.resync import Reconciler

P = "FX_BTC_JPY"
CHANNELS = [channels.board_snapshot(P), channels.board(P), channels.executions(P), channels.ticker(P),
            channels.CHILD_ORDER_EVENTS, channels.PARENT_ORDER_EVENTS]

_chars = st.characters(exclude_categories=("Cs",))
finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | finite
                | st.text(_chars, max_size=12) | st.sampled_from(CHANNELS))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(_chars, max_size=8), kids, max_size=4),
    max_leaves=15,
)
# Text that is almost JSON: numbers no double holds, NaN-like tokens, deep nesting, cut documents.
_tokens = st.sampled_from([
    "NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf", "1e400", "-1e400", "1e-400", "18446744073709551616",
    "-9223372036854775809", "9" * 400, "0x10", "01", "1.", ".5", "+1", "true", "null", '"\\ud800"', '"\\u0000"',
    "[" * 2000 + "]" * 2000, "{" * 600, '{"a":' * 1100 + "1" + "}" * 1100, "", " ", "\x00", "\ufeff{}",
])
almost_json = st.builds(lambda t, pre, post: pre + t + post, _tokens, st.sampled_from(["", "[", '{"k":']),
                        st.sampled_from(["", "]", "}", ","]))


def envelopes() -> st.SearchStrategy[Any]:
    """channelMessage envelopes, each part right or of any other JSON type."""
    channel = st.sampled_from(CHANNELS) | json_values
    message = json_values
    params = st.one_of(
        st.fixed_dictionaries({"channel": channel, "message": message}),
        st.fixed_dictionaries({"channel": channel}),
        st.fixed_dictionaries({"message": message}),
        json_values,
    )
    method = st.just("channelMessage") | json_values
    return st.fixed_dictionaries({"jsonrpc": st.just("2.0") | json_values, "method": method, "params": params})


def frames() -> st.SearchStrategy[bytes | str]:
    doc = envelopes() | json_values | st.lists(envelopes() | json_values, max_size=3)
    encoded = doc.map(orjson.dumps)
    return (encoded | encoded.map(bytes.decode) | st.binary(max_size=300) | st.text(_chars, max_size=200)
            | almost_json | almost_json.map(str.encode) | encoded.flatmap(lambda b: st.integers(0, len(b)).map(
                lambda n: b[:n])))


def _expected(frame: bytes | str) -> tuple[str, Any] | None:
    """What dispatch_frame must deliver for ``frame``: (channel, message), or None."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if type(msg) is not dict or msg.get("method") != "channelMessage":
        return None
    params = msg.get("params")
    if type(params) is not dict or "channel" not in params or "message" not in params:
        return None
    if type(params["channel"]) is not str:
        return None
    return params["channel"], params["message"]


class _Recorder:
    def __init__(self, client: RealtimeClient, channels_: list[str]) -> None:
        self.calls: list[tuple[str, Any]] = []
        for ch in channels_:
            client.subscribe(ch, lambda m, ch=ch: self.calls.append((ch, m)))


@example(batch=[b'{"method":"channelMessage","params":{"channel":["x"],"message":1}}'])  # raised TypeError
@given(batch=st.lists(frames() | envelopes().map(orjson.dumps), min_size=1, max_size=8))
def test_dispatch_never_raises_and_delivers_each_message_to_its_channel_only(batch: list[bytes | str]) -> None:
    client = RealtimeClient("ws://127.0.0.1:9/unused", silence_timeout={CHANNELS[1]: 60.0})
    rec = _Recorder(client, CHANNELS[:4] + CHANNELS[5:])  # child_order_events: no handler
    want: list[tuple[str, Any]] = []
    frames_before = 0
    for frame in batch:
        calls_before = len(rec.calls)
        client.dispatch_frame(frame)
        exp = _expected(frame)
        if exp is None:  # an invalid frame changes no subscriber state
            assert len(rec.calls) == calls_before and client.frames == frames_before
            continue
        frames_before += 1
        assert client.frames == frames_before
        if exp[0] in client.channels and exp[0] != channels.CHILD_ORDER_EVENTS:
            want.append(exp)
    assert rec.calls == want
    assert client.handler_errors == 0
    assert client._heard <= {CHANNELS[1]}


def _replies(frame: bytes | str) -> list[dict[str, Any]]:
    """The JSON-RPC replies in ``frame`` (a reply object, or the objects of a batch)."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return []
    if type(msg) is dict:
        return [] if msg.get("method") == "channelMessage" else [msg]
    return [m for m in msg if type(m) is dict] if type(msg) is list else []


_reply_frames = st.builds(lambda rid, rest: orjson.dumps({**rest, "id": rid}),
                          st.integers(0, 6) | json_values, st.dictionaries(st.sampled_from(["result", "error"]),
                                                                           json_values, max_size=2))


@given(batch=st.lists(frames() | _reply_frames | st.lists(_reply_frames, max_size=3).map(
    lambda fs: b"[" + b",".join(fs) + b"]"), max_size=6),
       ids=st.lists(st.integers(1, 5), min_size=1, max_size=5, unique=True))
def test_only_a_reply_with_the_request_id_resolves_a_pending_request(batch: list[bytes | str], ids: list[int]) -> None:
    loop = asyncio.new_event_loop()
    try:
        client = RealtimeClient("ws://127.0.0.1:9/unused")
        pending = {i: loop.create_future() for i in ids}
        client._pending.update(pending)
        want: dict[int, dict[str, Any]] = {}
        for frame in batch:
            client.dispatch_frame(frame)
            for reply in _replies(frame):
                rid = reply.get("id")
                if type(rid) is int and rid in pending and rid not in want:
                    want[rid] = reply
        assert {i: f.result() for i, f in pending.items() if f.done()} == want
        assert set(client._pending) == set(pending) - set(want)
    finally:
        loop.close()


@given(frame=frames(), exc=st.sampled_from([ValueError, KeyError, TypeError, ZeroDivisionError, RuntimeError]))
def test_a_failing_handler_is_counted_not_raised(frame: bytes | str, exc: type[Exception]) -> None:
    client = RealtimeClient("ws://127.0.0.1:9/unused")

    def boom(_: Any) -> None:
        raise exc("handler bug")

    for ch in CHANNELS:
        client.subscribe(ch, boom)
    logging.disable(logging.CRITICAL)
    try:
        client.dispatch_frame(frame)
    finally:
        logging.disable(logging.NOTSET)
    exp = _expected(frame)
    assert client.handler_errors == (1 if exp is not None and exp[0] in CHANNELS else 0)


# ----------------------------------------------------------------------------- child_order_events

ORDERS = {"JRF20260101-000000-000001": ("BUY", 0.3), "JRF20260101-000000-000002": ("SELL", 0.2),
          "JRF20260101-000000-000003": ("BUY", 1.0)}
UNKNOWN = "JRF20260101-000000-999999"
_prices = st.floats(1, 2e7, allow_nan=False) | st.integers(1, 20_000_000)
_sizes = st.integers(1, 500_000_000).map(lambda n: n / 1e8) | st.integers(1, 3)  # multiples of 1e-8, as on the wire


def valid_events() -> st.SearchStrategy[dict[str, Any]]:
    acc = st.sampled_from([*ORDERS, UNKNOWN])
    execution = st.builds(
        lambda a, x, price, size, full, commission: {
            "product_code": P, "child_order_id": "JFX20260101-000000-000001F", "child_order_acceptance_id": a,
            "event_date": "2026-01-01T00:00:00.1234567Z", "event_type": "EXECUTION", "exec_id": x,
            "side": ORDERS.get(a, ("BUY", 0))[0], "price": price, "size": size, "commission": commission,
            "sfd": 0.0, "outstanding_size": 0.0 if full else 0.1},
        acc, st.integers(1, 12), _prices, _sizes, st.booleans(), st.just(0.0) | st.floats(0, 10),
    )
    other = st.builds(
        lambda a, kind: {"product_code": P, "child_order_id": "JFX20260101-000000-000001F",
                         "child_order_acceptance_id": a, "event_date": "2026-01-01T00:00:00Z", "event_type": kind,
                         "child_order_type": "LIMIT"},
        acc, st.sampled_from(["ORDER", "CANCEL", "EXPIRE", "ORDER_FAILED", "CANCEL_FAILED", "SOMETHING_NEW"]),
    )
    return execution | other


# Values that make an event malformed, per field.
_BAD: dict[str, list[Any]] = {
    "exec_id": ["12", 1.5, 2.0, -1, 2**63, 2**64 - 1, None, True, [1], {"id": 1}],
    "price": [-1, 0, 0.0, -0.0, "100", None, True, [1], math.inf, -math.inf, math.nan, 1e400],
    "size": [-0.5, 0, 0.0, "0.1", None, False, True, {}, math.inf, math.nan],
    "side": ["buy", "", None, 1, ["BUY"], "BUYSELL"],
    "commission": ["0.1", math.inf, math.nan, [0], True],
    "sfd": ["1", -math.inf, math.nan, {}],
    "outstanding_size": ["0", math.nan, [0.0], False],
    "child_order_acceptance_id": [5, 1.5, ["JRF"], {"a": 1}, True],
    "child_order_id": [5, [], {"x": 1}, True],
}


@st.composite
def malformed_events(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values.filter(lambda v: type(v) is not dict))
    ev = dict(draw(valid_events()))
    if ev["event_type"] == "EXECUTION":
        key = draw(st.sampled_from(sorted(_BAD)))
        if key != "child_order_acceptance_id" and draw(st.integers(0, 5)) == 0 and key in ("exec_id", "price", "size"):
            ev.pop(key)
            return ev
    else:
        key = draw(st.sampled_from(["child_order_acceptance_id", "child_order_id"]))
    ev[key] = draw(st.sampled_from(_BAD[key]))
    return ev


def _tracker() -> OrderTracker:
    t = OrderTracker(P, clock=lambda: 1000.0)
    for acc, (side, size) in ORDERS.items():
        o = Order.new(P, side, size, 5_000_000.0)
        o.acceptance_id = acc
        t.accepted(o)
    return t


def _state(t: OrderTracker) -> Any:
    orders = sorted(
        (acc, o.state, o.filled_size, o.average_price, o.child_order_id, o.order_type, o.reason)
        for acc, o in [*t._open.items(), *t._done.items()]
    )
    parked = {acc: list(p.events) for acc, p in t._parked.items()}
    return (orders, sorted(t._seen), parked, t._parked_events, t.duplicates, t.foreign_dropped, t.last_exec_id,
            dict(t._missing), list(t._unsettled))


def _model(events: list[Any]) -> tuple[dict[str, Decimal], Decimal]:
    """Filled size per order and signed position from the valid executions, each exec id once."""
    seen: set[int] = set()
    filled = dict.fromkeys(ORDERS, Decimal(0))
    pos = Decimal(0)
    for ev in events:
        if ev["event_type"] != "EXECUTION" or ev["child_order_acceptance_id"] not in ORDERS:
            continue
        if ev["exec_id"] in seen:
            continue
        seen.add(ev["exec_id"])
        size = Decimal(repr(ev["size"]))
        filled[ev["child_order_acceptance_id"]] += size
        pos += size if ev["side"] == "BUY" else -size
    return filled, pos


@given(items=st.lists(st.tuples(st.booleans(), valid_events(), malformed_events()), max_size=25))
def test_apply_event_never_raises_and_malformed_events_change_nothing(items: list[tuple[bool, Any, Any]]) -> None:
    t = _tracker()
    position = Position()
    valid: list[dict[str, Any]] = []
    fills: list[Fill] = []
    for good, ev, bad in items:
        if good:
            valid.append(ev)
            fill, _ = t.apply_event(ev)
            if fill is not None:
                fills.append(fill)
                position.apply_fill(fill)
        else:
            before = _state(t)
            assert t.apply_event(bad) == (None, None)
            assert _state(t) == before, bad
    filled, pos = _model(valid)
    for acc in ORDERS:
        o = t.get(acc)
        assert o is not None and Decimal(repr(o.filled_size)) == filled[acc]
        assert math.isfinite(o.average_price) and o.average_price >= 0
    assert len({f.exec_id for f in fills}) == len(fills)  # a duplicated execution counts once
    for f in fills:
        assert f.side in ("BUY", "SELL") and math.isfinite(f.price) and f.price > 0
        assert math.isfinite(f.size) and f.size > 0 and math.isfinite(f.commission) and math.isfinite(f.sfd)
    assert position.exact_size == pos and math.isfinite(position.size)


@given(events=st.lists(valid_events(), max_size=12))
def test_the_same_frame_twice_counts_once(events: list[dict[str, Any]]) -> None:
    t = _tracker()
    first = [t.apply_event(ev)[0] for ev in events]
    again = [t.apply_event(dict(ev))[0] for ev in events]
    assert not any(again)
    filled, _ = _model(events)
    assert sum((Decimal(repr(f.size)) for f in first if f is not None), Decimal(0)) == sum(filled.values())


async def _through_reconciler(folder: Path, frames_: list[Any]) -> Position:
    journal = Journal(folder / "journal.sqlite")
    position = Position()
    rec = Reconciler(product=P, rest=cast(Any, None), tracker=_tracker(), journal=journal, position=position,
                     on_new_fills=lambda fills: None, log=logging.getLogger("fuzz"))
    try:
        for frame in frames_:
            try:
                rec.on_child_events(frame)
            except TypeError:
                assert not isinstance(frame, list | str)  # only a frame that is no sequence at all
    finally:
        journal.close()
    return position


_mixed = st.lists(st.tuples(st.booleans(), valid_events(), malformed_events()), max_size=6)


@given(frames_=st.lists(_mixed | json_scalars, max_size=5))
def test_a_frame_mixing_good_and_malformed_events_counts_every_good_fill(frames_: list[Any]) -> None:
    """The journal and the position get every valid fill of a frame, whatever else it holds: a
    malformed element must not abort the frame after the tracker counted its earlier fills."""
    wire = [[ev if good else bad for good, ev, bad in f] if isinstance(f, list) else f for f in frames_]
    valid = [ev for f in frames_ if isinstance(f, list) for good, ev, _ in f if good]
    with tempfile.TemporaryDirectory(prefix="bfsx-fuzz-") as d:
        position = asyncio.run(_through_reconciler(Path(d), wire))
    assert position.exact_size == _model(valid)[1]
