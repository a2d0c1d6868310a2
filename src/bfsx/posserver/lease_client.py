"""The bot side of budget leases: :class:`LeaseClient` (asks for leases, settles on request) and
:class:`FedHealth` (exchange health from the server's feed, own slow polls only without it).

A :class:`LeaseClient` is a :class:`~bfsx.posserver.client.PosServerClient` whose query loop asks
for a lease (LEASE_QUERY → LEASE_GRANT) instead of the advisory account budget: every half lease
term, and at once when a lease is half used or a request was refused for want of one. Each grant
goes to the bot's :class:`~bfsx.posserver.lease_budget.LeasedBudget` (what the REST client may
send), its health reading to :class:`FedHealth`, and a settle request (a newer epoch) runs the
bot's ``settle`` callback (its resync) before the epoch is echoed in the next query.

A server that does not speak leases (an older version) closes the connection on the unknown
type; the client then keeps to its fallback share and asks the old advisory budget, whose ``bots``
count sizes that share.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bfsx.market.health import HealthPoller
from bfsx.posserver import protocol as p
from bfsx.posserver.client import PosServerClient, PosServerUnavailable
from bfsx.posserver.controls import SELF_TRADE_PAUSE, STEP_ASIDE_WAIT_S, mode_of
from bfsx.posserver.lease import KINDS, LEASE_VERSION, Kind
from bfsx.posserver.lease_budget import LeasedBudget

log = logging.getLogger("bfsx.posserver.client")

#: Never ask more often than this (a zero grant would otherwise be asked again at once).
MIN_QUERY_GAP_S = 0.2
#: Lease queries refused this many times in a row while the old budget query is answered: an
#: older server. It is asked for a lease again this often, in case it was upgraded.
LEGACY_AFTER = 2
LEGACY_REPROBE_S = 30.0
#: A settle that failed (e.g. its resync found no lease) is tried again after this long.
SETTLE_RETRY_S = 2.0
#: Without the server's feed, a bot polls the board state itself this often (slowly).
OWN_HEALTH_INTERVAL_S = 15.0
#: A fed health reading older than this (its age at the server included) is no reading.
FEED_STALE_S = 20.0
#: A server that refuses the control query this many times in a row while it grants leases is
#: older than the controls: it is asked again only this often.
CONTROL_LEGACY_AFTER = 2
CONTROL_REPROBE_S = 30.0


class FedHealth(HealthPoller):
    """A :class:`HealthPoller` fed by the position server's reading (one poll per market for all
    bots on the host). It polls on its own — every ``OWN_HEALTH_INTERVAL_S`` — only while no fresh
    fed reading exists (the server unreachable or not polling this market yet)."""

    def __init__(self, rest: Any, product: str, interval: float = OWN_HEALTH_INTERVAL_S, **kw: Any) -> None:
        # ``interval``: the bot's configured health_interval; its own polls are never more frequent
        # than OWN_HEALTH_INTERVAL_S (the feed is what keeps the reading fresh).
        interval = max(interval, OWN_HEALTH_INTERVAL_S)
        kw.setdefault("stale_after", 3 * interval + 5.0)
        super().__init__(rest, product, interval=interval, **kw)
        self.fed_at = 0.0  # monotonic time the last fed reading was taken at the server (0: never)
        self.feeds = 0

    def feed(self, health: str, state: str, age_s: float) -> None:
        """A reading from the server, taken ``age_s`` seconds ago."""
        at = time.monotonic() - max(0.0, age_s)
        if age_s > FEED_STALE_S or at < self.updated_at:
            return  # older than what we have (our own poll, or an earlier feed)
        self.feeds += 1
        self.fed_at = at
        self.updated_at = at
        self.last_error = None
        self._set(health, state)

    def fed(self) -> bool:
        return self.fed_at > 0 and time.monotonic() - self.fed_at <= FEED_STALE_S / 2

    async def _run(self) -> None:
        last_own = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.interval))
            if not self.fed() and time.monotonic() - last_own >= self.interval:
                last_own = time.monotonic()
                await self.poll_once()

    async def _loop_after_first(self) -> None:
        await self._run()


class Settler(Protocol):
    """What :func:`runtime_settler` needs of a bot's reconciler: its resync, when a resync last
    succeeded (``_last_settled``, monotonic; stamped only after one that read the exchange) and how
    many fills resyncs found (``fills_recovered``: their events had been lost)."""

    _last_settled: float
    fills_recovered: int

    async def resync(self) -> None: ...


#: What a settle callback returns: False when it failed; True, or the number of lost fills it
#: found (0 included), when it succeeded.
SettleResult = bool | int


def runtime_settler(reconciler: Callable[[], Settler]) -> Callable[[], Awaitable[SettleResult]]:
    """A settle callback for :class:`LeaseClient`: the bot's resync; False when it failed, else the
    fills it found. ``reconciler`` returns the bot's reconciler when called (it may be built after
    the client)."""

    async def settle() -> SettleResult:
        rec = reconciler()
        before, found = rec._last_settled, rec.fills_recovered
        await rec.resync()
        if rec._last_settled == before:
            return False
        return rec.fills_recovered - found

    return settle


class LeaseClient(PosServerClient):
    """A bot's link to a position server that leases the API budget (see the module docstring)."""

    def __init__(self, host: str, port: int, secret: str | bytes, bot_id: str, market: str, *,
                 budget: LeasedBudget, health: HealthPoller | None = None,
                 settle: Callable[[], Awaitable[SettleResult]] | None = None,
                 control_interval: float = 0.5, on_control: Callable[[p.ControlReply], None] | None = None,
                 step_aside_hold_s: float = STEP_ASIDE_WAIT_S, **kw: Any) -> None:
        """``control_interval``: seconds between two control queries (the bot's mode: ``bfsx
        ctl``), asked on the lease connection between lease queries; ``on_control``: called with
        every reply. The bot keeps its last mode while the server does not answer, except the
        server's request to step aside for its correction: that ends ``step_aside_hold_s`` after
        the last reply that carried it (the server itself gives up after as long)."""
        super().__init__(host, port, secret, bot_id, market, **kw)
        self.control_interval = control_interval
        self.on_control = on_control
        self.step_aside_hold_s = step_aside_hold_s
        self.control: p.ControlReply | None = None  # the last control reply (or what is left of it)
        self._control_at = 0.0  # monotonic: when the last control reply came
        self.control_errors = 0
        self._control_failures = 0  # in a row
        self._control_next = 0.0  # monotonic: the next control query is due
        self._control_legacy = False
        self.budget = budget
        self.health = health
        self.settle = settle
        self.settled = 0  # newest settle epoch completed
        self.healed: int | None = None  # lost fills that settle found (None: the callback did not say)
        self.settles = 0
        self.grants = 0
        self.lease_errors = 0
        self.legacy = False  # the server does not speak leases
        self._legacy_votes = 0
        self._legacy_since = 0.0
        self.last_grant: p.LeaseGrant | None = None
        self._wake = asyncio.Event()
        self._first_answer = asyncio.Event()  # set after each query attempt (start() waits for one)
        self._settling: asyncio.Task[None] | None = None
        self._settle_failed = 0  # the epoch whose settle failed last (logged once)
        self._settle_next = 0.0  # monotonic: no settle attempt before this
        budget.on_low = self._wake.set

    # ------------------------------------------------------------------ one query
    def _query(self) -> tuple[p.LeaseQuery, float, dict[Kind, int]]:
        b = self.budget
        now_m = b.clock()
        ttl = self.last_grant.until - self.last_grant.header.time \
            if self.last_grant is not None and self.last_grant.header is not None else 5.0
        marks = b.marks()
        used: dict[str, int] = {str(k): n for k, n in b.used_under_lease().items()}
        q = p.LeaseQuery(
            bot=self.bot_id, market=self.market, v=LEASE_VERSION,
            want={k: b.want(k, max(ttl, 1.0), now_m) for k in KINDS}, used=used, sent={str(k): n for k, n in marks.items()},
            budget=b.snapshot(), ip=b.ip_reading().to_dict(), settled=self.settled, healed=self.healed,
        )
        return q, now_m, marks

    async def query_lease(self) -> p.LeaseGrant:
        """Ask for a lease now and apply it; raises :class:`PosServerUnavailable`."""
        q, query_m, marks = self._query()
        reply = await self._conn.request(q)
        if not isinstance(reply, p.LeaseGrant) or reply.header is None:
            raise PosServerUnavailable(f"unexpected reply {type(reply).__name__}")
        self.grants += 1
        self.last_grant = reply
        if self._control_failures >= CONTROL_LEGACY_AFTER and not self._control_legacy:
            # Leases answered, control queries refused: an older server (it drops the unknown type).
            self._control_legacy = True
            log.warning("the position server does not answer control queries (an older version?): keeping "
                        "the last mode, asking again every %.0f s", CONTROL_REPROBE_S)
        if reply.v == LEASE_VERSION:
            self.budget.apply_lease(reply.calls, valid_for_s=reply.until - reply.header.time,
                                    query_m=query_m, marks=marks, free=reply.free, bots=reply.bots)
        if reply.health is not None and self.health is not None and isinstance(self.health, FedHealth):
            self.health.feed(str(reply.health["health"]), str(reply.health["state"]), float(reply.health["age"]))
        if reply.settle > self.settled and self._settling is None and time.monotonic() >= self._settle_next:
            self._settling = asyncio.get_running_loop().create_task(self._settle(reply.settle), name="lease-settle")
        return reply

    async def _settle(self, epoch: int) -> None:
        """Reconcile with the exchange for the server's settle round, then echo it at once."""
        ok = False
        try:
            result = await self.settle() if self.settle is not None else True
            ok = result is not False
            if ok:
                # True says nothing of what it found; a number does (bool is an int: test it first).
                self.healed = None if isinstance(result, bool) else max(0, int(result))
                self.settled = max(self.settled, epoch)
                self.settles += 1
                log.info("settled for the position server (epoch %d)", epoch)
            elif self._settle_failed != epoch:
                log.warning("settle for the position server failed (epoch %d); trying again in %.0f s",
                            epoch, SETTLE_RETRY_S)
        except Exception:
            if self._settle_failed != epoch:
                log.exception("settle for the position server failed (epoch %d)", epoch)
        finally:
            if not ok:
                # Not at every grant: a resync refused for want of a lease would only be refused again.
                self._settle_failed, self._settle_next = epoch, time.monotonic() + SETTLE_RETRY_S
            self._settling = None
            self._wake.set()

    # ------------------------------------------------------------------ the loop
    async def start(self) -> None:
        """As :meth:`PosServerClient.start`, then one lease query before returning (best effort),
        so a bot starts trading under a lease rather than its fallback share."""
        self._first_answer.clear()
        await super().start()
        # The query loop asks at once: wait for that answer (or failure) rather than open a second
        # connection for a query of our own.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_answer.wait(), self.timeout + 1.0)

    async def _query_loop(self) -> None:
        warned = False
        while not self._closing:
            started = time.monotonic()
            try:
                if self.legacy and started - self._legacy_since < LEGACY_REPROBE_S:
                    reply = await self.query_budget()
                    self.budget.bots = max(self.budget.bots or 1, reply.bots)
                else:
                    await self.query_lease()
                    if self.legacy:
                        log.info("the position server leases API budgets now")
                    self.legacy, self._legacy_votes = False, 0
                if warned:
                    log.info("position server lease replies back")
                warned = False
            except PosServerUnavailable as e:
                self.lease_errors += 1
                if self.legacy:
                    self._legacy_since = started  # still old: ask the budget again for a while
                elif await self._old_server():
                    self._legacy_votes += 1
                    if self._legacy_votes >= LEGACY_AFTER:
                        log.warning("the position server does not lease API budgets (an older version): "
                                    "keeping to a fallback share of the account")
                        self.legacy, self._legacy_since = True, started
                elif not warned:
                    log.warning("position server lease query failed (%s): a fallback share of the account "
                                "until it answers", e)
                    warned = True
            if not self.legacy:
                await self._control_if_due()
            self._first_answer.set()
            self._wake.clear()
            lease_due = started + self._term()
            # Between two lease queries, the control queries (short, so a bfsx ctl command is
            # honoured within a second) on the same connection, from this one task: in order.
            while not self._closing:
                now = time.monotonic()
                wait = lease_due - now
                if not self.legacy:
                    wait = min(wait, self._control_next - now)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                if self._wake.is_set() or time.monotonic() >= lease_due:
                    break
                await self._control_if_due()
            await asyncio.sleep(max(0.0, MIN_QUERY_GAP_S - (time.monotonic() - started)))

    async def _control_if_due(self) -> None:
        if time.monotonic() < self._control_next:
            return
        try:
            await self.query_control()
        except PosServerUnavailable as e:
            self.control_errors += 1
            self._control_failures += 1
            if self._control_failures == 1:
                log.warning("position server control query failed (%s): keeping the last mode (%s)", e,
                            self.control.mode if self.control is not None else "run")
            self._end_unheard_step_aside()
        else:
            if self._control_failures:
                log.info("position server control replies back")
            self._control_failures, self._control_legacy = 0, False
        gap = CONTROL_REPROBE_S if self._control_legacy else self.control_interval
        self._control_next = time.monotonic() + max(gap, MIN_QUERY_GAP_S / 4)

    async def query_control(self) -> p.ControlReply:
        """Ask the bot's mode now and hand it to ``on_control``; raises :class:`PosServerUnavailable`."""
        reply = await self._conn.request(p.ControlQuery(bot=self.bot_id, market=self.market))
        if not isinstance(reply, p.ControlReply):
            raise PosServerUnavailable(f"unexpected reply {type(reply).__name__}")
        self.control, self._control_at = reply, time.monotonic()
        if self.on_control is not None:
            self.on_control(reply)
        return reply

    def _end_unheard_step_aside(self) -> None:
        """The server asked this bot to step aside for its correcting order, and has not been heard
        for ``step_aside_hold_s``: by then the server has corrected or given up, so the bot keeps
        the rest of its last mode (an operator's pause stays) and trades again on its own budget,
        as it would have without the self trade. A bot cut off from its server must not stay paused
        for as long as the cut lasts."""
        c, unheard_s = self.control, time.monotonic() - self._control_at
        if c is None or SELF_TRADE_PAUSE not in c.reasons or unheard_s < self.step_aside_hold_s:
            return
        reasons = tuple(r for r in c.reasons if r != SELF_TRADE_PAUSE)
        self.control = dataclasses.replace(c, mode=mode_of(reasons), reasons=reasons)
        log.warning("position server not heard for %.0f s: no longer stepping aside for its correction (mode %s)",
                    unheard_s, self.control.mode)
        if self.on_control is not None:
            self.on_control(self.control)

    def _term(self) -> float:
        """Seconds until the next regular query: half the lease term (a new one before it ends)."""
        g = self.last_grant
        if g is None or g.header is None or self.legacy:
            return self.query_interval
        return max(MIN_QUERY_GAP_S, (g.until - g.header.time) / 2)

    async def _old_server(self) -> bool:
        """True when the server answers the old budget query but not the lease query."""
        try:
            reply = await self.query_budget()
        except PosServerUnavailable:
            return False
        self.budget.bots = max(self.budget.bots or 1, reply.bots)  # sizes the fallback share
        return True

    async def stop(self) -> None:
        task = self._settling
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await super().stop()
