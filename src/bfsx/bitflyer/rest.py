"""REST client for bitFlyer Lightning (and ``bfsx sim``); the wire facts it relies on are in docs/bitflyer.md.

One keep-alive ``aiohttp`` session; private requests signed over the exact target and body bytes
sent; error bodies mapped to typed :class:`~bfsx.bitflyer.errors.ApiError` subclasses; every reply's
rate-limit headers fed into an :class:`~bfsx.bitflyer.budget.ApiBudget`.

Retries happen only where a second attempt cannot double an effect: GET reads (after a timeout or
a 5xx) and the -208 overload reply (the exchange says the request was *not* accepted). An order
POST whose reply is lost is never resent; :meth:`RestClient.send_child_order` looks the order up.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeGuard, TypeVar, cast
from urllib.parse import urlencode

import aiohttp
import orjson
from yarl import URL

from bfsx.aio import backoff_delay
from bfsx.bitflyer import auth, endpoints, errors, timestamps
from bfsx.bitflyer.budget import ApiBudget
from bfsx.bitflyer.errors import ApiError, BitflyerError, OverloadError, RateLimitError, TransportError
from bfsx.bitflyer.messages import (
    Balance,
    Board,
    BoardState,
    ChildOrder,
    Collateral,
    CollateralChange,
    Execution,
    PositionRow,
    PrivateExecution,
    Side,
    Ticker,
    TimeInForce,
)
from bfsx.bitflyer.products import get_product

log = logging.getLogger(__name__)

_ERROR_TEXT_MAX = 200  # an HTML error page is cut to this many characters in the message

KnownIds = Collection[str] | Callable[[], Collection[str]]


class OrderNotPlaced(BitflyerError):
    """The order POST got no reply, and the order did not show up in ``getchildorders`` within
    the lookup window: it was most likely never accepted. Nothing was resent; the caller decides
    whether to try again."""

    def __init__(self, message: str, order: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.order = dict(order)


class OrderUnknown(TransportError):
    """The order POST got no reply and the lookup could not tell which order (if any) it became:
    several matching orders, or the lookups failed too. The outcome is unknown; reconcile later."""

    def __init__(self, message: str, order: Mapping[str, Any], candidates: list[str] | None = None) -> None:
        super().__init__(message)
        self.order = dict(order)
        self.candidates = candidates or []


@dataclass(frozen=True, slots=True)
class LostOrderLookup:
    """What :meth:`RestClient.find_lost_order` saw: the matching acceptance ids, and whether the
    rows it read reached back past the start of the window (else a match may lie further back)."""

    candidates: list[str]
    complete: bool


# ---- reply rows: the fields the callers read, checked once here (a malformed reply is "no usable reply")

_INF = float("inf")
_SANE_ID = re.compile(r"[\x21-\x7e]{1,64}")  # an acceptance / order id: printable ASCII, no spaces


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and -_INF < v < _INF


def _size(v: Any) -> bool:
    return _number(v) and v >= 0


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _an_id(v: Any) -> TypeGuard[str]:
    return isinstance(v, str) and _SANE_ID.fullmatch(v) is not None


def _int_id(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and 0 <= v < 2**63


def _side(v: Any) -> bool:
    return v in ("BUY", "SELL")


def _optional_number(v: Any) -> bool:
    return v is None or _number(v)


_CHILD_ORDER_ROW: dict[str, Callable[[Any], bool]] = {
    "id": _int_id, "child_order_acceptance_id": _an_id, "child_order_state": _text, "side": _side,
    "child_order_type": _text, "size": _size, "price": _size, "executed_size": _size, "child_order_date": _text,
}
_PRIVATE_EXECUTION_ROW: dict[str, Callable[[Any], bool]] = {
    "id": _int_id, "child_order_acceptance_id": _an_id, "side": _side, "price": _positive, "size": _positive,
    "exec_date": _text,
}
_POSITION_ROW: dict[str, Callable[[Any], bool]] = {"side": _side, "size": _size}
_BALANCE_ROW: dict[str, Callable[[Any], bool]] = {"currency_code": _text, "amount": _number}
_COLLATERAL: dict[str, Callable[[Any], bool]] = {
    "collateral": _number, "open_position_pnl": _number, "require_collateral": _number, "keep_rate": _number,
}
_OPTIONAL: dict[str, Callable[[Any], bool]] = {"commission": _optional_number, "child_order_id": lambda v: v is None
                                               or isinstance(v, str)}


def _checked(row: Any, path: str, fields: Mapping[str, Callable[[Any], bool]]) -> None:
    """Raise :class:`TransportError` unless ``row`` is an object whose ``fields`` pass their checks."""
    if not isinstance(row, dict):
        raise TransportError(f"{path}: a row is {type(row).__name__}, not an object")
    for key, ok in fields.items():
        if key not in row or not ok(row[key]):
            raise TransportError(f"{path}: a row has a missing or malformed {key!r}")
    for key, ok in _OPTIONAL.items():
        if key in row and not ok(row[key]):
            raise TransportError(f"{path}: a row has a malformed {key!r}")


def _placed_before(row: Mapping[str, Any], since: float) -> bool:
    try:
        return timestamps.parse(str(row["child_order_date"])).timestamp() < since
    except (KeyError, TypeError, ValueError):
        return False


Row = TypeVar("Row", bound=Mapping[str, Any])


async def paged(
    fetch: Callable[[int | None], Awaitable[list[Row]]], *, count: int, max_pages: int
) -> AsyncIterator[list[Row]]:
    """Pages of a newest-first list endpoint (getchildorders, getexecutions, getcollateralhistory),
    each read by ``fetch(before)`` and paged back with ``before`` = the smallest ``id`` of the page.
    ACTIVE child-order rows have ``id`` 0, which is no paging key. Stops after a page shorter than
    ``count``, a page without a usable id, or ``max_pages`` pages; a caller may stop earlier."""
    before: int | None = None
    for _ in range(max(1, max_pages)):
        page = await fetch(before)
        yield page
        if len(page) < count:
            return
        ids = [int(r["id"]) for r in page if r.get("id")]
        if not ids:
            return
        before = min(ids)


def _normalize_endpoint(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    if base.endswith("/v1"):  # both "https://host" and "https://host/v1/" are accepted
        base = base[:-3]
    return base


def _error_from(http_status: int, body: bytes, path: str, reason: str) -> ApiError:
    """Typed error from a non-200 reply; tolerates HTML and ASP.NET ``{"Message": ...}`` bodies."""
    data: Any = None
    if body:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
    if isinstance(data, dict):
        status, message = data.get("status"), data.get("error_message")
        if isinstance(status, int) and message is not None:
            return errors.api_error(status, str(message), http_status, path)
        alt = data.get("Message") or data.get("message")
        if alt:
            return errors.api_error(0, str(alt), http_status, path)
    text = " ".join(body[:_ERROR_TEXT_MAX].decode("utf-8", "replace").split()) or reason or "error"
    return errors.api_error(0, text, http_status, path)


class RestClient:
    """bitFlyer REST API. Every call raises an :class:`ApiError` subclass on an error reply and
    :class:`TransportError` when there is no usable reply (the outcome is then unknown).

    ``retries``: attempts at most for a retryable failure (reads, -208); ``backoff``: first delay,
    doubled per attempt up to ``backoff_max``, with jitter. ``lookup_*``: how a timed-out order POST
    is resolved (see :meth:`send_child_order`).
    """

    def __init__(
        self,
        endpoint: str,
        api_key: str | None = None,
        secret: str | None = None,
        *,
        budget: ApiBudget | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        backoff_max: float = 2.0,
        lookup_polls: int = 4,
        lookup_interval: float = 1.0,
        lookup_count: int = 20,
        lookup_timeout: float | None = None,
        lookup_clock_slack: float = 5.0,
    ) -> None:
        self.endpoint = _normalize_endpoint(endpoint)
        self._key = api_key
        self._secret = secret
        self.budget = budget if budget is not None else ApiBudget()
        self.timeout = timeout
        self.retries = max(1, retries)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.lookup_polls = max(1, lookup_polls)
        self.lookup_interval = lookup_interval
        self.lookup_count = lookup_count
        self.lookup_timeout = lookup_timeout if lookup_timeout is not None else timeout * 2
        self.lookup_clock_slack = lookup_clock_slack
        self._session = session
        self._own_session = session is None
        # Acceptance ids this client returned recently: never mistaken for a lost order's.
        self._recent: deque[str] = deque(maxlen=512)
        self._recent_set: set[str] = set()
        # Counters for reports and tests.
        self.requests = 0
        self.retried = 0
        self.lookups = 0
        # Order POSTs started, and those not finished yet (lookups included): a caller resolving an
        # old order by lookup must not take one of these, whose id is not known yet, for it.

    # ---- session ---------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Keep connections alive well past the bot's request interval: a new TLS handshake
            # costs more than the request itself.
            connector = aiohttp.TCPConnector(keepalive_timeout=60.0, limit=32, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector)
            self._own_session = True
        return self._session

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- core ------------------------------------------------------------------------------

    def _delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff, self.backoff_max)

    async def _once(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: bytes | None,
        order_size: float | None,
        timeout: float,
    ) -> Any:
        private = path.startswith(endpoints.PRIVATE_PREFIX)
        query = urlencode([(k, v) for k, v in params.items() if v is not None]) if params else ""
        target = f"{path}?{query}" if query else path
        data = body or b""
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if private:
            if not self._key or not self._secret:
                raise errors.AuthError(-500, errors.KEY_REQUIRED.message, 0, path)
            headers.update(auth.rest_headers(self._key, self._secret, method, target, data))
        seq = self.budget.on_request(path, order_size=order_size)
        self.requests += 1
        try:
            # encoded=True: send the target byte for byte as signed (no re-quoting by yarl).
            async with self._http().request(
                method,
                URL(self.endpoint + target, encoded=True),
                data=data if body is not None else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                self.budget.on_headers(resp.headers, private=private, request_seq=seq)
                status, reason = resp.status, resp.reason or ""
        except (TimeoutError, aiohttp.ClientError) as e:
            raise TransportError(f"{method} {path}: no reply ({type(e).__name__}: {e})") from e
        if status != 200:
            err = _error_from(status, raw, path, reason)
            if isinstance(err, RateLimitError):
                self.budget.on_over_limit()
            raise err
        if not raw:
            return None  # cancel endpoints: 200 with an empty body
        try:
            result = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise TransportError(f"{method} {path}: unparseable reply") from e
        if isinstance(result, dict):
            st = result.get("status")
            # Some errors come as 200 + error body; gethealth's "status" is a string, not this.
            if isinstance(st, int) and st < 0 and "error_message" in result:
                raise errors.api_error(st, str(result["error_message"]), status, path)
        return result

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        *,
        order_size: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One API call with the safe retries: GET on a timeout or 5xx, any method on -208."""
        raw_body = orjson.dumps(body) if body is not None else None
        t = self.timeout if timeout is None else timeout
        for attempt in range(self.retries):
            try:
                return await self._once(method, path, params, raw_body, order_size, t)
            except OverloadError:
                if attempt + 1 >= self.retries:
                    raise
            except TransportError:
                if method != "GET" or attempt + 1 >= self.retries:
                    raise
            except ApiError as e:
                if method != "GET" or e.http_status < 500 or attempt + 1 >= self.retries:
                    raise
            self.retried += 1
            delay = self._delay(attempt)
            log.debug("retrying %s %s in %.2fs", method, path, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    async def _get(self, path: str, params: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        return await self.request("GET", path, params, timeout=timeout)

    @staticmethod
    def _list(data: Any, path: str) -> list[Any]:
        if not isinstance(data, list):
            raise TransportError(f"{path}: expected a list, got {type(data).__name__}")
        return data

    @classmethod
    def _rows(cls, data: Any, path: str, fields: Mapping[str, Callable[[Any], bool]]) -> list[Any]:
        """A list reply whose every row has ``fields`` (else :class:`TransportError`: the callers
        index these rows, and a reply they cannot read is no reply)."""
        rows = cls._list(data, path)
        for row in rows:
            _checked(row, path, fields)
        return rows

    @staticmethod
    def _dict(data: Any, path: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise TransportError(f"{path}: expected an object, got {type(data).__name__}")
        return data

    # ---- public ----------------------------------------------------------------------------

    async def get_markets(self, region: str = "") -> list[dict[str, Any]]:
        """getmarkets; ``region`` "" (JP), "usa" or "eu"."""
        path = f"{endpoints.GET_MARKETS}/{region}" if region else endpoints.GET_MARKETS
        return self._list(await self._get(path), path)

    async def get_board(self, product: str) -> Board:
        """getboard: the whole book (bids descending, asks ascending)."""
        return cast(Board, self._dict(await self._get(endpoints.GET_BOARD, {"product_code": product}), "getboard"))

    async def get_ticker(self, product: str) -> Ticker:
        """getticker (may be ~1 s stale on the real exchange: edge cache)."""
        return cast(Ticker, self._dict(await self._get(endpoints.GET_TICKER, {"product_code": product}), "getticker"))

    async def get_executions(
        self, product: str, count: int = 100, before: int | None = None, after: int | None = None
    ) -> list[Execution]:
        """Public executions, newest first; ``before`` / ``after`` page by id."""
        params = {"product_code": product, "count": count, "before": before, "after": after}
        return cast(list[Execution], self._list(await self._get(endpoints.GET_EXECUTIONS, params), "getexecutions"))

    async def get_board_state(self, product: str) -> BoardState:
        """getboardstate: ``health`` and ``state``."""
        data = await self._get(endpoints.GET_BOARD_STATE, {"product_code": product})
        return cast(BoardState, self._dict(data, "getboardstate"))

    async def get_health(self, product: str) -> dict[str, Any]:
        """gethealth: ``{"status": ...}``."""
        return self._dict(await self._get(endpoints.GET_HEALTH, {"product_code": product}), "gethealth")

    # ---- private ---------------------------------------------------------------------------

    async def get_permissions(self) -> list[str]:
        """The private paths this key may call."""
        return cast(list[str], self._list(await self._get(endpoints.GET_PERMISSIONS), "getpermissions"))

    async def get_balance(self) -> list[Balance]:
        """Spot balances per currency."""
        return cast(list[Balance], self._rows(await self._get(endpoints.GET_BALANCE), "getbalance", _BALANCE_ROW))

    async def get_collateral(self) -> Collateral:
        """FX / CFD collateral and margin figures."""
        data = self._dict(await self._get(endpoints.GET_COLLATERAL), "getcollateral")
        _checked(data, "getcollateral", _COLLATERAL)
        return cast(Collateral, data)

    async def get_collateral_history(
        self, *, count: int = 100, before: int | None = None, after: int | None = None
    ) -> list[CollateralChange]:
        """The changes of the collateral (realised PnL, deposits...), newest first; page with
        ``before`` / ``after`` by ``id`` (see :func:`paged`)."""
        params = {"count": count, "before": before, "after": after}
        data = await self._get(endpoints.GET_COLLATERAL_HISTORY, params)
        return cast(list[CollateralChange], self._list(data, "getcollateralhistory"))

    async def get_positions(self, product: str = "FX_BTC_JPY") -> list[PositionRow]:
        """Open FX lots, one row per lot (not netted; see :meth:`net_position`)."""
        data = await self._get(endpoints.GET_POSITIONS, {"product_code": product})
        return cast(list[PositionRow], self._rows(data, "getpositions", _POSITION_ROW))

    async def send_child_order(
        self,
        product: str,
        side: Side,
        size: float,
        price: float | None = None,
        *,
        time_in_force: TimeInForce = "GTC",
        minute_to_expire: int | None = None,
        known_ids: KnownIds | None = None,
    ) -> str:
        """Send a child order (LIMIT when ``price`` is given, else MARKET); returns its
        ``child_order_acceptance_id``.

        -208 (overload, "not accepted") is retried with back-off. When the POST gets no reply
        (timeout, connection lost) the order may or may not exist, and bitFlyer offers no client
        order id to ask about. It is **never resent**; instead :meth:`find_lost_order` (the newest
        ``lookup_count`` rows of ``getchildorders``) is polled ``lookup_polls`` times,
        ``lookup_interval`` apart, for an order with the same product, side, type, size and price,
        dated no earlier than the send time (minus ``lookup_clock_slack``), and whose acceptance id
        is neither one this client returned before nor in ``known_ids`` (the caller's own set, or a
        callable returning it, so its other in-flight orders are not mistaken for this one). Then:

        * exactly one match: its acceptance id is returned, as if the reply had arrived;
        * several matches: :class:`OrderUnknown` (with ``candidates``) — reconcile via events;
        * none in any successful lookup: :class:`OrderNotPlaced` — the caller may send again;
        * every lookup failed too: :class:`OrderUnknown` (a ``TransportError``).

        A very late acceptance after ``OrderNotPlaced`` remains possible in theory; the order
        tracker still adopts an unknown acceptance id that shows up in ``child_order_events``.
        """
        order: dict[str, Any] = {
            "product_code": product,
            "child_order_type": "LIMIT" if price is not None else "MARKET",
            "side": side,
            "size": size,
        }
        if price is not None:
            order["price"] = price
        if minute_to_expire is not None:
            order["minute_to_expire"] = minute_to_expire
        order["time_in_force"] = time_in_force
        sent_at = time.time()
        try:
            data = await self.request("POST", endpoints.SEND_CHILD_ORDER, body=order, order_size=size)
            reply_id = data.get("child_order_acceptance_id") if isinstance(data, dict) else None
            if not _an_id(reply_id):  # "" or a 10 kB text is no acceptance id
                raise TransportError("sendchildorder: reply without child_order_acceptance_id")
            acceptance_id = reply_id
        except TransportError as e:
            log.warning("sendchildorder got no usable reply (%s); looking the order up", e)
            acceptance_id = await self._resolve_lost_order(order, sent_at, known_ids)
        self._remember(acceptance_id)
        return acceptance_id

    def _remember(self, acceptance_id: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(acceptance_id)
        self._recent_set.add(acceptance_id)

    @staticmethod
    def _matches(row: Mapping[str, Any], order: Mapping[str, Any], since: float, until: float | None) -> bool:
        try:
            if str(row["product_code"]).upper() != str(order["product_code"]).upper():
                return False
            if row["side"] != order["side"] or row["child_order_type"] != order["child_order_type"]:
                return False
            if abs(float(row["size"]) - float(order["size"])) > 1e-9:
                return False
            if "price" in order and abs(float(row["price"]) - float(order["price"])) > 1e-9:
                return False
            placed = timestamps.parse(str(row["child_order_date"])).timestamp()
        except (KeyError, TypeError, ValueError):
            return False
        return placed >= since and (until is None or placed <= until)

    async def find_lost_order(
        self,
        product: str,
        side: Side,
        size: float,
        price: float | None = None,
        *,
        sent_at: float,
        until: float | None = None,
        known_ids: KnownIds | None = None,
        count: int | None = None,
        max_pages: int = 1,
        timeout: float | None = None,
    ) -> LostOrderLookup:
        """Look up which order (if any) an order POST sent at ``sent_at`` became, when its reply
        was lost (or its sender died before reading it).

        Reads ``getchildorders`` for ``product`` (newest first, ``count`` rows a page, default
        ``lookup_count``) for rows with the same side, type (LIMIT when ``price`` is given, else
        MARKET), size and price, dated no earlier than the send time (``child_order_date`` has
        whole seconds, so floored, minus ``lookup_clock_slack``) and, when ``until`` is given, no
        later than ``until`` plus the slack; acceptance ids this client returned before or in
        ``known_ids`` (a collection or a callable returning one) are excluded. It pages back (by
        ``id``, at most ``max_pages`` pages) until a row predates the window. Raises
        :class:`TransportError` / :class:`ApiError` when a request fails: the caller must treat
        that as "unknown", never as "not placed".
        """
        order: dict[str, Any] = {
            "product_code": product,
            "child_order_type": "LIMIT" if price is not None else "MARKET",
            "side": side,
            "size": size,
        }
        if price is not None:
            order["price"] = price
        since = int(sent_at) - self.lookup_clock_slack
        end = None if until is None else until + self.lookup_clock_slack
        n = count or self.lookup_count
        found: list[str] = []
        wait = self.lookup_timeout if timeout is None else timeout

        async def fetch(before: int | None) -> list[ChildOrder]:
            self.lookups += 1
            return await self.get_child_orders(product, count=n, before=before, timeout=wait)

        async for rows in paged(fetch, count=n, max_pages=max_pages):
            known = known_ids() if callable(known_ids) else (known_ids or ())
            found.extend(
                aid
                for row in rows
                if self._matches(row, order, since, end)
                and isinstance(aid := row.get("child_order_acceptance_id"), str)
                and aid not in self._recent_set
                and aid not in known
                and aid not in found
            )
            if len(rows) < n or any(_placed_before(row, since) for row in rows):
                return LostOrderLookup(found, complete=True)
        return LostOrderLookup(found, complete=False)

    async def _resolve_lost_order(self, order: Mapping[str, Any], sent_at: float, known_ids: KnownIds | None) -> str:
        answered = False
        for poll in range(self.lookup_polls):
            if poll:
                await asyncio.sleep(self.lookup_interval)
            try:
                lookup = await self.find_lost_order(
                    str(order["product_code"]), order["side"], float(order["size"]), order.get("price"),
                    sent_at=sent_at, known_ids=known_ids,
                )
            except (TransportError, ApiError) as e:
                log.warning("order lookup %d/%d failed: %s", poll + 1, self.lookup_polls, e)
                continue
            answered = True
            found = lookup.candidates
            if len(found) == 1:
                log.info("lost sendchildorder reply resolved by lookup: %s", found[0])
                return found[0]
            if len(found) > 1:
                raise OrderUnknown(
                    f"sendchildorder got no reply and {len(found)} matching orders exist", order, found
                )
        if not answered:
            raise OrderUnknown("sendchildorder got no reply and the order lookups failed too", order)
        raise OrderNotPlaced(
            f"sendchildorder got no reply and no matching order appeared in {self.lookup_polls} lookups", order
        )

    async def cancel_child_order(
        self, product: str, *, acceptance_id: str | None = None, order_id: str | None = None
    ) -> None:
        """Ask to cancel one order (by acceptance id or order id). HTTP 200 does not prove the
        cancel: wait for the CANCEL / CANCEL_FAILED event."""
        if (acceptance_id is None) == (order_id is None):
            raise ValueError("cancel_child_order needs exactly one of acceptance_id / order_id")
        body: dict[str, Any] = {"product_code": product}
        if acceptance_id is not None:
            body["child_order_acceptance_id"] = acceptance_id
        else:
            body["child_order_id"] = order_id
        await self.request("POST", endpoints.CANCEL_CHILD_ORDER, body=body)

    async def cancel_all_child_orders(self, product: str) -> None:
        """Cancel every open child order on ``product`` (counts in the order bucket)."""
        await self.request("POST", endpoints.CANCEL_ALL_CHILD_ORDERS, body={"product_code": product})

    async def get_child_orders(
        self,
        product: str,
        *,
        count: int = 100,
        before: int | None = None,
        after: int | None = None,
        state: str | None = None,
        acceptance_id: str | None = None,
        order_id: str | None = None,
        timeout: float | None = None,
    ) -> list[ChildOrder]:
        """getchildorders, newest first; ACTIVE rows have ``id`` 0 (do not page them by id)."""
        params = {
            "product_code": product,
            "count": count,
            "before": before,
            "after": after,
            "child_order_state": state,
            "child_order_acceptance_id": acceptance_id,
            "child_order_id": order_id,
        }
        data = await self._get(endpoints.GET_CHILD_ORDERS, params, timeout=timeout)
        return cast(list[ChildOrder], self._rows(data, "getchildorders", _CHILD_ORDER_ROW))

    async def get_my_executions(
        self,
        product: str,
        *,
        count: int = 100,
        before: int | None = None,
        after: int | None = None,
        acceptance_id: str | None = None,
        order_id: str | None = None,
    ) -> list[PrivateExecution]:
        """The account's own fills (/v1/me/getexecutions), newest first; page with ``after``."""
        params = {
            "product_code": product,
            "count": count,
            "before": before,
            "after": after,
            "child_order_acceptance_id": acceptance_id,
            "child_order_id": order_id,
        }
        data = await self._get(endpoints.GET_MY_EXECUTIONS, params)
        return cast(list[PrivateExecution], self._rows(data, "getexecutions", _PRIVATE_EXECUTION_ROW))

    async def get_trading_commission(self, product: str) -> dict[str, Any]:
        """``{"commission_rate": ...}``."""
        data = await self._get(endpoints.GET_TRADING_COMMISSION, {"product_code": product})
        return self._dict(data, "gettradingcommission")

    async def net_position(self, product: str) -> Decimal:
        """The account's position on ``product``: FX → the signed sum of the getpositions lots;
        spot → the base currency's balance ``amount``. Errors propagate (unknown, never 0)."""
        spec = get_product(product)
        is_fx = spec.is_fx if spec is not None else product.upper().startswith("FX_")
        if is_fx:
            total = Decimal(0)
            for row in await self.get_positions(product):
                size = Decimal(repr(row["size"]))
                total += size if row["side"] == "BUY" else -size
            return total
        base = spec.base if spec is not None else product.upper().split("_")[0]
        for bal in await self.get_balance():
            if bal["currency_code"] == base:
                return Decimal(repr(bal["amount"]))
        return Decimal(0)
