"""Protocol round trips and every rejection reason (docs/protocol.md)."""

from __future__ import annotations

import hashlib
import hmac
import struct
import time

import orjson
import pytest

from bfsx.bitflyer.budget import ApiBudget
from bfsx.posserver import protocol as p

SECRET = "s3cret"


def _report(**kw: object) -> p.Report:
    base: dict[str, object] = dict(bot="bot-a", market="FX_BTC_JPY", position=0.03, base_position=0.5,
                                   profit=-123.5, realized=10.0, pid=4242,
                                   budget=ApiBudget().snapshot(now=1_700_000_000.0))
    base.update(kw)
    return p.Report(**base)  # type: ignore[arg-type]


def test_report_round_trip() -> None:
    s = p.Sender(SECRET)
    msg = _report()
    data = s.encode(msg)
    assert len(data) <= p.MAX_DATAGRAM
    out = p.decode(data, SECRET)
    assert out == msg
    assert isinstance(out, p.Report) and out.header is not None
    assert out.header.type is p.MsgType.REPORT
    assert (out.header.boot, out.header.seq) == (s.boot, 1)
    assert out.budget == msg.budget


def test_all_message_types_round_trip() -> None:
    s = p.Sender(b"")  # empty secret is a valid (empty) key
    snap = ApiBudget().snapshot()
    msgs: list[p.Message] = [
        p.BudgetQuery(bot="b", market="BTC_JPY"),
        p.BudgetReply(re=7, remaining=321, advice="slow", bots=3, budget=snap),
        p.StatusQuery(client="tool"),
        p.StatusReply(re=9, status={"bots": [{"id": "x"}], "markets": []}),
        _report(budget=None),
        _report(final=True),  # a clean stop's last report: the flag must survive the wire
        p.BudgetReply(re=8, remaining=0, advice="pause", bots=0, budget=None),
    ]
    for m in msgs:
        assert p.decode(s.encode(m), "", max_size=p.MAX_REPLY) == m


def test_sequence_grows_and_boot_differs_per_sender() -> None:
    a, b = p.Sender(SECRET), p.Sender(SECRET)
    seqs = [p.decode(a.encode(_report()), SECRET).header.seq for _ in range(3)]  # type: ignore[union-attr]
    assert seqs == [1, 2, 3]
    assert a.boot != b.boot


def _reason(data: bytes, **kw: object) -> str:
    with pytest.raises(p.ProtocolError) as ei:
        p.decode(data, SECRET, **kw)  # type: ignore[arg-type]
    return ei.value.reason


def test_rejects_malformed() -> None:
    assert _reason(b"") == "malformed"
    assert _reason(b'{"id":"bot","pos":1.0}' + b" " * 64) == "malformed"  # plain unsigned JSON
    good = p.Sender(SECRET).encode(_report())
    assert _reason(good[:20]) == "malformed"


def test_rejects_unsigned_and_wrong_signature() -> None:
    good = p.Sender(SECRET).encode(_report())
    assert _reason(good[:-32] + b"\0" * 32) == "bad_signature"  # MAC missing (zeroed)
    assert _reason(p.Sender("other").encode(_report())) == "bad_signature"
    tampered = bytearray(good)
    tampered[p.HEADER.size + 5] ^= 1  # one bit of the body
    assert _reason(bytes(tampered)) == "bad_signature"
    tampered = bytearray(good)
    tampered[14] ^= 1  # the sequence number is signed too
    assert _reason(bytes(tampered)) == "bad_signature"


def test_rejects_wrong_version() -> None:
    good = p.Sender(SECRET).encode(_report())
    payload = b"BX" + bytes([2]) + good[3:-32]
    data = payload + hmac.new(SECRET.encode(), payload, hashlib.sha256).digest()
    assert _reason(data) == "bad_version"


def test_rejects_oversized() -> None:
    data = p.Sender(SECRET).encode(_report(bot="x" * 60))
    assert _reason(data + b"\0" * (p.MAX_DATAGRAM - len(data) + 1)) == "oversized"
    assert _reason(data, max_size=len(data) - 1) == "oversized"


