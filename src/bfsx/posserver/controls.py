"""The account's control state: what the position server lets the bots do, per market.

Owns, for every market (or every market at once, the scope ``ALL``):

- **holds**: reasons the bots are close-only (``ctl`` for ``bfsx ctl close-only``, ``flatten`` for
  ``bfsx ctl flatten``, and whatever another part of the server holds, e.g. ``keep_rate`` /
  ``daily_loss``). Bots are close-only while any reason holds.
- **pauses**: reasons the bots send no new order at all (``ctl`` for ``bfsx ctl pause``, ``frozen``
  for a refused re-opening correction: there the bots' positions are no longer on the exchange, so
  even a closing order would open exposure).
- **frozen** markets: no correcting order is sent there (a refused re-opening, or ``bfsx ctl freeze``).
- **adopted base**: what ``bfsx ctl adopt`` added to the bots' ``base_position`` so that the
  exchange position of that moment is the expected one.
- **re-open allowed**: markets ``bfsx ctl unfreeze`` lifted: their next corrections may re-open a
  position (the operator confirmed it), until the market is in sync again.
- **stepping aside**: markets whose correcting order the exchange refused as a self trade (it
  would have matched the account's own resting orders, i.e. the bots' quotes): their bots are
  paused for ``self-trade`` and cancel their orders, until the correction goes through or the
  market is in sync. Never saved (a restart's first correction finds out again).

Written to ``controls.json`` in the server's state dir on every change (atomically: a temporary
file, then a rename), read at start: a command survives a server restart. A file that cannot be
read is logged and starts empty (never a crash: the guard must run); a write that fails is logged
and the state stays in memory. Pure bookkeeping: no I/O but that file, no clock but the stamps.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Literal

log = logging.getLogger("bfsx.posserver")

#: The scope of a control that applies to every market.
ALL: Final = "*"
FILE_NAME: Final = "controls.json"
#: Version of the file's layout.
FILE_VERSION: Final = 1
#: Bounds that keep a damaged or hostile file from growing the state without limit.
MAX_SCOPES: Final = 64
MAX_REASONS: Final = 16
MAX_REASON_LEN: Final = 64
MAX_TEXT_LEN: Final = 300

Mode = Literal["run", "pause", "close-only", "flatten"]
#: Hold reasons set by the server itself.
FROZEN: Final = "frozen"
#: How a frozen market's pause reaches its bots (:meth:`Controls.bot_control` reasons).
FROZEN_PAUSE: Final = f"pause:{FROZEN}"
FLATTEN: Final = "flatten"
OPERATOR: Final = "ctl"
#: The pause of the bots of a market whose correction would trade with their own resting orders.
SELF_TRADE: Final = "self-trade"
#: How that pause reaches the bots: they cancel their open orders on it.
SELF_TRADE_PAUSE: Final = f"pause:{SELF_TRADE}"
#: Seconds the bots of a market get to cancel their orders when a correction would self-trade
#: (they see the pause within their pos_server_control_interval, then cancel over REST). The server
#: gives up stepping aside when the correction is refused again after this long; a bot that cannot
#: hear the server stops stepping aside this long after the last reply that asked it to.
STEP_ASIDE_WAIT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class BotControl:
    """What the bots of one market must do now: ``mode`` and the reasons behind it."""

    mode: Mode
    reasons: tuple[str, ...]
    generation: int


def mode_of(reasons: tuple[str, ...]) -> Mode:
    """The mode that :meth:`Controls.bot_control`'s ``reasons`` mean: flatten, then pause (a
    ``pause:`` reason), then close-only (any other hold), else run."""
    if FLATTEN in reasons:
        return "flatten"
    if any(r.startswith("pause:") for r in reasons):
        return "pause"
    return "close-only" if reasons else "run"


def _scope(market: str | None) -> str:
    return ALL if market is None else market


class Controls:
    """The per-market control state of the account (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        """``state_dir``: where ``controls.json`` lives (None: memory only, for tests and tools)."""
        self.path = Path(state_dir) / FILE_NAME if state_dir is not None else None
        self.holds: dict[str, set[str]] = {}
        self.pauses: dict[str, set[str]] = {}
        self.frozen: dict[str, str] = {}  # scope → why (the alert's text)
        self.base_adjust: dict[str, Decimal] = {}  # market → added to the reported base_position
        self.reopen: set[str] = set()  # markets whose corrections may re-open until in sync
        #: market → monotonic time its bots were asked to step aside (see :meth:`step_aside`)
        self.aside: dict[str, float] = {}
        #: markets where stepping aside did not unblock the correction, until in sync or corrected
        self.aside_failed: set[str] = set()
        #: Hold reasons recomputed by their owner after a restart (the margin watch's): never saved,
        #: so a restart cannot leave one held that its owner no longer knows about.
        self.volatile: set[str] = {SELF_TRADE}
        #: Counts every change (bots and tools compare it to see that something changed).
        self.generation = 0
        self.save_errors = 0

    # ------------------------------------------------------------------ close-only and pause
    def hold(self, reason: str, market: str | None = None) -> bool:
        """Make the bots on ``market`` (None: every market) close-only for ``reason``; True when
        the reason is newly added."""
        return self._add(self.holds, reason, market)

    def release(self, reason: str, market: str | None = None) -> bool:
        """Take ``reason`` back from ``market``'s holds (None: the every-market scope); True when
        it was held."""
        return self._remove(self.holds, reason, market)

    def pause(self, reason: str, market: str | None = None) -> bool:
        """No new order of the bots on ``market`` (None: every market) for ``reason``."""
        return self._add(self.pauses, reason, market)

    def unpause(self, reason: str, market: str | None = None) -> bool:
        return self._remove(self.pauses, reason, market)

    def _add(self, table: dict[str, set[str]], reason: str, market: str | None) -> bool:
        scope = _scope(market)
        reasons = table.setdefault(scope, set())
        if reason in reasons:
            return False
        reasons.add(reason)
        self._changed()
        return True

    def _remove(self, table: dict[str, set[str]], reason: str, market: str | None) -> bool:
        scope = _scope(market)
        reasons = table.get(scope)
        if reasons is None or reason not in reasons:
            return False
        reasons.discard(reason)
        if not reasons:
            del table[scope]
        self._changed()
        return True

    def held(self, market: str) -> list[str]:
        """Every reason the bots on ``market`` are close-only (its own and every market's)."""
        return sorted(self.holds.get(market, set()) | self.holds.get(ALL, set()))

    def paused(self, market: str) -> list[str]:
        return sorted(self.pauses.get(market, set()) | self.pauses.get(ALL, set()))

    def bot_control(self, market: str) -> BotControl:
        """The mode of the bots on ``market``: flatten, then pause, then close-only, else run."""
        reasons = tuple(sorted(set(self.held(market)) | {f"pause:{r}" for r in self.paused(market)}))
        return BotControl(mode_of(reasons), reasons, self.generation)

    # ------------------------------------------------------------------ corrections
    def freeze(self, market: str | None, why: str) -> bool:
        """No correcting order on ``market`` (None: every market) until :meth:`unfreeze`; True when
        newly frozen."""
        scope = _scope(market)
        if scope in self.frozen:
            return False
        self.frozen[scope] = why[:MAX_TEXT_LEN]
        self._changed()
        return True

    def unfreeze(self, market: str | None) -> list[str]:
        """Lift the freeze of ``market`` (None: of every market, and the every-market one) and its
        ``frozen`` hold or pause; the scopes that were frozen."""
        scopes = list(self.frozen) if market is None else [s for s in (market,) if s in self.frozen]
        for s in scopes:
            del self.frozen[s]
        for table in (self.holds, self.pauses):
            for s in (list(table) if market is None else [market]):
                reasons = table.get(s)
                if reasons is not None and FROZEN in reasons:
                    reasons.discard(FROZEN)
                    if not reasons:
                        del table[s]
                    scopes = scopes if s in scopes else [*scopes, s]
        if scopes:
            self._changed()
        return scopes

    def frozen_why(self, market: str) -> str | None:
        """Why corrections on ``market`` are off, or None."""
        return self.frozen.get(market) or self.frozen.get(ALL)

    def allow_reopen(self, markets: list[str]) -> None:
        """``bfsx ctl unfreeze``: the corrections of ``markets`` may re-open, until in sync."""
        new = set(markets) - self.reopen
        if new:
            self.reopen |= new
            self._changed()

    def reopen_allowed(self, market: str) -> bool:
        return market in self.reopen

    def in_sync(self, market: str) -> None:
        """``market``'s exchange agrees with the expected position: a re-open allowance is used up,
        and its bots need not step aside any more."""
        if market in self.reopen:
            self.reopen.discard(market)
            self._changed()
        self.step_aside_over(market)

    def step_aside(self, market: str, now: float) -> bool:
        """A correction of ``market`` was refused as a self trade: its bots pause (no new order)
        and cancel their open orders, so that the next correction meets other traders' orders.
        True when newly asked."""
        if market in self.aside:
            return False
        self.aside[market] = now
        self.pause(SELF_TRADE, market)
        return True

    def aside_since(self, market: str) -> float | None:
        """When ``market``'s bots were asked to step aside (None: they are not)."""
        return self.aside.get(market)

    def step_aside_over(self, market: str) -> bool:
        """``market``'s correction went through, or nothing is left to correct: its bots may trade
        again and a later self trade is a new episode; True when they had been stepping aside."""
        self.aside_failed.discard(market)
        if self.aside.pop(market, None) is None:
            return False
        self.unpause(SELF_TRADE, market)
        return True

    def step_aside_failed(self, market: str) -> None:
        """Stepping aside did not unblock ``market``'s correction (the order in the way is not the
        bots'): they trade again, and are not asked again until in sync or corrected."""
        self.aside.pop(market, None)
        self.unpause(SELF_TRADE, market)
        self.aside_failed.add(market)

    def step_aside_useless(self, market: str) -> bool:
        """True when stepping aside was tried in this episode and did not help."""
        return market in self.aside_failed

    def to_base(self, market: str) -> bool:
        """True while ``bfsx ctl flatten`` asks the server to bring ``market`` to its base: its
        corrections may then go either way (the operator asked for that position)."""
        return FLATTEN in self.held(market)

    def adopt(self, market: str, adjust: Decimal) -> None:
        """Add ``adjust`` to ``market``'s reported base from now on (``bfsx ctl adopt``)."""
        if adjust == 0:
            self.base_adjust.pop(market, None)
        else:
            self.base_adjust[market] = adjust
        self._changed()

    def adjust_of(self, market: str) -> Decimal:
        return self.base_adjust.get(market, Decimal(0))

    def scopes(self) -> set[str]:
        """Every market (or ``ALL``) any control names."""
        return set(self.holds) | set(self.pauses) | set(self.frozen) | set(self.base_adjust) | self.reopen

    # ------------------------------------------------------------------ persistence
    def _changed(self) -> None:
        self.generation += 1
        self.save()

    def to_dict(self, *, saved: bool = False) -> dict[str, Any]:
        """Plain JSON values (the ``controls`` of STATUS_REPLY / CTL_REPLY; ``saved``: the file's,
        without the volatile reasons)."""
        skip = self.volatile if saved else set()
        return {
            "v": FILE_VERSION, "generation": self.generation,
            "holds": {s: sorted(r - skip) for s, r in sorted(self.holds.items()) if r - skip},
            "pauses": {s: sorted(r - skip) for s, r in sorted(self.pauses.items()) if r - skip},
            "frozen": dict(sorted(self.frozen.items())),
            "base_adjust": {m: str(a) for m, a in sorted(self.base_adjust.items())},
            "reopen": sorted(self.reopen),
            "saved": round(time.time(), 3),
        }

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.to_dict(saved=True), indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)  # a reader (or a restart) never sees half a file
        except OSError as e:
            self.save_errors += 1
            log.error("controls: saving %s failed (%s); the state holds in memory until the next change",
                      self.path, e)

    def load(self, known: set[str] | frozenset[str]) -> None:
        """Read ``controls.json`` (a missing file is an empty state). ``known``: the market codes a
        scope may name; anything else in the file is dropped with one log line."""
        if self.path is None or not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            self._parse(raw, known)
        except (OSError, ValueError, TypeError, InvalidOperation) as e:
            log.error("controls: %s unreadable (%s): starting with no control held", self.path, e)
            self.holds, self.pauses, self.frozen, self.base_adjust, self.reopen = {}, {}, {}, {}, set()
            return
        log.info("controls restored from %s: %s", self.path, self.summary() or "nothing held")

    def _parse(self, raw: dict[str, Any], known: set[str] | frozenset[str]) -> None:
        def scope_ok(s: object) -> bool:
            return isinstance(s, str) and (s == ALL or s in known)

        def reasons(v: object) -> set[str]:
            if not isinstance(v, list):
                raise ValueError("reasons are not a list")
            out = {r for r in v if isinstance(r, str) and 0 < len(r) <= MAX_REASON_LEN and r.isprintable()}
            return set(sorted(out)[:MAX_REASONS])

        def table(key: str) -> dict[str, set[str]]:
            v = raw.get(key, {})
            if not isinstance(v, dict):
                raise ValueError(f"{key} is not an object")
            out = {s: reasons(r) - self.volatile for s, r in v.items() if scope_ok(s)}
            return {s: r for s, r in list(out.items())[:MAX_SCOPES] if r}

        holds, pauses = table("holds"), table("pauses")
        fr = raw.get("frozen", {})
        if not isinstance(fr, dict):
            raise ValueError("frozen is not an object")
        frozen = {s: str(w)[:MAX_TEXT_LEN] for s, w in list(fr.items())[:MAX_SCOPES] if scope_ok(s)}
        ba = raw.get("base_adjust", {})
        if not isinstance(ba, dict):
            raise ValueError("base_adjust is not an object")
        adjust: dict[str, Decimal] = {}
        for m, a in list(ba.items())[:MAX_SCOPES]:
            if isinstance(m, str) and m in known and isinstance(a, str):
                d = Decimal(a)
                if not d.is_finite():
                    raise ValueError(f"base_adjust of {m} is not finite")
                adjust[m] = d
        ro = raw.get("reopen", [])
        if not isinstance(ro, list):
            raise ValueError("reopen is not a list")
        reopen = {m for m in ro if isinstance(m, str) and m in known}
        gen = raw.get("generation", 0)
        self.holds, self.pauses, self.frozen, self.base_adjust = holds, pauses, frozen, adjust
        self.reopen = reopen
        self.generation = gen if isinstance(gen, int) and not isinstance(gen, bool) and gen >= 0 else 0

    def summary(self) -> str:
        """One line: what is held, paused, frozen, adopted ("" when nothing)."""
        parts = []
        for s, r in sorted(self.pauses.items()):
            parts.append(f"{s} paused ({', '.join(sorted(r))})")
        for s, r in sorted(self.holds.items()):
            parts.append(f"{s} close-only ({', '.join(sorted(r))})")
        for s in sorted(self.frozen):
            parts.append(f"{s} frozen")
        for m, a in sorted(self.base_adjust.items()):
            parts.append(f"{m} base {a:+}")
        for m in sorted(self.reopen):
            parts.append(f"{m} may re-open until in sync")
        return "; ".join(parts)
