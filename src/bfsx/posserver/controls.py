"""The account's close-only holds: reasons that put the bots of a market (or of every market) close-only.

Owns the holds: per scope (a market, or ``ALL`` for every market) the set of reasons. Bots on a
market are close-only while any reason holds it or ``ALL``. Writers: the margin watch
(``keep_rate``, ``daily_loss``) and the operator's commands; readers: status, console.

A minimal version of the kill-switch work's ``Controls`` (same names: ``hold``, ``release``,
``held``, ``holds``, ``summary``), which also tells the bots over the lease channel; this one
keeps and shows the holds only.
"""

from __future__ import annotations

import logging
from typing import Final

log = logging.getLogger("bfsx.posserver")

#: The scope of a hold that applies to every market.
ALL: Final = "*"


def _scope(market: str | None) -> str:
    return ALL if market is None else market


class Controls:
    """Close-only holds by scope (see the module docstring)."""

    def __init__(self) -> None:
        self.holds: dict[str, set[str]] = {}
        self.generation = 0  # counts every change

    def hold(self, reason: str, market: str | None = None) -> bool:
        """Make the bots on ``market`` (None: every market) close-only for ``reason``; True when
        the reason is newly added."""
        reasons = self.holds.setdefault(_scope(market), set())
        if reason in reasons:
            return False
        reasons.add(reason)
        self.generation += 1
        return True

    def release(self, reason: str, market: str | None = None) -> bool:
        """Take ``reason`` back from ``market``'s holds (None: the every-market scope); True when
        it was held."""
        scope = _scope(market)
        reasons = self.holds.get(scope)
        if reasons is None or reason not in reasons:
            return False
        reasons.discard(reason)
        if not reasons:
            del self.holds[scope]
        self.generation += 1
        return True

    def held(self, market: str) -> list[str]:
        """Every reason the bots on ``market`` are close-only (its own and every market's)."""
        return sorted(self.holds.get(market, set()) | self.holds.get(ALL, set()))

    def summary(self) -> str:
        """One line: what is held ("" when nothing)."""
        return "; ".join(f"{s} close-only ({', '.join(sorted(r))})" for s, r in sorted(self.holds.items()))
