"""The account's holds: reasons that put bots close-only, per market or for every market.

Owns the set of active holds. A hold is a ``(reason, market)`` pair; ``market=None`` holds every
market. Bots on a market go close-only while any hold covers it. Writers: the margin watch
(``keep_rate``, ``daily_loss``) and the operator's commands; readers: the lease grants, status.

Minimal version (the lease channel that tells bots is the kill-switch work): the holds are kept
and shown here, and :meth:`Controls.close_only` answers whether a market is held.
"""

from __future__ import annotations

import logging

log = logging.getLogger("bfsx.posserver")


class Controls:
    """Active holds by reason and market (``None`` = all markets)."""

    def __init__(self) -> None:
        self._holds: set[tuple[str, str | None]] = set()

    def hold(self, reason: str, market: str | None = None) -> bool:
        """Hold ``market`` (None: every market) close-only for ``reason``; True when it is new."""
        key = (reason, market)
        if key in self._holds:
            return False
        self._holds.add(key)
        log.warning("close-only hold %r on %s", reason, market or "every market")
        return True

    def release(self, reason: str, market: str | None = None) -> bool:
        """Drop the hold of ``reason`` on ``market``; True when there was one."""
        key = (reason, market)
        if key not in self._holds:
            return False
        self._holds.discard(key)
        log.warning("close-only hold %r on %s released", reason, market or "every market")
        return True

    def holds(self) -> list[tuple[str, str | None]]:
        """Every active hold, sorted (status, console)."""
        return sorted(self._holds, key=lambda h: (h[0], h[1] or ""))

    def reasons(self, market: str | None = None) -> list[str]:
        """The reasons holding ``market`` (the all-markets holds included); None: every reason."""
        return sorted({r for r, m in self._holds if market is None or m is None or m == market})

    def close_only(self, market: str) -> bool:
        """Whether bots on ``market`` must be close-only now."""
        return bool(self.reasons(market))
