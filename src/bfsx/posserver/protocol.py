"""The position-server wire protocol: signed, versioned, size-limited messages (docs/protocol.md).

Every message, UDP datagram or TCP frame alike, is::

    magic "BX" | version u8 | type u8 | boot u64 | seq u64 | time_us u64 | body (JSON) | HMAC-SHA256

big-endian, the MAC over every byte before it, keyed with ``pos_server_secret`` (an empty secret is a
valid empty key, so loopback setups take the same code path). ``boot`` identifies one run of the
sender (its start time in microseconds, so a restarted process has a larger one) and ``seq`` counts
that run's messages from 1: the receiver keeps the newest seq per sender and boot, and refuses
anything not newer or sent before it started (:class:`ReplayGuard`) — the sender persists nothing. Values are absolute
(a position, never a delta), so a lost datagram is healed by the next one.

TCP frames carry the same bytes behind a u32 big-endian length.
"""

from __future__ import annotations

import hmac
import itertools
import math
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Literal

import orjson

from bfsx.bitflyer.budget import BudgetSnapshot
from bfsx.bitflyer.products import PRODUCTS

MAGIC: Final = b"BX"
VERSION: Final = 1
HEADER: Final = struct.Struct("!2sBBQQQ")  # magic, version, type, boot, seq, time_us
MAC_SIZE: Final = 32
#: Largest datagram / inbound frame. Below a common MTU, so a report is never fragmented.
MAX_DATAGRAM: Final = 1400
#: Largest reply frame a client accepts (a status reply lists every bot).
MAX_REPLY: Final = 4 * 1024 * 1024
FRAME_PREFIX: Final = struct.Struct("!I")
#: Messages whose time differs from the receiver's clock by more than this are stale.
DEFAULT_MAX_AGE: Final = 30.0
MAX_ID_LEN: Final = 64
MAX_MARKET_LEN: Final = 32
SERVER_ID: Final = "pos-server"
#: Where a server listens when trade.yaml names no port (``pos_server_bind`` alone).
DEFAULT_PORT: Final = 51000
DEFAULT_HOST: Final = "localhost"
#: A position or base larger than this many minimum order sizes of its product is refused
#: (1e6 BTC, 1e8 XRP, 1e7 ETH): no bitFlyer account holds that much, so such a number is a bug
#: or an attack, and a Decimal this large would overflow the drift check's 8-decimal arithmetic.
MAX_LOTS: Final = 10**9
#: A profit (JPY, or the quote currency) at or beyond this is refused: far beyond any real account.
MAX_PROFIT: Final = 1e15
MAX_PID: Final = 2**32

Reason = Literal["malformed", "bad_signature", "bad_version", "oversized", "replay", "stale"]
REASONS: Final[tuple[Reason, ...]] = ("malformed", "bad_signature", "bad_version", "oversized", "replay", "stale")


class MsgType(IntEnum):
    """Message type byte."""

    REPORT = 1
    BUDGET_QUERY = 2
    BUDGET_REPLY = 3
    STATUS_QUERY = 4
    STATUS_REPLY = 5
    LEASE_QUERY = 6
    LEASE_GRANT = 7
    CONTROL_QUERY = 8
    CONTROL_REPLY = 9
    CTL_COMMAND = 10
    CTL_REPLY = 11