def test_rejects_stale_and_future() -> None:
    s = p.Sender(SECRET)
    assert _reason(s.encode(_report(), now=1_000.0)) == "stale"
    import time

    assert _reason(s.encode(_report(), now=time.time() + 120)) == "stale"
    assert p.decode(s.encode(_report(), now=1_000.0), SECRET, now=1_010.0).header is not None  # type: ignore[union-attr]


def test_rejects_bad_fields_after_valid_signature() -> None:
    def signed(body: dict[str, object], mtype: int = 1) -> bytes:
        import time

        payload = p.HEADER.pack(p.MAGIC, p.VERSION, mtype, 1, 1, int(time.time() * 1e6)) + orjson.dumps(body)
        return payload + hmac.new(SECRET.encode(), payload, hashlib.sha256).digest()

    ok = {"id": "b", "market": "FX_BTC_JPY", "pos": 1.0, "base": 0, "profit": 0, "realized": 0, "pid": 1}
    assert isinstance(p.decode(signed(ok), SECRET), p.Report)
    for bad in ({**ok, "pos": "1"}, {**ok, "pos": True}, {**ok, "id": ""}, {**ok, "id": "x" * 65},
                {**ok, "market": None}, {**ok, "budget": {"at": 1}}, {**ok, "pid": -1}):
        assert _reason(signed(bad)) == "malformed", bad
    assert _reason(signed(ok, mtype=99)) == "malformed"
    payload = p.HEADER.pack(p.MAGIC, p.VERSION, 1, 1, 1, 0) + b"[1,2]"
    assert _reason(payload + hmac.new(SECRET.encode(), payload, hashlib.sha256).digest()) == "malformed"


def test_encode_refuses_non_finite() -> None:
    with pytest.raises(ValueError):
        p.Sender(SECRET).encode(_report(position=float("nan")))


def test_replay_guard() -> None:
    guard = p.ReplayGuard()
    s = p.Sender(SECRET)
    first, second = s.encode(_report()), s.encode(_report())
    p.decode(second, SECRET, guard=guard)
    assert _reason(second, guard=guard) == "replay"  # the same datagram again
    assert _reason(first, guard=guard) == "replay"  # an older one, overtaken
    # A restarted bot (new, larger boot id, counter from 1 again) is not a replay...
    restarted = p.Sender(SECRET, boot=s.boot + 10)
    p.decode(restarted.encode(_report()), SECRET, guard=guard)
    # ...but the previous run's messages, replayed, are.
    assert _reason(second, guard=guard) == "replay"
    assert _reason(first, guard=guard) == "replay"
    # A query channel is tracked apart from the report channel of the same bot.
    p.decode(s.encode(p.BudgetQuery(bot="bot-a")), SECRET, guard=guard)


def test_replay_guard_accepts_restart_after_clock_step_back() -> None:
    guard = p.ReplayGuard()
    s = p.Sender(SECRET, boot=2_000_000)
    p.decode(s.encode(_report(), now=1000.0), SECRET, now=1000.0, guard=guard)
    older_boot = p.Sender(SECRET, boot=1_000_000)  # clock stepped back before the restart
    p.decode(older_boot.encode(_report(), now=1001.0), SECRET, now=1001.0, guard=guard)


def test_replay_guard_keeps_two_runs_of_one_id_apart() -> None:
    """Two live runs with one bot id (the registry refuses the second): neither run's messages
    become replays because of the other's, even when the second's clock is ahead."""
    guard = p.ReplayGuard()
    first, second = p.Sender(SECRET, boot=1_000), p.Sender(SECRET, boot=2_000)
    for k in range(3):
        p.decode(second.encode(_report(), now=1005.0 + k), SECRET, now=1002.0 + k, guard=guard)
        p.decode(first.encode(_report(), now=1000.0 + k), SECRET, now=1002.0 + k, guard=guard)
    replayed = first.encode(_report(), now=1003.0)
    p.decode(replayed, SECRET, now=1004.0, guard=guard)
    assert _reason(replayed, guard=guard, now=1004.0) == "replay"


def test_replay_guard_refuses_what_was_sent_before_it_started() -> None:
    guard = p.ReplayGuard(not_before=1000.0)
    s = p.Sender(SECRET)
    assert _reason(s.encode(_report(), now=999.9), guard=guard, now=1001.0) == "replay"
    p.decode(s.encode(_report(), now=1000.0), SECRET, now=1001.0, guard=guard)


