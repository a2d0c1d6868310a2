"""Fuzzing REST reply parsing: ``RestClient`` against a local HTTP server on 127.0.0.1 that answers
with hypothesis-generated replies (random JSON, rows of the right keys with wrong values, HTML error
pages, empty and truncated bodies, random status codes and rate-limit headers).

Property: every call returns its typed shape or raises a :class:`BitflyerError` subclass, never a
``KeyError`` / ``TypeError`` / ``ValueError`` / ``JSONDecodeError``; a reply of valid rows comes back
as sent (round trip); ``send_child_order`` never returns an acceptance id that no reply contained.

The server is a raw asyncio TCP server (not aiohttp's), so a reply can also lie about its length.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bfsx.bitflyer.errors import BitflyerError
from bfsx.bitflyer.rest import RestClient

KEY, SECRET = "fuzz-key", "fuzz-secret"
FX, SPOT = "FX_BTC_JPY", "BTC_JPY"


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    short: int = 0  # bytes announced in Content-Length but never sent (a truncated body)


class _Server:
    """One HTTP/1.1 reply per connection, from ``replies[path]`` (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.served: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()

        threading.Thread(target=run, name="rest-fuzz-server", daemon=True).start()
        started.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def set(self, replies: dict[str, list[Reply]]) -> None:
        self.replies = {k: list(v) for k, v in replies.items()}
        self.served = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1].split("?")[0]
            length = next((int(v) for k, _, v in (ln.partition(": ") for ln in lines[1:])
                           if k.lower() == "content-length"), 0)
            await reader.readexactly(length)
            queue = self.replies.get(path) or [Reply(404, b"<html><body>404 Not Found</body></html>")]
            r = queue.pop(0) if len(queue) > 1 else queue[0]
            self.served.append(r.body)
            hdr = "".join(f"{k}: {v}\r\n" for k, v in r.headers.items())
            writer.write(f"HTTP/1.1 {r.status} X\r\nContent-Length: {len(r.body) + r.short}\r\n{hdr}"
                         "Connection: close\r\n\r\n".encode() + r.body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError, ValueError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.loop.call_soon_threadsafe(s.loop.stop)


def _client(url: str) -> RestClient:
    return RestClient(url, KEY, SECRET, timeout=2.0, retries=2, backoff=0.0, backoff_max=0.0,
                      lookup_polls=1, lookup_interval=0.0, lookup_count=20)


def _call(server: _Server, replies: dict[str, list[Reply]], fn: Callable[[RestClient], Any]) -> Any:
    """``fn(client)``'s result, or the BitflyerError it raised; any other exception fails the test."""
    server.set(replies)

    async def go() -> Any:
        async with _client(server.url) as rest:
            try:
                return await fn(rest)
            except BitflyerError as e:
                return e

    return asyncio.run(go())


# ------------------------------------------------------------------------------------- replies

_chars = st.characters(exclude_categories=("Cs",))
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | finite | st.text(_chars, max_size=12)
json_values = st.recursive(scalars, lambda k: st.lists(k, max_size=3) | st.dictionaries(st.text(max_size=6), k,
                                                                                       max_size=3), max_leaves=8)
weird = scalars | st.sampled_from(["", "BUY", "sell", "NaN", "1e400", "-1", "0", " JRF "]) | json_values

ACC = st.sampled_from(["JRF20260101-000000-000001", "JRF20260101-000000-000002", "JRF20260923-033125-086253"])
GOOD_CHILD = st.fixed_dictionaries({
    "id": st.integers(0, 10**9), "child_order_id": st.just("JFX20260101-000000-000001F"), "product_code": st.just(FX),
    "side": st.sampled_from(["BUY", "SELL"]), "child_order_type": st.sampled_from(["LIMIT", "MARKET"]),
    "price": st.integers(0, 10**7) | st.floats(0, 1e7), "average_price": st.floats(0, 1e7),
    "size": st.floats(0.01, 5), "child_order_state": st.sampled_from(["ACTIVE", "COMPLETED", "CANCELED"]),
    "expire_date": st.just("2026-02-01T00:00:00"), "child_order_date": st.just("2026-01-01T00:00:00"),
    "child_order_acceptance_id": ACC, "outstanding_size": st.floats(0, 5), "cancel_size": st.floats(0, 5),
    "executed_size": st.floats(0, 5), "total_commission": st.just(0.0), "time_in_force": st.just("GTC"),
})
GOOD_EXEC = st.fixed_dictionaries({
    "id": st.integers(1, 2**62), "child_order_id": st.just("JFX20260101-000000-000001F"),
    "side": st.sampled_from(["BUY", "SELL"]), "price": st.integers(1, 10**7), "size": st.floats(1e-8, 5),
    "commission": st.just(0.0) | st.floats(0, 1), "exec_date": st.just("2026-01-01T00:00:00.123"),
    "child_order_acceptance_id": ACC,
})
GOOD_POSITION = st.fixed_dictionaries({
    "product_code": st.just(FX), "side": st.sampled_from(["BUY", "SELL"]), "price": st.integers(1, 10**7),
    "size": st.integers(1, 10**8).map(lambda n: n / 1e8), "commission": st.just(0.0), "swap_point_accumulate": st.just(0.0),
    "require_collateral": st.floats(0, 1e7), "open_date": st.just("2026-01-01T00:00:00.000"), "leverage": st.just(2.0),
    "pnl": finite, "sfd": st.just(0.0),
})
GOOD_BALANCE = st.fixed_dictionaries({"currency_code": st.sampled_from(["JPY", "BTC", "ETH"]),
                                      "amount": st.integers(-10**6, 10**8).map(lambda n: n / 1e4),
                                      "available": st.floats(0, 1e8)})
GOOD_COLLATERAL = st.fixed_dictionaries({"collateral": finite, "open_position_pnl": finite,
                                         "require_collateral": finite, "keep_rate": finite,
                                         "margin_call_amount": st.just(0), "margin_call_due_date": st.none()})


def _spoil(good: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def spoiled(draw: st.DrawFn) -> dict[str, Any]:
        row = draw(good)
        for key in draw(st.sets(st.sampled_from(sorted(row)), min_size=1, max_size=2)):
            if draw(st.booleans()):
                row[key] = draw(weird)
            else:
                row.pop(key)
        return row

    return spoiled()


def _rows(good: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[list[Any]]:
    return st.lists(good, max_size=4) | st.lists(good | _spoil(good) | weird, min_size=1, max_size=4)


_HTML = [b"<html><head><title>503 Service Temporarily Unavailable</title></head><body>nginx</body></html>",
         b"<!DOCTYPE html><html><body><h1>Access denied</h1>\n\n</body></html>", b"Bad Gateway", b"\xff\xfe\x00"]


def bodies(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    doc = shaped | json_values
    encoded = doc.map(orjson.dumps)
    errors = st.fixed_dictionaries({"status": st.integers(-1000, 1) | weird, "error_message": weird,
                                    "data": st.none()}).map(orjson.dumps)
    return st.one_of(
        encoded, encoded, errors, st.sampled_from(_HTML), st.just(b""), st.binary(max_size=64),
        st.fixed_dictionaries({"Message": weird}).map(orjson.dumps),
        encoded.flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda n: b[:n])),  # cut JSON
    )


_LIMIT_HEADERS = ["X-RateLimit-Remaining", "X-RateLimit-Period", "X-RateLimit-Reset",
                  "X-OrderRequest-RateLimit-Remaining", "X-OrderRequest-RateLimit-Period",
                  "X-OrderRequest-RateLimit-Reset"]
_header_values = st.integers(-(10**12), 10**12).map(str) | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e),
                                                                   max_size=12)


