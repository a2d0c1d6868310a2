"""The position server's lease desk: sizes every bot's API lease from the whole account's readings,
hands out the server's health reading of each market, and runs settle-before-correct rounds.

Only the server's event loop touches it. The arithmetic lives in :mod:`bfsx.posserver.lease`; this
module turns what the server knows (the bots' latest readings, its own usage and polling schedule)
into one :class:`~bfsx.posserver.lease.PoolView` per bucket, and keeps the per-bot state a grant
needs. See docs/ARCHITECTURE.md ("Budget leases") for the reasoning.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from bfsx.bitflyer import limits
from bfsx.bitflyer.budget import ApiBudget, BudgetSnapshot
from bfsx.net import is_loopback
from bfsx.posserver import protocol as p
from bfsx.posserver.lease import (
    CORRECTION_RESERVE,
    DEFAULT_TTL_S,
    KINDS,
    LEASE_VERSION,
    Kind,
    LeasePool,
    PoolView,
)
from bfsx.posserver.lease_budget import HostBudget

log = logging.getLogger("bfsx.posserver")

LOCAL_HOST = "local"
#: A bot that has not asked for a lease for this many lease terms no longer shares the pools.
LIVE_TERMS = 3.0
#: The server polls each leased market's health this often (one feed for every bot on the host).
HEALTH_FEED_INTERVAL_S = 5.0
#: Private calls a bot asked to settle is granted ahead of the shares (a resync reads a page of
#: orders and the executions since its cursor; one more for a missing fill).
SETTLE_CALLS = 4
#: A settle round nobody completes within this long no longer holds a correction back (a bot
#: heals a lost fill on its own within SELF_HEAL_SECONDS anyway).
SETTLE_TIMEOUT_S = 60.0
#: Rounds opened again for one drift, at most, while each one's settles keep finding lost fills.
MAX_SETTLE_AGAIN = 5


@dataclass(frozen=True, slots=True)
class LeaseLimits:
    """The exchange's limits the desk leases (bitflyer.limits; smaller in simulator tests)."""

    private: int = limits.PRIVATE_LIMIT
    orders: int = limits.ORDER_LIMIT
    window_s: float = float(limits.WINDOW_SECONDS)
    small_orders: int = limits.SMALL_ORDER_LIMIT
    small_penalty: int = limits.SMALL_ORDER_PENALTY_LIMIT
    small_window_s: float = 60.0
    ip: int = limits.IP_LIMIT


@dataclass(slots=True)
class _Asker:
    """What the desk keeps of one bot's latest lease query."""

    market: str
    host: str
    boot: int
    budget: BudgetSnapshot | None
    ip: dict[str, object] | None
    seen_m: float
    settled: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    # Small orders dated by the server: (monotonic time of the query that revealed them, count).
    # A call is dated at the query after it, never earlier than it was made: the count errs high.
    small: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=4096))


@dataclass(slots=True)
class SettleRound:
    """One request to the bots of a market to reconcile with the exchange before a correction."""

    epoch: int
    diff: Decimal
    opened_m: float
    waiting: set[str]
    settled_m: float | None = None
    #: Σ bots + base when the round opened (None: not given).
    expected: Decimal | None = None
    #: How many rounds in a row were opened again for this drift, of the same size after the bots'
    #: positions moved (see ``gate``): 0 for its first round.
    again: int = 0
    #: Fills the bots' settles found for this round (lost events healed); None: a bot did not say.
    healed: int | None = 0


def epoch_base(now_s: float | None = None) -> int:
    """The first settle epoch of a server starting now: its wall time in milliseconds. Above every
    epoch an earlier incarnation asked for (it would have needed more than a round per millisecond
    of its life), so the bots' echoes of those can never pass for a settle of the new rounds. Only
    a wall clock set back by more than the restart took breaks that: the bots' settles are then
    not seen, and each round times out (``SETTLE_TIMEOUT_S``) as before this base existed."""
    return int((time.time() if now_s is None else now_s) * 1000)


def host_of(peer: object) -> str:
    """The host a TCP peer is on; every loopback address is the server's own host."""
    addr = peer[0] if isinstance(peer, tuple) and peer else str(peer or "")
    addr = str(addr)
    return LOCAL_HOST if not addr or is_loopback(addr) else addr