def test_replay_guard_is_bounded() -> None:
    guard = p.ReplayGuard(max_senders=5)
    for i in range(50):
        guard.check(f"r:{i}", p.Header(p.MsgType.REPORT, 1, 1, 0.0))
    assert len(guard) == 5


def test_frame_length_limit() -> None:
    assert p.read_frame_length(struct.pack("!I", 10), 100) == 10
    with pytest.raises(p.ProtocolError) as ei:
        p.read_frame_length(struct.pack("!I", 1_000_000), p.MAX_DATAGRAM)
    assert ei.value.reason == "oversized"
    assert p.frame(b"abc") == b"\0\0\0\3abc"


def test_worst_case_report_fits_a_datagram() -> None:
    data = p.Sender(SECRET).encode(_report(bot="b" * p.MAX_ID_LEN, market="M" * p.MAX_MARKET_LEN,
                                           position=-123456.12345678, profit=-1.2345678901234e12))
    assert len(data) <= p.MAX_DATAGRAM


def test_documented_example_header() -> None:
    """The byte example in docs/protocol.md §1."""
    boot = 0x0006000000000001
    data = p.encode(p.BudgetQuery(bot="a"), SECRET, boot=boot, seq=3, now=1_700_000_000.25)
    assert data[:28].hex(" ") == (
        "42 58 01 02 00 06 00 00 00 00 00 01 00 00 00 00 00 00 00 03 00 06 0a 24 18 22 10 90"
    )
    assert data[28:-32] == b'{"id":"a","market":""}'
    assert data[-32:] == hmac.new(SECRET.encode(), data[:-32], hashlib.sha256).digest()


# ---------------------------------------------------------------------------------------------- found by mutation
# Each test below kills mutants that survived the first mutation runs (docs/mutation-survivors.md).
def _signed(body: dict[str, object], mtype: int = 1, *, seq: int = 1, now: float | None = None) -> bytes:
    t = time.time() if now is None else now
    payload = p.HEADER.pack(p.MAGIC, p.VERSION, mtype, 1, seq, int(t * 1e6)) + orjson.dumps(body)
    return payload + hmac.new(SECRET.encode(), payload, hashlib.sha256).digest()


_OK_REPORT = {"id": "b", "market": "FX_BTC_JPY", "pos": 1.0, "base": 0, "profit": 0, "realized": 0, "pid": 1}


def test_every_decoded_message_carries_its_signed_header() -> None:
    """The server answers a query with ``re`` = the query's seq and judges a report by its boot:
    the header must come with every message type, not only with reports."""
    s = p.Sender(SECRET, boot=42)
    assert s.boot == 42  # a given boot id is kept
    msgs: list[p.Message] = [
        _report(), p.BudgetQuery(bot="b"), p.BudgetReply(re=1, remaining=5, advice="trade", bots=1),
        p.StatusQuery(client="tool"), p.StatusReply(re=2, status={}),
    ]
    types = [p.MsgType.REPORT, p.MsgType.BUDGET_QUERY, p.MsgType.BUDGET_REPLY, p.MsgType.STATUS_QUERY,
             p.MsgType.STATUS_REPLY]
    for n, (m, mtype) in enumerate(zip(msgs, types, strict=True), 1):
        out = p.decode(s.encode(m, now=1_000.5), SECRET, now=1_000.0)
        assert out == m
        assert out.header == p.Header(mtype, 42, n, 1_000.5), m


def test_replies_name_the_server_as_documented() -> None:
    """docs/protocol.md: a budget reply and a status reply carry ``"id": "pos-server"``."""
    for m in (p.BudgetReply(re=1, remaining=5, advice="slow", bots=1, budget=None), p.StatusReply(re=2, status={})):
        body = orjson.loads(p.Sender(SECRET).encode(m)[p.HEADER.size:-p.MAC_SIZE])
        assert body["id"] == p.SERVER_ID == "pos-server"
        assert body.get("budget", None) is None


