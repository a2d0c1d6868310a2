"""Crypto CFD collateral facts: the keep-rate ratios bitFlyer gives and the collateral history's
reason codes (docs/bitflyer.md#products).

keep rate = (collateral + open PnL) / required collateral. Below ``MARGIN_CALL_RATIO`` the
account gets a margin call; below ``LOSS_CUT_RATIO`` the exchange closes every CFD position at
market with its own orders (the figures for individual accounts).
"""

from __future__ import annotations

from typing import Final

MARGIN_CALL_RATIO: Final = 1.0
LOSS_CUT_RATIO: Final = 0.5
#: getcollateralhistory: realised CFD PnL of a fill (bitFlyer's code).
CLEARING_COLL: Final = "CLEARING_COLL"
#: Money moved in or out of the collateral, not earned or lost by trading. ``DEPOSIT`` and
#: ``WITHDRAWAL`` are what the simulator writes; any code naming a deposit, a withdrawal or a
#: transfer is read as one (bitFlyer does not publish its list of codes).
TRANSFER_WORDS: Final = ("DEPOSIT", "WITHDRAW", "TRANSFER")


def is_transfer(reason_code: str) -> bool:
    """Whether a collateral change with this reason code is a deposit / withdrawal (not PnL)."""
    code = reason_code.upper()
    return any(w in code for w in TRANSFER_WORDS)
