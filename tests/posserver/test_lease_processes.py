"""Budget leases and settle-before-correct with real processes: a ``bfsx sim`` process with its
limits scaled down, N ``bfsx trade`` bots (bench/strategies/spam.py) on one account, the position
server in this process. The harness is the benchmark's (bench/lease.py), run short."""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    # bench/ is not a package on sys.path under --import-mode=importlib: load the module by path.
    spec = importlib.util.spec_from_file_location("_bfsx_bench_lease", ROOT / "bench" / "lease.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(170)
@pytest.mark.parametrize("bots", [2, 4, 6])
async def test_fleet_on_one_account_never_breaches_a_limit(bots: int, tmp_path: Path) -> None:
    """Each bot tries 4 small orders a second, far more than the account may send: the exchange
    answers zero over-limit errors, the penalty never starts, the bots still trade, and a drift
    injected meanwhile is corrected by one order on the first try (invariant 1 at the end)."""
    lease = _bench()
    r = await lease.run_fleet(bots, 8.0, tmp_path, scaled=True, rate=4.0, drift=Decimal("0.03"),
                              probe_penalty=False)
    assert r.over_limit_source == "simulator limits_refused"
    assert r.over_limit == 0, r.line()
    assert not r.penalty
    assert r.sent > 0 and r.held > 0, r.line()  # traded, and the leases did hold the rest back
    assert r.failed == 0, r.line()
    assert (r.corrections, r.correction_errors) == (1, 0), r.line()
    assert r.invariant_1


@pytest.mark.timeout(170)
async def test_lost_fills_are_healed_once_by_their_bots_with_a_fast_check(tmp_path: Path) -> None:
    """1 s × 3 check, every private event dropped while two bots trade at market: the server asks
    the bots to settle before it judges, so each lost fill is healed by its bot and the server
    never corrects (no double correction); invariant 1 holds at the end."""
    lease = _bench()
    r = await lease.run_fleet(2, 8.0, tmp_path, scaled=True, rate=1.0, mode="maker", drift=None,
                              drop_events=0.5, check_interval=1.0, consecutive=3, probe_penalty=False)
    # Invariant 1 at the end proves no fill was counted twice (a bot's heal plus a correction). On a
    # loaded machine one bot's audit can come after the server's settle deadline: the server then
    # corrects that fill itself, once (seen in 1 of ~10 CI-like runs); never more.
    assert r.invariant_1, r.line()
    assert r.corrections <= 1, r.line()
    assert r.over_limit == 0, r.line()
    # Fills were lost and found again by the bots' own resyncs (on the server's settle request, or
    # their own audit when it came first): never by a correcting order.
    assert r.recovered > 0, r.line()