class LeaseDesk:
    """Leases, health feed and settle rounds (see the module docstring)."""

    def __init__(self, *, ttl_s: float = DEFAULT_TTL_S, lease_limits: LeaseLimits | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 first_epoch: int = 1) -> None:
        """``first_epoch``: the epoch of the first settle round. A bot echoes the newest epoch it
        completed and settles only for a newer one, so a restarted server must not count from 1
        again: the position server starts from its start time in milliseconds (:func:`epoch_base`)."""
        self.first_epoch = first_epoch
        self.ttl_s = ttl_s
        self.limits = lease_limits or LeaseLimits()
        self.clock, self.wall = clock, wall
        self.pools: dict[str, LeasePool] = {}
        self.askers: dict[str, _Asker] = {}
        self.health: dict[str, tuple[str, str, float]] = {}  # market -> (health, state, monotonic at)
        self.rounds: dict[str, SettleRound] = {}
        self.epochs: dict[str, int] = {}  # market -> newest settle epoch requested
        self.grants = 0
        # What the server itself spends per lease horizon: set by the server before each grant.
        self.check_interval_s = 30.0
        self.checked_markets = 0
        self.has_credentials = True
        #: The margin watch's poll interval (two private calls per poll), None when it does not poll.
        self.margin_interval_s: Callable[[], float] | None = None
        self._warned_polls = False

    # ------------------------------------------------------------------ who shares
    def live(self, now_m: float | None = None) -> list[str]:
        t = self.clock() if now_m is None else now_m
        return [b for b, a in self.askers.items() if t - a.seen_m < LIVE_TERMS * self.ttl_s]

    def live_on(self, market: str, now_m: float | None = None) -> list[str]:
        return [b for b in self.live(now_m) if self.askers[b].market == market]

    def _pool(self, key: str, kind: Kind) -> LeasePool:
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = LeasePool(kind, ttl_s=self.ttl_s)
        return pool

    @staticmethod
    def pool_key(kind: Kind, host: str) -> str:
        return f"ip:{host}" if kind == "ip" else kind

    # ------------------------------------------------------------------ views
    def _server_polls(self, horizon_s: float, every_s: float) -> int:
        """How many polls of one market every ``every_s`` the server makes within ``horizon_s``."""
        return self.checked_markets * (math.ceil(horizon_s / max(every_s, 0.05)) + 1)

    def views(self, host: str, registry_budgets: Mapping[str, BudgetSnapshot], own: HostBudget | ApiBudget,
              now_m: float | None = None, now: float | None = None) -> dict[Kind, PoolView]:
        """Every bucket of the account (and of ``host``'s IP) as a :class:`PoolView` now."""
        tm = self.clock() if now_m is None else now_m
        t = self.wall() if now is None else now
        lim = self.limits
        live = self.live(tm)
        # Newest reading per bot: its last lease query or its last UDP report. A report newer than
        # the query counts calls the lease already holds: twice, never less.
        newest: dict[str, BudgetSnapshot] = dict(registry_budgets)
        for b in live:
            s = self.askers[b].budget
            if s is not None and (b not in newest or s.at > newest[b].at):
                newest[b] = s
        snaps = list(newest.values())
        own_snap = own.snapshot(t)
        if own_snap.private_since or own_snap.private_reset:
            snaps.append(own_snap)
        combined = ApiBudget.combine(snaps, t, private_limit=lim.private, order_limit=lim.orders,
                                     small_order_limit=lim.small_orders, small_order_penalty_limit=lim.small_penalty,
                                     small_order_window=lim.small_window_s)

        def horizon(reset: float) -> float:
            return reset - t if reset > t else lim.window_s

        views: dict[Kind, PoolView] = {}
        h = horizon(combined.private_reset)
        polls = self._server_polls(h, self.check_interval_s) if self.has_credentials else 0
        if self.has_credentials and self.margin_interval_s is not None:
            # getcollateral + getcollateralhistory, once per account per poll (margin.py).
            polls += 2 * (math.ceil(h / max(self.margin_interval_s(), 0.05)) + 1)
        views["private"] = PoolView(combined.private_remaining, h, CORRECTION_RESERVE["private"] + polls)
        if polls * 2 >= lim.private and not self._warned_polls:
            self._warned_polls = True
            log.warning("the server's own checks (every %.3g s on %d market(s)) take %d of the %d private calls "
                        "of a window: little or nothing is left to lease to the bots (raise "
                        "pos_server_check_interval)", self.check_interval_s, self.checked_markets,
                        self._server_polls(lim.window_s, self.check_interval_s), lim.private)
        views["orders"] = PoolView(combined.order_remaining, horizon(combined.order_reset),
                                   CORRECTION_RESERVE["orders"])
        # Small orders: no header tells them. Counted by the desk from the bots' counters (dated at
        # the query that revealed them, so late, so they stay in the window longer than they did)
        # plus the server's own; the penalty limit once any reading says a penalty hour runs or any
        # bot was paused by a -1.
        edge = tm - lim.small_window_s
        small = 0
        for a in self.askers.values():
            while a.small and a.small[0][0] <= edge:
                a.small.popleft()
            small += sum(n for _, n in a.small)
        small += own.small_orders(t)
        penalised = t < combined.penalty_until or t < combined.paused_until
        small_limit = lim.small_penalty if penalised else lim.small_orders
        views["small_orders"] = PoolView(small_limit - small, lim.small_window_s, CORRECTION_RESERVE["small_orders"])
        # The IP bucket of the asking bot's host: the readings of the bots there (and the server's own).
        readings: list[tuple[int, int, float, bool]] = []
        for b in live:
            a = self.askers[b]
            ip = a.ip
            if a.host == host and ip is not None:
                readings.append((int(str(ip["remaining"])), int(str(ip["since"])), float(str(ip["reset"])),
                                 ip["measured"] is True))
        need = 0
        if host == LOCAL_HOST:
            if isinstance(own, HostBudget):
                r = own.ip_reading(t)
                readings.append((r.remaining, r.since, r.reset, r.measured))
            ip_h = lim.window_s
            # The server's own public polls until then: the check's board state and ticker, the feed.
            need = (self._server_polls(ip_h, self.check_interval_s)
                    + self._server_polls(ip_h, max(10.0, self.check_interval_s))
                    + self._server_polls(ip_h, HEALTH_FEED_INTERVAL_S))
        rem, _, reset, _ = ApiBudget._combine_bucket(readings, lim.ip, t)
        views["ip"] = PoolView(rem, horizon(reset), CORRECTION_RESERVE["ip"] + need)
        return views

    # ------------------------------------------------------------------ grants
    def _note_query(self, q: p.LeaseQuery, host: str, now_m: float) -> _Asker:
        h = q.header
        boot = h.boot if h is not None else 0
        a = self.askers.get(q.bot)
        if a is None or a.boot != boot:
            old_small = a.small if a is not None else None
            a = _Asker(market=q.market, host=host, boot=boot, budget=q.budget, ip=q.ip, seen_m=now_m)
            if old_small is not None:
                a.small = old_small  # a restarted bot's recent small orders still count
            self.askers[q.bot] = a
        prev = a.sent.get("small_orders", 0)
        cur = q.sent.get("small_orders", 0)
        new_small = cur - prev if cur >= prev else cur
        if new_small > 0:
            a.small.append((now_m, new_small))
        a.market, a.host, a.budget, a.ip, a.seen_m = q.market, host, q.budget, q.ip, now_m
        a.sent = dict(q.sent)
        if q.settled > a.settled:
            a.settled = q.settled
            self._settled(q.bot, q.market, q.settled, now_m, q.healed)
        return a

    def grant(self, q: p.LeaseQuery, host: str, registry_budgets: Mapping[str, BudgetSnapshot],
              own: HostBudget | ApiBudget) -> p.LeaseGrant:
        """Size and record ``q``'s bot's new lease; the grant to send back."""
        assert q.header is not None
        tm, t = self.clock(), self.wall()
        self._note_query(q, host, tm)
        self.grants += 1
        live = self.live(tm)
        if q.v != LEASE_VERSION:
            # A lease version this server does not speak: no calls; the bot keeps its fallback.
            return p.LeaseGrant(re=q.header.seq, v=LEASE_VERSION, until=t, calls=dict.fromkeys(KINDS, 0),
                                free=dict.fromkeys(KINDS, 0), bots=len(live))
        views = self.views(host, registry_budgets, own, tm, t)
        r = self.rounds.get(q.market)
        must_settle = r is not None and q.bot in r.waiting and q.settled < r.epoch
        calls: dict[str, int] = {}
        free: dict[str, int] = {}
        for kind in KINDS:
            key = self.pool_key(kind, host)
            pool = self._pool(key, kind)
            sharers = live if kind != "ip" else [b for b in live if self.askers[b].host == host]
            floor = SETTLE_CALLS if must_settle and kind == "private" else 0  # a settle first
            lease = pool.grant(q.bot, q.want.get(kind), q.used.get(kind, 0), views[kind], sharers, tm, floor)
            calls[kind] = lease.calls
            # Less one term's pace: what grants to the others may still take from the free pool
            # before this bot's lease ends, so fallback shares cut from it stay within the pool.
            free[kind] = max(0, pool.free(views[kind], tm) - pool.pace(views[kind]))
        for key, pool in self.pools.items():
            pool.prune(tm, live if not key.startswith("ip:") else
                       [b for b in live if self.pool_key("ip", self.askers[b].host) == key])
        for gone in [b for b, a in self.askers.items() if tm - a.seen_m > 10 * LIVE_TERMS * self.ttl_s]:
            del self.askers[gone]
        return p.LeaseGrant(re=q.header.seq, v=LEASE_VERSION, until=t + self.ttl_s, calls=calls, free=free,
                            bots=len(live), health=self.health_of(q.market, tm), settle=self.epochs.get(q.market, 0))

    def status(self, now_m: float | None = None) -> dict[str, object]:
        """Plain JSON values for STATUS_REPLY (``leases``): pools, live bots, settle rounds."""
        tm = self.clock() if now_m is None else now_m
        return {
            "ttl": self.ttl_s, "grants": self.grants, "live": len(self.live(tm)),
            "outstanding": {k: pool.outstanding(tm) for k, pool in sorted(self.pools.items())},
            "settle": {m: {"epoch": r.epoch, "waiting": sorted(r.waiting), "settled": r.settled_m is not None}
                       for m, r in sorted(self.rounds.items())},
        }

    # ------------------------------------------------------------------ health feed
    def markets(self, now_m: float | None = None) -> list[str]:
        """Markets with a live leased bot: the ones whose health the server polls for them."""
        return sorted({self.askers[b].market for b in self.live(now_m)})

    def set_health(self, market: str, health: str, state: str, now_m: float | None = None) -> None:
        self.health[market] = (health, state, self.clock() if now_m is None else now_m)

    def health_of(self, market: str, now_m: float) -> dict[str, object] | None:
        h = self.health.get(market)
        if h is None:
            return None
        return {"health": h[0], "state": h[1], "age": round(max(0.0, now_m - h[2]), 3)}

    # ------------------------------------------------------------------ settle before correct
    def gate(self, market: str, diff: Decimal | None, min_size: Decimal, check_started_m: float,
             now_m: float | None = None, expected: Decimal | None = None) -> str:
        """Whether a correction on ``market`` may go out now: "" yes, else why not.

        A drift seen for the first time (or changed) opens a settle round: every live leased bot of
        the market is asked (in its next grant) to reconcile with the exchange and echo the round's
        epoch. Only a drift still there in a check that started after the last of them settled may
        be corrected. A round nobody completes within ``SETTLE_TIMEOUT_S`` holds nothing back.

        A drift of the same size after the bots' ``expected`` position moved since its round opened
        may be another drift: a settle healed one lost fill and a second one of the same size was
        lost meanwhile (bots trade fixed lots). Correcting it would count that fill twice once its
        bot heals it too, so the bots are asked to settle once more. Once per drift, unless the
        last round's settles found lost fills (``healed``): then again, up to ``MAX_SETTLE_AGAIN``
        times, since losses in a row are what a feed that drops events produces. A round that
        healed nothing (or whose bots did not say) leaves the next one to judge: bots that trade
        on would otherwise hold a real drift back for ever.
        """
        tm = self.clock() if now_m is None else now_m
        r = self.rounds.get(market)
        if diff is None or abs(diff) < min_size:
            if r is not None:
                del self.rounds[market]  # healed (by its bot, most likely): nothing to correct
            return ""
        again = (r is not None and r.diff == diff and r.settled_m is not None
                 and expected is not None and r.expected is not None and expected != r.expected
                 and (not r.again or (r.healed is not None and r.healed > 0 and r.again < MAX_SETTLE_AGAIN)))
        if r is None or r.diff != diff or again:
            waiting = set(self.live_on(market, tm))
            if not waiting:
                return ""  # no leased bot to wait for (none live, or only bots without leases)
            epoch = max(self.epochs.get(market, 0) + 1, self.first_epoch)
            self.epochs[market] = epoch
            times = r.again + 1 if again and r is not None else 0
            self.rounds[market] = SettleRound(epoch, diff, tm, waiting, expected=expected, again=times)
            if again:
                log.info("%s: drift %s again after the bots' positions moved; asking %d bot(s) to settle once more "
                         "(epoch %d, again %d)", market, diff, len(waiting), epoch, times)
                return f"asked {len(waiting)} bot(s) to settle again"
            log.info("%s: drift %s seen; asking %d bot(s) to settle first (epoch %d)", market, diff, len(waiting), epoch)
            return f"asked {len(waiting)} bot(s) to settle"
        r.waiting &= set(self.live_on(market, tm))  # a bot that left cannot hold a correction back
        if r.waiting and r.settled_m is None:
            if tm - r.opened_m < SETTLE_TIMEOUT_S:
                return f"waiting for {len(r.waiting)} bot(s) to settle"
            log.warning("%s: %s did not settle within %.0f s; judging without them", market,
                        ", ".join(sorted(r.waiting)), SETTLE_TIMEOUT_S)
            r.waiting.clear()
        if r.settled_m is None:
            r.settled_m = tm
        if check_started_m < r.settled_m:
            return "bots settled: judging on the next checks"
        return ""

    def _settled(self, bot: str, market: str, epoch: int, now_m: float, healed: int | None = None) -> None:
        r = self.rounds.get(market)
        if r is None or epoch < r.epoch:
            return
        if bot in r.waiting:
            r.healed = None if healed is None or r.healed is None else r.healed + healed
        r.waiting.discard(bot)
        if not r.waiting and r.settled_m is None:
            r.settled_m = now_m
            log.info("%s: every bot settled (epoch %d)", market, r.epoch)
