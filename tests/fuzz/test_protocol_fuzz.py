"""Fuzzing the position-server protocol: UDP datagrams and TCP frames (bfsx.posserver.protocol).

Properties: ``decode`` raises nothing but :class:`ProtocolError` whatever the bytes (random,
truncated, extended, one bit flipped, or correctly signed around any body); valid messages
round-trip exactly; a message with any single flipped bit is refused; a refused message leaves
the replay guard as it was; the TCP stream (u32 length prefix) yields the same messages however
it is cut into reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
from typing import Any

import orjson
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from bfsx.bitflyer.budget import ApiBudget
from bfsx.bitflyer.products import PRODUCTS
from bfsx.posserver import protocol as p

SECRET = b"fuzz-secret"
NOW = 1_800_000_000.0
SNAP = ApiBudget().snapshot(now=NOW)

# ---------------------------------------------------------------------------------- strategies

_chars = st.characters(exclude_categories=("Cs",))  # orjson cannot encode lone surrogates
_printable = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"), include_characters=" ")
ids = st.text(_printable, min_size=1, max_size=p.MAX_ID_LEN).filter(str.isprintable)
markets = st.sampled_from(sorted(PRODUCTS))  # only exact product codes are accepted
finite = st.floats(allow_nan=False, allow_infinity=False)
positions = st.floats(-1e6, 1e6, allow_nan=False, exclude_min=True, exclude_max=True)  # within every max_position
profits = st.floats(-1e15, 1e15, allow_nan=False, exclude_min=True, exclude_max=True)
u64 = st.integers(0, 2**64 - 1)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | st.text(_chars, max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(_chars, max_size=8), kids, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(_chars, max_size=10), json_values, max_size=6)

reports = st.builds(
    p.Report, bot=ids, market=markets, position=positions, base_position=positions, profit=profits, realized=profits,
    pid=st.integers(0, p.MAX_PID - 1), budget=st.none() | st.just(SNAP), final=st.booleans(),
)
messages: st.SearchStrategy[p.Message] = st.one_of(
    reports,
    st.builds(p.BudgetQuery, bot=ids, market=st.just("") | markets),
    st.builds(p.BudgetReply, re=u64, remaining=u64, advice=st.sampled_from(["trade", "slow", "pause"]),
              bots=u64, budget=st.none() | st.just(SNAP)),
    st.builds(p.StatusQuery, client=ids),
    st.builds(p.StatusReply, re=u64, status=json_objects),
    st.builds(p.ControlQuery, bot=ids, market=markets),
    st.builds(p.ControlReply, re=u64, mode=st.sampled_from(p.CONTROL_MODES), generation=u64,
              reasons=st.lists(st.text(_printable, min_size=1, max_size=p.MAX_REASON_LEN).filter(str.isprintable),
                               max_size=p.MAX_REASONS).map(tuple)),
    st.builds(p.CtlCommand, client=ids, command=st.sampled_from(p.CTL_COMMANDS), market=st.just("") | markets),
    st.builds(p.CtlReply, re=u64, ok=st.booleans(), controls=json_objects,
              text=st.text(_printable, max_size=200).filter(str.isprintable)),
)


def _enc(msg: p.Message, *, boot: int = 7, seq: int = 1, now: float = NOW) -> bytes:
    return p.encode(msg, SECRET, boot=boot, seq=seq, now=now)


def _dec(data: bytes, **kw: Any) -> p.Message:
    kw.setdefault("now", NOW)
    kw.setdefault("max_size", p.MAX_REPLY)
    return p.decode(data, SECRET, **kw)


def _signed(head: bytes, body: bytes) -> bytes:
    payload = head + body
    return payload + hmac.digest(SECRET, payload, hashlib.sha256)


def _refused(data: bytes, **kw: Any) -> str:
    """The reason ``data`` is refused; fails the test on any other exception or on acceptance."""
    with pytest.raises(p.ProtocolError) as info:
        _dec(data, **kw)
    assert info.value.reason in p.REASONS
    return info.value.reason


def _numbers(v: Any) -> list[float]:
    if isinstance(v, bool):
        return []
    if isinstance(v, int | float):
        return [float(v)]
    if isinstance(v, dict):
        return [x for item in v.values() for x in _numbers(item)]
    if isinstance(v, list | tuple):
        return [x for item in v for x in _numbers(item)]
    return []


# ------------------------------------------------------------------------------------ UDP path

@given(data=st.binary(max_size=2048))
def test_random_bytes_are_refused_with_a_reason(data: bytes) -> None:
    _refused(data)


@given(msg=messages, boot=u64, seq=st.integers(1, 2**64 - 1), now=st.floats(0, 1.8e13))
def test_valid_messages_round_trip_exactly(msg: p.Message, boot: int, seq: int, now: float) -> None:
    data = _enc(msg, boot=boot, seq=seq, now=now)
    out = _dec(data, now=now)
    assert out == msg and type(out) is type(msg)
    assert out.header is not None
    assert (out.header.type, out.header.boot, out.header.seq) == (p.MsgType(data[3]), boot, seq)
    assert out.header.time == int(now * 1_000_000) / 1_000_000
    assert _enc(out, boot=boot, seq=seq, now=now) == data  # and re-encodes to the same bytes


@given(msg=messages, bit=st.integers(0, 2**31))
def test_any_single_flipped_bit_is_refused(msg: p.Message, bit: int) -> None:
    data = bytearray(_enc(msg))
    bit %= len(data) * 8
    data[bit // 8] ^= 1 << (bit % 8)
    reason = _refused(bytes(data))
    # Only the magic and the version byte may be judged before the signature.
    if bit // 8 >= 3:
        assert reason == "bad_signature"


@given(msg=messages, cut=st.integers(1, 2**31), tail=st.binary(min_size=1, max_size=64))
def test_truncated_or_extended_messages_are_refused(msg: p.Message, cut: int, tail: bytes) -> None:
    data = _enc(msg)
    _refused(data[: len(data) - 1 - cut % len(data)])
    _refused(data + tail)
    _refused(tail + data)


@given(msg=messages, secret=st.binary(max_size=40))
def test_another_secret_is_refused(msg: p.Message, secret: bytes) -> None:
    assume(secret != SECRET)
    data = p.encode(msg, secret, boot=1, seq=1, now=NOW)
    assert _refused(data) == "bad_signature"


@given(version=st.integers(0, 255), mtype=st.integers(0, 255), boot=u64, seq=u64,
       time_us=st.integers(0, 2**64 - 1), body=st.binary(max_size=300) | json_values.map(orjson.dumps))
def test_signed_headers_with_any_body_raise_only_protocol_errors(
    version: int, mtype: int, boot: int, seq: int, time_us: int, body: bytes
) -> None:
    """The signature is right, so everything after it is exercised: type, sequence, JSON, shape."""
    data = _signed(p.HEADER.pack(p.MAGIC, version, mtype, boot, seq, time_us), body)
    try:
        msg = _dec(data, now=time_us / 1_000_000)
    except p.ProtocolError as e:
        assert e.reason in p.REASONS
    else:
        assert msg.header is not None and msg.header.seq == seq


# Bodies of each message type with every field drawn from JSON values (right type or not).
_FIELDS = {
    p.MsgType.REPORT: ("id", "market", "pos", "base", "profit", "realized", "pid", "budget", "final"),
    p.MsgType.BUDGET_QUERY: ("id", "market"),
    p.MsgType.BUDGET_REPLY: ("id", "re", "remaining", "advice", "bots", "budget"),
    p.MsgType.STATUS_QUERY: ("id",),
    p.MsgType.STATUS_REPLY: ("id", "re", "status"),
    p.MsgType.CONTROL_QUERY: ("id", "market"),
    p.MsgType.CONTROL_REPLY: ("id", "re", "mode", "reasons", "gen"),
    p.MsgType.CTL_COMMAND: ("id", "cmd", "market"),
    p.MsgType.CTL_REPLY: ("id", "re", "ok", "text", "controls"),
}
_good = {"id": "bot", "market": "FX_BTC_JPY", "pos": 0.5, "base": 0.0, "profit": 1.0, "realized": 2.0, "pid": 1,
         "budget": SNAP.to_dict(), "final": False, "re": 3, "remaining": 400, "advice": "trade", "bots": 2, "status": {},
         "mode": "close-only", "reasons": ["frozen"], "gen": 4, "cmd": "pause", "ok": True, "text": "done",
         "controls": {}}
_weird = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | finite | st.text(_chars, max_size=80)
          | st.sampled_from(["nan", "inf", "-inf", "1e999", "", "\n", "trade"]) | json_values)


@st.composite
def typed_bodies(draw: st.DrawFn) -> tuple[p.MsgType, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(_FIELDS)))
    body = {k: _good[k] for k in _FIELDS[kind]}
    for k in draw(st.sets(st.sampled_from(_FIELDS[kind]), min_size=1)):
        if draw(st.booleans()) and k != "budget":
            body.pop(k)
        else:
            body[k] = draw(_weird)
    if "budget" in body and draw(st.booleans()):  # a budget snapshot with one field spoiled
        snap = SNAP.to_dict()
        snap[draw(st.sampled_from(sorted(snap)))] = draw(_weird)
        body["budget"] = snap
    return kind, body


@given(tb=typed_bodies())
def test_signed_bodies_with_wrong_fields_raise_only_protocol_errors(tb: tuple[p.MsgType, dict[str, Any]]) -> None:
    kind, body = tb
    data = _signed(p.HEADER.pack(p.MAGIC, p.VERSION, kind, 1, 1, int(NOW * 1e6)), orjson.dumps(body))
    try:
        _dec(data)
    except p.ProtocolError as e:
        assert e.reason == "malformed"


# Found by this test: a budget whose time was the string 'nan' decoded to a NaN snapshot.
@example(tb=(p.MsgType.REPORT, {**{k: _good[k] for k in _FIELDS[p.MsgType.REPORT]},
                                "budget": {**SNAP.to_dict(), "at": "nan"}}))
@given(tb=typed_bodies())
def test_decoded_messages_hold_only_finite_numbers(tb: tuple[p.MsgType, dict[str, Any]]) -> None:
    kind, body = tb
    data = _signed(p.HEADER.pack(p.MAGIC, p.VERSION, kind, 1, 1, int(NOW * 1e6)), orjson.dumps(body))
    try:
        msg = _dec(data)
    except p.ProtocolError:
        return
    budget = getattr(msg, "budget", None)
    fields = [getattr(msg, f) for f in ("position", "base_position", "profit", "realized") if hasattr(msg, f)]
    if budget is not None:
        fields += [v for v in budget.to_dict().values() if not isinstance(v, str)]
    assert all(math.isfinite(x) for x in _numbers(fields))


@given(msg=messages, skew=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9))
def test_freshness_is_judged_on_the_signed_time(msg: p.Message, skew: float) -> None:
    data = _enc(msg, now=NOW)
    if abs(skew) > p.DEFAULT_MAX_AGE + 1e-3:
        assert _refused(data, now=NOW + skew) == "stale"
    elif abs(skew) < p.DEFAULT_MAX_AGE - 1e-3:
        assert _dec(data, now=NOW + skew) == msg


@given(msg=reports, garbage=st.lists(st.binary(max_size=200), max_size=5), bit=st.integers(0, 2**31))
def test_refused_input_leaves_the_replay_guard_as_it_was(msg: p.Report, garbage: list[bytes], bit: int) -> None:
    guard = p.ReplayGuard(not_before=NOW - 10)
    first = _enc(msg, boot=5, seq=10)
    _dec(first, guard=guard)
    before = dict(guard._seen)
    flipped = bytearray(_enc(msg, boot=5, seq=11))
    flipped[(bit // 8) % len(flipped)] ^= 1 << (bit % 8)
    early = _enc(msg, boot=6, seq=1, now=NOW - 20)  # fresh, but sent before the receiver started
    for data in [*garbage, bytes(flipped), first, _enc(msg, boot=5, seq=9), early]:
        _refused(data, guard=guard)
        assert dict(guard._seen) == before
    assert _dec(_enc(msg, boot=5, seq=11), guard=guard) == msg  # and the next real one still passes


# ------------------------------------------------------------------------------------ TCP path

async def _read_frames(chunks: list[bytes], limit: int) -> list[p.Message | str]:
    """What the server's TCP loop does: prefix, length check, exact read, decode; a refused frame
    ends the connection (its reason is the last item)."""
    reader = asyncio.StreamReader()
    for c in chunks:
        reader.feed_data(c)
    reader.feed_eof()
    out: list[p.Message | str] = []
    while True:
        try:
            prefix = await reader.readexactly(p.FRAME_PREFIX.size)
        except asyncio.IncompleteReadError:
            return out
        try:
            n = p.read_frame_length(prefix, limit)
            data = await reader.readexactly(n)
            out.append(_dec(data, max_size=limit))
        except p.ProtocolError as e:
            out.append(e.reason)
            return out
        except asyncio.IncompleteReadError:
            out.append("truncated")
            return out


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


@given(msgs=st.lists(messages, min_size=1, max_size=5), cuts=st.lists(st.integers(0, 2**31), max_size=12))
def test_tcp_frames_round_trip_however_the_stream_is_cut(msgs: list[p.Message], cuts: list[int]) -> None:
    stream = b"".join(p.frame(_enc(m, seq=i + 1)) for i, m in enumerate(msgs))
    assert asyncio.run(_read_frames(_cut(stream, cuts), p.MAX_REPLY)) == msgs


@given(prefix=st.binary(min_size=4, max_size=4), limit=st.integers(0, 2**33))
def test_frame_length_is_bounded(prefix: bytes, limit: int) -> None:
    try:
        n = p.read_frame_length(prefix, limit)
    except p.ProtocolError as e:
        assert e.reason == "oversized"
        assert int.from_bytes(prefix, "big") > limit
    else:
        assert 0 <= n <= limit and n == int.from_bytes(prefix, "big")


@given(msg=messages, stream=st.binary(max_size=600), cuts=st.lists(st.integers(0, 2**31), max_size=6),
       bit=st.integers(0, 2**31))
def test_tcp_garbage_and_flipped_frames_raise_only_protocol_errors(
    msg: p.Message, stream: bytes, cuts: list[int], bit: int
) -> None:
    out = asyncio.run(_read_frames(_cut(stream, cuts), p.MAX_DATAGRAM))
    assert all(isinstance(x, str) for x in out)  # nothing unsigned is ever accepted
    good = bytearray(p.frame(_enc(msg)))
    pos = 4 + (bit // 8) % (len(good) - 4)  # a bit of the message, not of its length prefix
    good[pos] ^= 1 << (bit % 8)
    (reason,) = asyncio.run(_read_frames(_cut(bytes(good), cuts), p.MAX_REPLY))
    assert reason in p.REASONS
