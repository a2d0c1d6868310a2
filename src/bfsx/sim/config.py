"""Simulator configuration (``bfsx sim --config sim.yaml``): accounts, products, market model, limits.

Every key has a default, so an empty file (or no file) gives the defaults of docs/simulator.md: products
FX_BTC_JPY and BTC_JPY, accounts ``demo-key-1`` / ``demo-key-2`` with 10,000,000 JPY and 1 BTC each.
Unknown keys are errors (``extra="forbid"``) so a typo never silently does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bfsx.bitflyer import limits
from bfsx.bitflyer.products import get_product
from bfsx.config.base import _fail
from bfsx.config.loading import load_model


class _Strict(BaseModel):
    # No NaN or infinity anywhere: a `.nan` rate or size would poison the market model silently.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AccountConfig(_Strict):
    """One exchange account. ``collateral`` (FX margin deposit, JPY) defaults to ``jpy``."""

    api_key: str = Field(min_length=1)
    api_secret: str = Field(min_length=1)
    # bounded (YAML reads 1.0e+309 as infinity): the engine turns these into exact integers
    jpy: float = Field(default=10_000_000, ge=0, le=1e15)
    btc: float = Field(default=1.0, ge=0, le=1e8)
    collateral: float | None = Field(default=None, ge=0, le=1e15)


def _default_accounts() -> list[AccountConfig]:
    return [
        AccountConfig(api_key="demo-key-1", api_secret="demo-secret-1"),
        AccountConfig(api_key="demo-key-2", api_secret="demo-secret-2"),
    ]


class MarketConfig(_Strict):
    """The synthetic market (see docs/simulator.md for the model).

    Rates are per second of wall time; the flow advances in fixed steps of ``step_seconds`` and
    draws every random number from one seeded generator, so the sequence of steps (and therefore
    of public executions) does not depend on timing jitter.
    """

    start_price: float = Field(default=10_000_000, gt=0, description="initial mid, JPY")
    start_prices: dict[str, float] = Field(default_factory=dict, description="per-product override")
    step_seconds: float = Field(default=0.1, gt=0, le=5)
    volatility: float = Field(default=1.5e-5, ge=0, description="trend: relative stdev of the anchor per sqrt(second)")
    noise: float = Field(default=4e-5, ge=0, description="short-term: stationary relative stdev around the anchor")
    reversion: float = Field(default=0.5, ge=0, description="per second: how fast the short-term part decays")
    jump_probability: float = Field(default=0.003, ge=0, le=1, description="chance of a jump per second")
    jump_size: float = Field(default=0.001, ge=0, description="relative size (stdev) of a jump")
    impact: float = Field(
        default=5e-5, ge=0, description="permanent relative move of the mid per BTC of user market-taking volume"
    )
    half_spread: int = Field(default=100, ge=0, description="JPY between the mid and the first synthetic level")
    level_spacing: int = Field(default=50, ge=1, description="JPY between synthetic ladder levels")
    levels: int = Field(default=400, ge=1, le=5000, description="synthetic levels per side")
    far_levels_slack: int = Field(
        default=20, ge=0, le=5000,
        description="levels the far end of a ladder may lag the mid before it is trimmed back to `levels` "
        "(deep quotes do not follow every tick); 0: the whole ladder follows the mid",
    )
    level_size_mean: float = Field(default=0.08, gt=0, description="BTC, mean synthetic level size")
    level_fill_probability: float = Field(default=0.9, ge=0, le=1, description="chance a ladder level is quoted")
    refill_rate: float = Field(default=4.0, ge=0, description="per second: chance rate a taken level is re-quoted")
    churn_per_second: float = Field(default=40.0, ge=0, description="random synthetic resizes per second")
    taker_rate: float = Field(default=4.0, ge=0, description="synthetic taker orders per second")
    taker_size_mean: float = Field(default=0.03, gt=0, description="BTC, mean of the exponential taker size")
    taker_size_max: float = Field(default=2.0, gt=0, description="BTC, cap on one taker order")
    diff_interval: float = Field(default=0.1, gt=0, description="seconds between lightning_board_ diffs")
    stale_deletions: float = Field(
        default=0.0, ge=0, le=1, description="fraction of level deletions left out of diffs (as bitFlyer sometimes does)"
    )
    snapshot_interval: float = Field(default=5.0, gt=0, description="seconds between board snapshots")
    snapshot_depth: int = Field(default=300, ge=1, description="levels per side in a snapshot")
    ticker_interval: float = Field(default=0.5, gt=0)

    def start_for(self, product: str) -> float:
        return self.start_prices.get(product, self.start_price)


class LimitsConfig(_Strict):
    """API limits (docs/bitflyer.md#rate-limits). Windows are fixed and start with the first request."""

    window_seconds: float = Field(default=limits.WINDOW_SECONDS, gt=0)
    private: int = Field(default=limits.PRIVATE_LIMIT, ge=0, description="private calls per key per window")
    ip: int = Field(default=limits.IP_LIMIT, ge=0, description="public calls per IP per window")
    orders: int = Field(default=limits.ORDER_LIMIT, ge=0, description="order calls per key per window")
    small_order_size: float = Field(default=limits.SMALL_ORDER_SIZE, ge=0)
    small_orders: int = Field(default=limits.SMALL_ORDER_LIMIT, ge=0, description="small orders per small window")
    small_window_seconds: float = Field(default=60.0, gt=0)
    small_penalty_orders: int = Field(default=limits.SMALL_ORDER_PENALTY_LIMIT, ge=0)
    small_penalty_seconds: float = Field(default=limits.SMALL_ORDER_PENALTY_SECONDS, ge=0)
    over_limit_http_status: int = Field(default=429, ge=100, le=599)


class MarginConfig(_Strict):
    """bitFlyer Crypto CFD margin rules for ``FX_BTC_JPY`` (docs/simulator.md#margin-and-loss-cut).

    keep rate = (collateral + open PnL) / required collateral, required = Σ lot price × size / leverage.
    """

    leverage: float = Field(default=2.0, ge=1, le=100, description="required collateral = position value / leverage")
    margin_call_ratio: float = Field(
        default=1.0, ge=0, le=10, description="keep rate below which getcollateral shows a margin call (closes nothing)"
    )
    loss_cut_ratio: float = Field(
        default=0.5, ge=0, le=10, description="keep rate below which every CFD position is closed at market"
    )
    history: int = Field(default=10_000, ge=10, le=1_000_000, description="getcollateralhistory rows kept per account")

    @model_validator(mode="after")
    def _ordered(self) -> MarginConfig:
        if self.loss_cut_ratio > self.margin_call_ratio:
            raise ValueError(
                f"must have loss_cut_ratio <= margin_call_ratio, got {self.loss_cut_ratio:g} > {self.margin_call_ratio:g}"
            )
        return self


class UpstreamConfig(_Strict):
    """``bfsx sim --upstream`` / ``--replay``: how the simulator follows another market's feed
    (docs/simulator.md#paper-trading-on-a-live-feed)."""

    backoff_s: float = Field(default=0.5, gt=0, le=60, description="first reconnect delay, doubled per failure")
    backoff_max_s: float = Field(default=10.0, gt=0, le=600, description="longest reconnect delay")
    silence_s: float = Field(
        default=10.0, ge=0, description="no board message for a product this long: it is unknown until its next "
        "snapshot; no message at all: reconnect (0 = never)"
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120, description="seconds to open the upstream socket")
    max_frame_bytes: int = Field(
        default=8 << 20, ge=1024, le=64 << 20, description="a larger upstream frame drops the connection"
    )
    max_levels: int = Field(
        default=20_000, ge=10, le=1_000_000,
        description="price levels (both sides) one product's upstream book may hold; beyond: unknown until a snapshot",
    )


class SimConfig(_Strict):
    """Top-level simulator config (the whole of sim.yaml)."""

    seed: int | None = None
    products: list[str] = Field(default_factory=lambda: ["FX_BTC_JPY", "BTC_JPY"], min_length=1)
    accounts: list[AccountConfig] = Field(default_factory=_default_accounts, min_length=1)
    market: MarketConfig = Field(default_factory=MarketConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    margin: MarginConfig = Field(default_factory=MarginConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    spot_commission_rate: float = Field(default=0.0015, ge=0, lt=0.1, description="spot fee, charged in BTC")
    minute_seconds: float = Field(default=60.0, gt=0, description="length of one minute_to_expire minute")
    order_delay_ms: float = Field(default=0.0, ge=0, description="acceptance -> placement delay")
    # bitFlyer publishes no maximum; these refuse absurd orders with -101 and keep every amount the
    # engine computes (price x satoshi, margin) far inside float and 64-bit JSON range
    max_order_size: float = Field(default=1000.0, gt=0, le=1e6, description="largest order size, BTC")
    max_order_price: float = Field(default=1e10, gt=0, le=1e12, description="highest LIMIT price, JPY")
    funds_failure: Literal["event", "http"] = Field(
        default="event", description="insufficient funds/margin: ORDER_FAILED event, or -200/-205 HTTP error"
    )
    history: int = Field(default=10_000, ge=10, description="public executions kept per product")
    account_history: int = Field(default=5_000, ge=10, description="orders and fills kept per account")
    ws_queue: int = Field(default=2_000, ge=10, description="frames queued per socket before it is dropped")
    live_interval: float = Field(default=1.0, gt=0, description="seconds between live-view lines")
    busy_order_rates: list[float] = Field(
        default_factory=lambda: [50.0, 150.0, 400.0], min_length=3, max_length=3,
        description="orders accepted per second (all accounts, the last whole second) from which the natural "
                    "health reads BUSY, VERY BUSY, SUPER BUSY",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "fx_leverage" in data:
            raise _fail("'fx_leverage' is now 'margin: {leverage: ...}'")
        return data

    @field_validator("products")
    @classmethod
    def _known_products(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for code in v:
            spec = get_product(code)
            if spec is None:
                raise ValueError(f"unknown product {code!r}")
            if spec.quote != "JPY" or spec.base != "BTC":
                raise ValueError(f"product {code!r} is not simulated (only BTC/JPY spot and FX)")
            if spec.code not in out:
                out.append(spec.code)
        return out

    @field_validator("busy_order_rates")
    @classmethod
    def _rising(cls, v: list[float]) -> list[float]:
        if any(r <= 0 for r in v) or v != sorted(v):
            raise ValueError("must be three rising rates > 0 (BUSY, VERY BUSY, SUPER BUSY)")
        return v

    @field_validator("accounts")
    @classmethod
    def _unique_keys(cls, v: list[AccountConfig]) -> list[AccountConfig]:
        keys = [a.api_key for a in v]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate api_key in accounts")
        return v

    @classmethod
    def fast(cls, **overrides: Any) -> SimConfig:
        """A busy market for tests: seed 1, frequent takers and snapshots (any key may be overridden;
        ``market``, ``limits`` and ``margin`` accept partial dicts)."""
        market: dict[str, Any] = {
            "taker_rate": 10.0,
            "taker_size_mean": 0.05,
            "snapshot_interval": 1.0,
            "ticker_interval": 0.2,
        }
        extra = overrides.pop("market", None) or {}
        market.update(extra.model_dump(exclude_unset=True) if isinstance(extra, BaseModel) else extra)
        data: dict[str, Any] = {"seed": 1, "market": market}
        data.update(overrides)
        return cls.model_validate(data)


def load_sim_config(path: str | Path | None, seed: int | None = None) -> SimConfig:
    """Read sim.yaml (None = defaults); ``seed`` from the command line wins over the file.

    Raises :class:`bfsx.config.ConfigError` (a ``UserError``) with one line on any problem: the same
    reader and messages as trade.yaml and the strategy yaml.
    """
    return load_model(Path(path) if path is not None else None, SimConfig, {"seed": seed} if seed is not None else None)
