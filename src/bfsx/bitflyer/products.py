"""Product specs: market type, minimum size, price tick (docs/bitflyer.md#products).

No public call exposes tick or minimum size, so the known values live here, once, for the client
(local order checks) and the simulator (validation, -110).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

MarketType = Literal["Spot", "FX", "Futures"]


@dataclass(frozen=True, slots=True)
class ProductSpec:
    """Static facts about one product."""

    code: str
    market_type: MarketType
    base: str
    quote: str
    min_size: Decimal
    tick: Decimal

    @property
    def is_fx(self) -> bool:
        """FX / Crypto CFD: positions are per-lot rows from getpositions, not balances."""
        return self.market_type == "FX"

    @property
    def size_decimals(self) -> int:
        return 8

    @property
    def max_size(self) -> Decimal:
        """bfsx's sanity cap on one order: a million minimum sizes (1,000 BTC). bitFlyer publishes
        no maximum; anything above this is a mistake (a price passed as the size), never a trade."""
        return self.min_size * 1_000_000


def _spec(code: str, mtype: MarketType, base: str, quote: str, min_size: str, tick: str) -> ProductSpec:
    return ProductSpec(code, mtype, base, quote, Decimal(min_size), Decimal(tick))


PRODUCTS: dict[str, ProductSpec] = {
    p.code: p
    for p in (
        _spec("BTC_JPY", "Spot", "BTC", "JPY", "0.001", "1"),
        _spec("XRP_JPY", "Spot", "XRP", "JPY", "0.1", "0.01"),
        _spec("ETH_JPY", "Spot", "ETH", "JPY", "0.01", "1"),
        _spec("XLM_JPY", "Spot", "XLM", "JPY", "0.1", "0.01"),
        _spec("MONA_JPY", "Spot", "MONA", "JPY", "0.1", "0.01"),
        _spec("ETH_BTC", "Spot", "ETH", "BTC", "0.01", "0.00001"),
        _spec("BCH_BTC", "Spot", "BCH", "BTC", "0.01", "0.00001"),
        _spec("FX_BTC_JPY", "FX", "BTC", "JPY", "0.001", "1"),
        _spec("BTC_USD", "Spot", "BTC", "USD", "0.001", "0.01"),
        _spec("BTC_EUR", "Spot", "BTC", "EUR", "0.001", "0.01"),
    )
}

#: getmarkets per region (JP is the default path).
REGIONS: dict[str, tuple[str, ...]] = {
    "jp": ("BTC_JPY", "XRP_JPY", "ETH_JPY", "XLM_JPY", "MONA_JPY", "ETH_BTC", "BCH_BTC", "FX_BTC_JPY"),
    "usa": ("BTC_USD", "BTC_JPY", "ETH_BTC"),
    "eu": ("BTC_EUR", "BTC_JPY", "ETH_BTC"),
}


def get_product(code: str) -> ProductSpec | None:
    """Look a product up; ``product_code`` is case-insensitive on the wire."""
    return PRODUCTS.get(code.upper())


def product_spec(code: str) -> ProductSpec:
    """Like :func:`get_product` but raises ``KeyError`` with a clear message."""
    spec = get_product(code)
    if spec is None:
        raise KeyError(f"unknown product {code!r}; known: {', '.join(sorted(PRODUCTS))}")
    return spec