def replies(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[Reply]:
    status = st.just(200) | st.sampled_from([400, 401, 403, 404, 429, 500, 502, 503, 504]) | st.integers(200, 599)
    return st.builds(Reply, status=status, body=bodies(shaped),
                     headers=st.dictionaries(st.sampled_from(_LIMIT_HEADERS), _header_values, max_size=3),
                     short=st.just(0) | st.just(0) | st.integers(1, 50))


def _valid_reply(r: Reply) -> Any:
    """The decoded body of a complete 200 reply, else None."""
    if r.status != 200 or r.short:
        return None
    try:
        return orjson.loads(r.body)
    except orjson.JSONDecodeError:
        return None


# ------------------------------------------------------------------------------------- checks

def _num(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _is_child_row(r: Any) -> bool:
    return (isinstance(r, dict) and type(r.get("id")) is int and r.get("side") in ("BUY", "SELL")
            and isinstance(r.get("child_order_acceptance_id"), str) and r["child_order_acceptance_id"]
            and isinstance(r.get("child_order_state"), str) and isinstance(r.get("child_order_type"), str)
            and isinstance(r.get("child_order_date"), str)
            and all(_num(r.get(k)) and r[k] >= 0 for k in ("size", "price", "executed_size")))


def _is_exec_row(r: Any) -> bool:
    return (isinstance(r, dict) and type(r.get("id")) is int and r.get("side") in ("BUY", "SELL")
            and isinstance(r.get("child_order_acceptance_id"), str) and r["child_order_acceptance_id"]
            and isinstance(r.get("exec_date"), str)
            and all(_num(r.get(k)) and r[k] > 0 for k in ("price", "size"))
            and (r.get("commission") is None or _num(r["commission"])))


@given(first=replies(_rows(GOOD_CHILD)), second=replies(_rows(GOOD_CHILD)))
def test_get_child_orders(server: _Server, first: Reply, second: Reply) -> None:
    out = _call(server, {"/v1/me/getchildorders": [first, second]}, lambda r: r.get_child_orders(FX, count=10))
    if isinstance(out, BitflyerError):
        return
    assert isinstance(out, list) and all(_is_child_row(r) for r in out)
    assert out in [_valid_reply(first), _valid_reply(second)]  # as sent


@given(first=replies(_rows(GOOD_EXEC)), second=replies(_rows(GOOD_EXEC)))
def test_get_my_executions(server: _Server, first: Reply, second: Reply) -> None:
    out = _call(server, {"/v1/me/getexecutions": [first, second]}, lambda r: r.get_my_executions(FX, count=10))
    if isinstance(out, BitflyerError):
        return
    assert isinstance(out, list) and all(_is_exec_row(r) for r in out)
    assert out in [_valid_reply(first), _valid_reply(second)]


@given(reply=replies(GOOD_COLLATERAL | _spoil(GOOD_COLLATERAL)))
def test_get_collateral(server: _Server, reply: Reply) -> None:
    out = _call(server, {"/v1/me/getcollateral": [reply]}, lambda r: r.get_collateral())
    if isinstance(out, BitflyerError):
        return
    assert isinstance(out, dict) and out == _valid_reply(reply)
    assert all(_num(out[k]) for k in ("collateral", "open_position_pnl", "require_collateral", "keep_rate"))


@given(positions=replies(_rows(GOOD_POSITION)), balances=replies(_rows(GOOD_BALANCE)), fx=st.booleans())
def test_net_position(server: _Server, positions: Reply, balances: Reply, fx: bool) -> None:
    out = _call(server, {"/v1/me/getpositions": [positions], "/v1/me/getbalance": [balances]},
                lambda r: r.net_position(FX if fx else SPOT))
    if isinstance(out, BitflyerError):
        return
    assert isinstance(out, Decimal) and out.is_finite()
    rows = _valid_reply(positions if fx else balances)
    assert isinstance(rows, list)
    if fx:
        assert out == sum((Decimal(repr(r["size"])) * (1 if r["side"] == "BUY" else -1) for r in rows), Decimal(0))
    else:
        assert out == next((Decimal(repr(r["amount"])) for r in rows if r["currency_code"] == "BTC"), Decimal(0))


_send_shapes = st.fixed_dictionaries({"child_order_acceptance_id": ACC | weird}) | st.just({"status": 0})


@given(sent=st.lists(replies(_send_shapes), min_size=1, max_size=2), lookup=replies(_rows(GOOD_CHILD)))
def test_send_child_order_never_invents_an_acceptance_id(server: _Server, sent: list[Reply], lookup: Reply) -> None:
    out = _call(server, {"/v1/me/sendchildorder": sent, "/v1/me/getchildorders": [lookup]},
                lambda r: r.send_child_order(FX, "BUY", 0.01, 5_000_000))
    if isinstance(out, BitflyerError):
        return
    assert isinstance(out, str) and out and out == out.strip() and len(out) <= 64
    said = [orjson.loads(b).get("child_order_acceptance_id") for b in server.served if _is_json_object(b)]
    rows = [x for b in server.served if _is_json_list(b) for x in orjson.loads(b)]
    assert out in said or any(isinstance(r, dict) and r.get("child_order_acceptance_id") == out for r in rows)


def _is_json_object(b: bytes) -> bool:
    try:
        return isinstance(orjson.loads(b), dict)
    except orjson.JSONDecodeError:
        return False


def _is_json_list(b: bytes) -> bool:
    try:
        return isinstance(orjson.loads(b), list)
    except orjson.JSONDecodeError:
        return False
