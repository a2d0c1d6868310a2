"""Plain-data samples the position server records at every check and hands to the reporters.

Charts, Discord and InfluxDB only ever see these three types, so the reporters stay independent of
the server's registry and storage.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MarketSample:
    """One market at one check: the bots' total and what the exchange says.

    ``position`` is the signed sum of the bots' positions (BTC, ETH ...), ``profit`` their summed
    PnL in JPY, ``price`` the market price at the check (None when unknown) and
    ``exchange_position`` the position the exchange reported (None when the check could not ask).
    """

    ts: float
    position: float
    profit: float
    price: float | None = None
    exchange_position: float | None = None


@dataclass(frozen=True, slots=True)
class BotSample:
    """One bot at one check: its own position, PnL (JPY) and the API budget it reported."""

    ts: float
    bot: str
    market: str
    position: float
    profit: float
    api_remaining: int | None = None


@dataclass(frozen=True, slots=True)
class AccountSample:
    """The account's margin at one poll (JPY): collateral, open PnL, required collateral, the keep
    rate (None without a position), its PnL today from the collateral (None until known) and Σ the
    bots' PnL today on CFD markets, from their reports."""

    ts: float
    collateral: float
    open_pnl: float
    require_collateral: float
    keep_rate: float | None
    pnl_today: float | None
    bots_pnl: float