class ProtocolError(Exception):
    """A message that must be ignored; ``reason`` is one of :data:`REASONS` (the server counts them)."""

    def __init__(self, reason: Reason, detail: str = "", sender: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason
        self.detail = detail
        #: The id a correctly signed body claims (None when unknown or unsigned): the server logs
        #: a bad message once per sender, not once per datagram.
        self.sender = sender


#: Computed once: the decoder and the registry look a bound up on every report.
_MAX_POSITION: Final[dict[str, float]] = {code: float(spec.min_size) * MAX_LOTS for code, spec in PRODUCTS.items()}


def max_position(market: str) -> float:
    """The largest absolute position or base accepted for ``market`` (:data:`MAX_LOTS` minimum
    sizes); ``KeyError`` for an unknown market."""
    return _MAX_POSITION[market]


def is_known_market(market: str) -> bool:
    """An exact product code (``FX_BTC_JPY``; not ``fx_btc_jpy``, not ``"FX_BTC_JPY "``)."""
    return market in PRODUCTS


@dataclass(frozen=True, slots=True)
class Header:
    """The signed envelope of a received message."""

    type: MsgType
    boot: int
    seq: int
    time: float  # sender's unix seconds


@dataclass(frozen=True, slots=True)
class Report:
    """A bot's absolute state: sent on every position change and as a heartbeat (UDP)."""

    bot: str
    market: str
    position: float
    base_position: float
    profit: float
    realized: float
    pid: int
    budget: BudgetSnapshot | None = None
    header: Header | None = field(default=None, compare=False)
    #: The sender's last report of this run (it is stopping): a newer boot with the same id may
    #: take over at once instead of waiting for this one to go silent.
    final: bool = False


@dataclass(frozen=True, slots=True)
class BudgetQuery:
    """A bot asks the account-wide API budget (TCP)."""

    bot: str
    market: str = ""
    header: Header | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class BudgetReply:
    """The account-wide API budget: the combined snapshot plus its headline figures."""

    re: int  # the query's sequence number
    remaining: int  # private requests left account-wide
    advice: Literal["trade", "slow", "pause"]
    bots: int  # how many bots' readings were combined
    budget: BudgetSnapshot | None = None
    header: Header | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """A tool or test asks for the server's state (TCP)."""

    client: str
    header: Header | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class StatusReply:
    """The server's state: bots, market totals, counters (plain JSON values, see docs/protocol.md)."""

    re: int
    status: dict[str, Any]
    header: Header | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class LeaseQuery:
    """A bot asks for its API lease (TCP); also carries its readings and its settle echo.

    ``v``: the lease body version (:data:`bfsx.posserver.lease.LEASE_VERSION`). ``want``: calls per
    kind it expects to need in the next lease term. ``used``: calls it made under its previous
    lease. ``sent``: per-kind counters since the bot's start (monotonic; the server dates small
    orders from them). ``settled``: the newest settle epoch it has completed (0: none).
    ``healed``: fills that settle found whose events had been lost (None: not said, an older bot;
    left out of the body then).
    """

    bot: str
    market: str
    v: int
    want: dict[str, int]
    used: dict[str, int]
    sent: dict[str, int]
    budget: BudgetSnapshot | None
    ip: dict[str, Any] | None
    settled: int = 0
    healed: int | None = None
    header: Header | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """The server's answer: ``calls`` per kind until ``until`` (server unix seconds).

    ``free``: the pool no lease holds, per kind (a bot's fallback share is cut from it). ``bots``:
    live bots sharing the pools. ``health``: the server's reading of the bot's market (or None).
    ``settle``: the settle epoch the bot must reach (settle, then echo it in ``settled``).
    """

    re: int
    v: int
    until: float
    calls: dict[str, int]
    free: dict[str, int]
    bots: int
    health: dict[str, Any] | None = None
    settle: int = 0
    header: Header | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ControlQuery:
    """A bot asks the mode the server holds for its market (TCP, on its lease connection)."""

    bot: str
    market: str
    header: Header | None = field(default=None, compare=False)


#: The bot modes of CONTROL_REPLY (docs/protocol.md).
CONTROL_MODES: Final = ("run", "pause", "close-only", "flatten")
#: Commands of CTL_COMMAND (``bfsx ctl``).
CTL_COMMANDS: Final = ("status", "pause", "close-only", "resume", "flatten", "freeze", "unfreeze", "adopt")
MAX_REASONS: Final = 16
MAX_REASON_LEN: Final = 64
MAX_TEXT_LEN: Final = 1000


@dataclass(frozen=True, slots=True)
class ControlReply:
    """The bot's mode (one of :data:`CONTROL_MODES`), why, and the control generation."""

    re: int
    mode: str
    reasons: tuple[str, ...]
    generation: int
    header: Header | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CtlCommand:
    """An operator's command (``bfsx ctl``): one of :data:`CTL_COMMANDS`, for ``market`` ("" = all)."""

    client: str
    command: str
    market: str = ""
    header: Header | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CtlReply:
    """The command's outcome: ``ok`` (False: refused, ``text`` says why), one line of text, and
    the control state after it (plain JSON values)."""

    re: int
    ok: bool
    text: str
    controls: dict[str, Any]
    header: Header | None = field(default=None, compare=False)


Message = (Report | BudgetQuery | BudgetReply | StatusQuery | StatusReply | LeaseQuery | LeaseGrant
           | ControlQuery | ControlReply | CtlCommand | CtlReply)


# ---------------------------------------------------------------------------------------- encoding

def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _num(x: float) -> float:
    f = float(x)
    if not math.isfinite(f):
        raise ValueError(f"not a finite number: {x!r}")
    return f


def _body(msg: Message) -> tuple[MsgType, dict[str, Any]]:
    if isinstance(msg, LeaseQuery | LeaseGrant):
        return _lease_body(msg)
    if isinstance(msg, ControlQuery | ControlReply | CtlCommand | CtlReply):
        return _control_body(msg)
    if isinstance(msg, Report):
        body: dict[str, Any] = {
            "id": msg.bot, "market": msg.market, "pos": _num(msg.position), "base": _num(msg.base_position),
            "profit": _num(msg.profit), "realized": _num(msg.realized), "pid": int(msg.pid),
            "budget": msg.budget.to_dict() if msg.budget is not None else None,
        }
        if msg.final:  # only when set: every other report keeps the original version 1 body
            body["final"] = True
        return MsgType.REPORT, body
    if isinstance(msg, BudgetQuery):
        return MsgType.BUDGET_QUERY, {"id": msg.bot, "market": msg.market}
    if isinstance(msg, BudgetReply):
        return MsgType.BUDGET_REPLY, {
            "id": SERVER_ID, "re": msg.re, "remaining": msg.remaining, "advice": msg.advice, "bots": msg.bots,
            "budget": msg.budget.to_dict() if msg.budget is not None else None,
        }
    if isinstance(msg, StatusQuery):
        return MsgType.STATUS_QUERY, {"id": msg.client}
    return MsgType.STATUS_REPLY, {"id": SERVER_ID, "re": msg.re, "status": msg.status}


def _counts(d: Mapping[str, int]) -> dict[str, int]:
    return {str(k): int(v) for k, v in d.items()}


def _lease_body(msg: LeaseQuery | LeaseGrant) -> tuple[MsgType, dict[str, Any]]:
    if isinstance(msg, LeaseQuery):
        body: dict[str, Any] = {
            "id": msg.bot, "market": msg.market, "v": int(msg.v), "want": _counts(msg.want),
            "used": _counts(msg.used), "sent": _counts(msg.sent),
            "budget": msg.budget.to_dict() if msg.budget is not None else None, "ip": msg.ip,
            "settled": int(msg.settled),
        }
        if msg.healed is not None:
            body["healed"] = int(msg.healed)
        return MsgType.LEASE_QUERY, body
    return MsgType.LEASE_GRANT, {
        "id": SERVER_ID, "re": msg.re, "v": int(msg.v), "until": _num(msg.until), "calls": _counts(msg.calls),
        "free": _counts(msg.free), "bots": int(msg.bots), "health": msg.health, "settle": int(msg.settle),
    }


def _control_body(msg: ControlQuery | ControlReply | CtlCommand | CtlReply) -> tuple[MsgType, dict[str, Any]]:
    if isinstance(msg, ControlQuery):
        return MsgType.CONTROL_QUERY, {"id": msg.bot, "market": msg.market}
    if isinstance(msg, ControlReply):
        return MsgType.CONTROL_REPLY, {"id": SERVER_ID, "re": msg.re, "mode": msg.mode,
                                       "reasons": list(msg.reasons), "gen": int(msg.generation)}
    if isinstance(msg, CtlCommand):
        return MsgType.CTL_COMMAND, {"id": msg.client, "cmd": msg.command, "market": msg.market}
    return MsgType.CTL_REPLY, {"id": SERVER_ID, "re": msg.re, "ok": bool(msg.ok), "text": msg.text,
                               "controls": msg.controls}


def encode(msg: Message, secret: str | bytes, *, boot: int, seq: int, now: float | None = None) -> bytes:
    """Sign and serialize ``msg``. ``boot``/``seq``: the sender's run id and message counter."""
    mtype, body = _body(msg)
    t = time.time() if now is None else now
    head = HEADER.pack(MAGIC, VERSION, mtype, boot, seq, int(t * 1_000_000))
    payload = head + orjson.dumps(body)
    return payload + hmac.digest(_key(secret), payload, "sha256")


def frame(data: bytes) -> bytes:
    """A TCP frame: u32 big-endian length, then the message."""
    return FRAME_PREFIX.pack(len(data)) + data


_last_boot = 0


def _new_boot() -> int:
    """Start time in µs above 12 random bits: a later start is larger (2^62 µs is far off), two
    processes started in the same µs differ but for 1 in 4096, and two senders of one process always."""
    global _last_boot
    boot = (time.time_ns() // 1000) << 12 | int.from_bytes(os.urandom(2)) & 0xFFF
    _last_boot = boot = max(boot, _last_boot + 1)
    return boot


class Sender:
    """One sender's identity on the wire: a boot id (start time, µs) and a counter from 1.

    A restarted process gets a larger boot id, so it is not mistaken for a replay, and nothing
    has to be stored between runs.
    """

    def __init__(self, secret: str | bytes, *, boot: int | None = None) -> None:
        self._key = _key(secret)
        self.boot = boot if boot is not None else _new_boot()
        self._counter = itertools.count(1)
        self.last_seq = 0

    def encode(self, msg: Message, now: float | None = None) -> bytes:
        self.last_seq = next(self._counter)
        return encode(msg, self._key, boot=self.boot, seq=self.last_seq, now=now)


# ---------------------------------------------------------------------------------------- decoding

def _str(body: Mapping[str, Any], key: str, limit: int, *, empty: bool = False) -> str:
    v = body.get(key)
    if not isinstance(v, str) or len(v) > limit or (not v and not empty) or not v.isprintable():
        raise ProtocolError("malformed", f"bad {key}")
    return v


_NUMBER = (float, int)  # exact types: a JSON true must not pass as 1


def _float(body: Mapping[str, Any], key: str) -> float:
    v: Any = body.get(key)
    if type(v) not in _NUMBER or not math.isfinite(v):
        raise ProtocolError("malformed", f"bad {key}")
    return float(v)


def _bounded(body: Mapping[str, Any], key: str, bound: float) -> float:
    """A finite number strictly within ±``bound``."""
    v = _float(body, key)
    if not abs(v) < bound:
        raise ProtocolError("malformed", f"{key} {v!r} out of bounds (|x| < {bound:g})")
    return v


def _int(body: Mapping[str, Any], key: str, bound: int | None = None) -> int:
    v = body.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (bound is not None and v >= bound):
        raise ProtocolError("malformed", f"bad {key}")
    return v


def _market(body: Mapping[str, Any], key: str, *, empty: bool = False) -> str:
    """An exact known product code: a near miss (case, spaces) would become a second market
    compared against the same real position, so it is refused, never normalized."""
    v = _str(body, key, MAX_MARKET_LEN, empty=empty)
    if v and not is_known_market(v):
        raise ProtocolError("malformed", f"unknown market {v!r}")
    return v


def _claimed_id(body: Mapping[str, Any]) -> str | None:
    v = body.get("id")
    return v if isinstance(v, str) and 0 < len(v) <= MAX_ID_LEN and v.isprintable() else None


def _budget(v: Any) -> BudgetSnapshot | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ProtocolError("malformed", "bad budget")
    try:
        return BudgetSnapshot.from_dict(v)
    except (KeyError, ValueError, TypeError) as e:
        raise ProtocolError("malformed", f"bad budget: {e}") from None


def _message(h: Header, body: dict[str, Any]) -> Message:
    t = h.type
    if t in (MsgType.LEASE_QUERY, MsgType.LEASE_GRANT):
        return _lease_message(h, body)
    if t in (MsgType.CONTROL_QUERY, MsgType.CONTROL_REPLY, MsgType.CTL_COMMAND, MsgType.CTL_REPLY):
        return _control_message(h, body)
    if t == MsgType.REPORT:
        market = _market(body, "market")
        bound = max_position(market)
        final = body.get("final", False)
        if not isinstance(final, bool):
            raise ProtocolError("malformed", "bad final")
        return Report(
            bot=_str(body, "id", MAX_ID_LEN), market=market,
            position=_bounded(body, "pos", bound), base_position=_bounded(body, "base", bound),
            profit=_bounded(body, "profit", MAX_PROFIT), realized=_bounded(body, "realized", MAX_PROFIT),
            pid=_int(body, "pid", MAX_PID), budget=_budget(body.get("budget")), header=h, final=final,
        )
    if t == MsgType.BUDGET_QUERY:
        return BudgetQuery(bot=_str(body, "id", MAX_ID_LEN), market=_market(body, "market", empty=True), header=h)
    if t == MsgType.BUDGET_REPLY:
        advice = body.get("advice")
        if advice not in ("trade", "slow", "pause"):
            raise ProtocolError("malformed", "bad advice")
        return BudgetReply(re=_int(body, "re"), remaining=_int(body, "remaining"), advice=advice,
                           bots=_int(body, "bots"), budget=_budget(body.get("budget")), header=h)
    if t == MsgType.STATUS_QUERY:
        return StatusQuery(client=_str(body, "id", MAX_ID_LEN), header=h)
    status = body.get("status")
    if not isinstance(status, dict):
        raise ProtocolError("malformed", "bad status")
    return StatusReply(re=_int(body, "re"), status=status, header=h)


#: Kinds a lease body may name (unknown ones are ignored, so a later sender may add kinds).
LEASE_KINDS: Final = ("private", "orders", "small_orders", "ip")
_MAX_COUNT: Final = 1 << 40


def _count_map(body: Mapping[str, Any], key: str) -> dict[str, int]:
    v = body.get(key)
    if not isinstance(v, dict):
        raise ProtocolError("malformed", f"bad {key}")
    out: dict[str, int] = {}
    for k in LEASE_KINDS:
        n = v.get(k, 0)
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < _MAX_COUNT:
            raise ProtocolError("malformed", f"bad {key}.{k}")
        out[k] = n
    return out


def _ip_reading(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ProtocolError("malformed", "bad ip")
    return {"remaining": _int(v, "remaining"), "since": _int(v, "since"), "reset": _float(v, "reset"),
            "measured": v.get("measured") is True}


def _health(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ProtocolError("malformed", "bad health")
    age = _float(v, "age")
    if age < 0:
        raise ProtocolError("malformed", "bad health.age")
    return {"health": _str(v, "health", 32), "state": _str(v, "state", 32), "age": age}


def _lease_message(h: Header, body: dict[str, Any]) -> LeaseQuery | LeaseGrant:
    if h.type == MsgType.LEASE_QUERY:
        return LeaseQuery(
            bot=_str(body, "id", MAX_ID_LEN), market=_str(body, "market", MAX_MARKET_LEN), v=_int(body, "v"),
            want=_count_map(body, "want"), used=_count_map(body, "used"), sent=_count_map(body, "sent"),
            budget=_budget(body.get("budget")), ip=_ip_reading(body.get("ip")), settled=_int(body, "settled"),
            healed=_int(body, "healed", _MAX_COUNT) if "healed" in body else None, header=h,
        )
    return LeaseGrant(
        re=_int(body, "re"), v=_int(body, "v"), until=_float(body, "until"), calls=_count_map(body, "calls"),
        free=_count_map(body, "free"), bots=_int(body, "bots"), health=_health(body.get("health")),
        settle=_int(body, "settle"), header=h,
    )


def _control_message(h: Header, body: dict[str, Any]) -> ControlQuery | ControlReply | CtlCommand | CtlReply:
    if h.type == MsgType.CONTROL_QUERY:
        return ControlQuery(bot=_str(body, "id", MAX_ID_LEN), market=_market(body, "market"), header=h)
    if h.type == MsgType.CONTROL_REPLY:
        mode = body.get("mode")
        if mode not in CONTROL_MODES:
            raise ProtocolError("malformed", "bad mode")
        reasons = body.get("reasons")
        if (not isinstance(reasons, list) or len(reasons) > MAX_REASONS
                or not all(isinstance(r, str) and 0 < len(r) <= MAX_REASON_LEN and r.isprintable() for r in reasons)):
            raise ProtocolError("malformed", "bad reasons")
        return ControlReply(re=_int(body, "re"), mode=str(mode), reasons=tuple(reasons), generation=_int(body, "gen"),
                            header=h)
    if h.type == MsgType.CTL_COMMAND:
        cmd = body.get("cmd")
        if cmd not in CTL_COMMANDS:
            raise ProtocolError("malformed", "unknown command")
        return CtlCommand(client=_str(body, "id", MAX_ID_LEN), command=str(cmd),
                          market=_market(body, "market", empty=True), header=h)
    ok, controls = body.get("ok"), body.get("controls")
    if not isinstance(ok, bool) or not isinstance(controls, dict):
        raise ProtocolError("malformed", "bad ctl reply")
    return CtlReply(re=_int(body, "re"), ok=ok, text=_str(body, "text", MAX_TEXT_LEN, empty=True), controls=controls,
                    header=h)


def decode(
    data: bytes,
    secret: str | bytes,
    *,
    now: float | None = None,
    max_age: float = DEFAULT_MAX_AGE,
    max_size: int = MAX_DATAGRAM,
    guard: ReplayGuard | None = None,
) -> Message:
    """Verify and parse one message; raise :class:`ProtocolError` with the reason otherwise.

    Checks, in order: size, header shape (malformed), version, signature, type and body
    (malformed), time freshness (stale), then — when a ``guard`` is given — sequence (replay).
    Nothing is accepted from the body before the signature has been checked.
    """
    n = len(data)
    if n > max_size:
        raise ProtocolError("oversized", f"{n} bytes > {max_size}")
    if n < HEADER.size + MAC_SIZE + 2:  # "{}" is the smallest body
        raise ProtocolError("malformed", "too short")
    magic, version, mtype, boot, seq, time_us = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("malformed", "bad magic")
    if version != VERSION:
        raise ProtocolError("bad_version", f"version {version}")
    payload, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if not hmac.compare_digest(hmac.digest(_key(secret), payload, "sha256"), mac):
        raise ProtocolError("bad_signature")
    try:
        kind = MsgType(mtype)
    except ValueError:
        raise ProtocolError("malformed", f"unknown type {mtype}") from None
    if seq == 0:
        raise ProtocolError("malformed", "sequence 0")
    try:
        body = orjson.loads(payload[HEADER.size:])
    except orjson.JSONDecodeError:
        raise ProtocolError("malformed", "body is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "body is not an object")
    header = Header(kind, boot, seq, time_us / 1_000_000)
    try:
        msg = _message(header, body)
    except ProtocolError as e:
        e.sender = _claimed_id(body)  # signed: the id is the sender's own claim, fit to key a log on
        raise
    t = time.time() if now is None else now
    if abs(t - header.time) > max_age:
        raise ProtocolError("stale", f"time off by {t - header.time:.1f} s")
    if guard is not None:
        guard.check(sender_of(msg), header)
    return msg


def sender_of(msg: Message) -> str:
    """The id the replay guard keys on: the message class plus the sender's id, so a bot's UDP
    reports and TCP queries (one counter, two channels that may reorder) are checked apart."""
    if isinstance(msg, Report):
        return f"r:{msg.bot}"
    if isinstance(msg, BudgetQuery | LeaseQuery | ControlQuery):
        return f"q:{msg.bot}"
    if isinstance(msg, StatusQuery | CtlCommand):
        return f"q:{msg.client}"
    return f"s:{SERVER_ID}"


class ReplayGuard:
    """Remembers the newest sequence number accepted from each run (sender id and boot) of each
    sender; refuses anything not newer, and anything sent before the receiver started.

    Keyed per run, not per id: two runs with one id (a restart, or two live processes, which the
    server's registry refuses) never make each other's messages look like replays, whatever their
    clocks. A replayed message of a run the receiver saw is refused by that run's sequence; one of a
    run it never saw was sent before the receiver started (refused), or belongs to a run the
    registry no longer lets through. Bounded: the least recently seen runs are forgotten beyond
    ``max_senders`` (a forgotten run's old messages are stale by then, as long as fewer than
    ``max_senders`` runs report within the freshness window).
    """

    def __init__(self, max_senders: int = 10_000, *, not_before: float = 0.0) -> None:
        """``not_before``: refuse every message sent before this unix time (the receiver's start)."""
        self.max_senders = max_senders
        # Whole microseconds, as on the wire: a message sent right after the start is never "before" it.
        self.not_before = math.floor(not_before * 1_000_000) / 1_000_000
        self._seen: OrderedDict[tuple[str, int], int] = OrderedDict()

    def check(self, sender: str, h: Header) -> None:
        """Raise ``ProtocolError("replay")`` for an old message, else record it as the newest."""
        # A fresh receiver remembers no sender, so a captured message still inside the freshness
        # window would pass once. Refusing what was sent before the receiver started closes that
        # hole completely, where persisting the newest (boot, seq) would leave open whatever came
        # after the last write; a live sender's next heartbeat carries a later time anyway.
        if h.time < self.not_before:
            raise ProtocolError("replay", f"{sender} sent before this receiver started")
        key = (sender, h.boot)
        last = self._seen.get(key)
        if last is not None:
            if h.seq <= last:
                raise ProtocolError("replay", f"{sender} boot {h.boot} seq {h.seq}")
            self._seen.move_to_end(key)
        self._seen[key] = h.seq
        if len(self._seen) > self.max_senders:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


def read_frame_length(prefix: bytes, limit: int) -> int:
    """Length of a TCP frame from its 4-byte prefix; ``oversized`` beyond ``limit``."""
    (n,) = FRAME_PREFIX.unpack(prefix)
    if n > limit:
        raise ProtocolError("oversized", f"frame of {n} bytes > {limit}")
    return int(n)