def test_boot_ids_are_the_start_time_in_microseconds_above_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted sender has a larger boot id (its start time in µs, above 12 random bits); senders
    created in the same microsecond still get different ones."""
    before = time.time_ns() // 1000
    boot = p.Sender(SECRET).boot
    after = time.time_ns() // 1000
    assert before <= boot >> 12 <= after + 1
    start = after + 2  # later than every boot made so far
    stamps = iter(range(start, start + 160, 10))
    monkeypatch.setattr(p.time, "time_ns", lambda: next(stamps) * 1000)
    boots = [p.Sender(SECRET).boot for _ in range(16)]
    assert [b >> 12 for b in boots] == list(range(start, start + 160, 10))  # the start time, in µs
    assert len({b & 0xFFF for b in boots}) > 1  # above random low bits, not a fixed pattern
    monkeypatch.setattr(p.time, "time_ns", lambda: (start + 200) * 1000)  # one frozen microsecond
    assert len({p.Sender(SECRET).boot for _ in range(64)}) == 64


def test_bounds_are_exact() -> None:
    """Each limit accepts its documented largest value and refuses one past it: an id of 64
    characters, a position just inside 10^9 minimum sizes, a pid below 2^32, a message or frame
    of exactly the size limit, a message exactly ``max_age`` old."""
    bound = p.max_position("FX_BTC_JPY")
    inside = {**_OK_REPORT, "id": "x" * p.MAX_ID_LEN, "pos": bound * (1 - 1e-12), "pid": p.MAX_PID - 1}
    assert isinstance(p.decode(_signed(inside), SECRET), p.Report)
    for bad in ({**_OK_REPORT, "pos": bound}, {**_OK_REPORT, "base": -bound}, {**_OK_REPORT, "pid": p.MAX_PID},
                {**_OK_REPORT, "pid": True}, {**_OK_REPORT, "pid": "1"}, {**_OK_REPORT, "pid": 1.0},
                {**_OK_REPORT, "market": ""}):
        assert _reason(_signed(bad)) == "malformed", bad
    data = _signed(inside)
    assert isinstance(p.decode(data, SECRET, max_size=len(data)), p.Report)
    assert p.read_frame_length(struct.pack("!I", p.MAX_DATAGRAM), p.MAX_DATAGRAM) == p.MAX_DATAGRAM
    old = _signed(_OK_REPORT, now=1_000.0)
    assert isinstance(p.decode(old, SECRET, now=1_030.0), p.Report)  # exactly DEFAULT_MAX_AGE
    assert _reason(old, now=1_030.001) == "stale"


def test_reports_and_queries_of_one_bot_are_guarded_apart() -> None:
    """One counter serves a bot's UDP reports and TCP queries, and the two channels may reorder:
    a query that overtakes a report must not turn the report into a replay."""
    guard = p.ReplayGuard()
    s = p.Sender(SECRET)
    report, query = s.encode(_report(bot="bot-a")), s.encode(p.BudgetQuery(bot="bot-a"))
    assert isinstance(p.decode(query, SECRET, guard=guard), p.BudgetQuery)
    assert isinstance(p.decode(report, SECRET, guard=guard), p.Report)
    assert _reason(report, guard=guard) == "replay"


def test_a_full_replay_guard_forgets_the_least_recent_run() -> None:
    """Beyond ``max_senders`` the run seen least recently is forgotten, never the one just
    seen (its replay would pass); the default bound is 10,000 runs."""
    guard = p.ReplayGuard(max_senders=2)
    for i in range(3):
        guard.check(f"r:{i}", p.Header(p.MsgType.REPORT, 1, 5, 0.0))
    with pytest.raises(p.ProtocolError):
        guard.check("r:2", p.Header(p.MsgType.REPORT, 1, 5, 0.0))
    guard.check("r:0", p.Header(p.MsgType.REPORT, 1, 5, 0.0))  # forgotten: accepted again
    default = p.ReplayGuard()
    for i in range(10_001):
        default.check(f"r:{i}", p.Header(p.MsgType.REPORT, 1, 1, 0.0))
    assert len(default) == 10_000


def test_a_receiver_started_now_refuses_a_message_sent_a_second_before() -> None:
    start = 1_700_000_000.25
    guard = p.ReplayGuard(not_before=start)
    s = p.Sender(SECRET)
    assert _reason(s.encode(_report(), now=start - 1.0), guard=guard, now=start) == "replay"
    assert isinstance(p.decode(s.encode(_report(), now=start), SECRET, now=start, guard=guard), p.Report)
