"""DriftCheck: unknown samples, quiet gating, consecutive identical diffs, cap and rounding."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from bfsx.account.drift import Correction, DriftCheck


def check(consecutive: int = 4, max_order: str = "0.1") -> DriftCheck:
    return DriftCheck(min_size=D("0.001"), consecutive=consecutive, max_order=D(max_order))


def test_four_identical_diffs_correct_toward_expected() -> None:
    dc = check()
    for n in range(1, 4):
        assert dc.observe(D("0.5"), D("0.52"), quiet=True) is None
        assert dc.streak == n and dc.last_diff == D("0.02")
    corr = dc.observe(D("0.5"), D("0.52"), quiet=True)
    assert corr == Correction("SELL", D("0.02"), D("0.02")) and str(corr) == "SELL 0.02000000"
    assert dc.streak == 0 and dc.corrections == 0  # fresh evidence needed for the next one
    dc.sent()  # counted only once the caller sent it (a health refusal is no correction)
    assert dc.corrections == 1
    for _ in range(3):
        assert dc.observe(D("0.5"), D("0.52"), quiet=True) is None
    assert dc.observe(D("0.5"), D("0.52"), quiet=True) is not None
    short = check(consecutive=1)
    assert short.observe(D("0"), D("-0.03"), quiet=True) == Correction("BUY", D("0.03"), D("-0.03"))


def test_a_different_diff_restarts_the_streak() -> None:
    dc = check(consecutive=3)
    dc.observe(D("0"), D("0.02"), quiet=True)
    dc.observe(D("0"), D("0.02"), quiet=True)
    assert dc.observe(D("0"), D("0.03"), quiet=True) is None and dc.streak == 1
    dc.observe(D("0"), D("0.03"), quiet=True)
    assert dc.observe(D("0"), D("0.03"), quiet=True) == Correction("SELL", D("0.03"), D("0.03"))


def test_unknown_neither_counts_nor_resets_and_never_orders() -> None:
    dc = check(consecutive=3)
    dc.observe(D("1"), D("1.05"), quiet=True)
    dc.observe(D("1"), D("1.05"), quiet=True)
    for _ in range(10):  # API errors / timeouts
        assert dc.observe(D("1"), None, quiet=True) is None
        assert dc.observe(None, D("1.05"), quiet=True) is None
    assert dc.streak == 2 and dc.unknown == 20 and dc.last_diff == D("0.05")
    assert dc.observe(D("1"), D("1.05"), quiet=True) == Correction("SELL", D("0.05"), D("0.05"))
    only_unknown = check(consecutive=1)
    assert all(only_unknown.observe(None, None, quiet=True) is None for _ in range(5))
    assert only_unknown.streak == 0 and only_unknown.last_diff is None


def test_a_sample_that_is_not_quiet_neither_counts_nor_resets() -> None:
    """A fill in flight may be in a sample taken while a bot trades: it never yields an order and
    never counts; but it does not reset either, or bots that trade more often than the quiet time
    would hold a real drift back for ever."""
    dc = check(consecutive=3)
    dc.observe(D("0"), D("0.02"), quiet=True)
    assert dc.observe(D("0"), D("0.05"), quiet=False) is None and dc.streak == 1
    assert dc.last_diff == D("0.05")  # still shown on the console
    assert dc.observe(D("0"), D("0.02"), quiet=True) is None and dc.streak == 2
    for diff in ("0.02", "0", "-0.03", "0.02"):  # however many, whatever they show
        assert dc.observe(D("0"), D(diff), quiet=False) is None
    assert dc.streak == 2
    assert dc.observe(D("0"), D("0.02"), quiet=True) == Correction("SELL", D("0.02"), D("0.02"))
    # Only a quiet sample of another difference starts the streak over.
    dc.observe(D("0"), D("0.02"), quiet=True)
    dc.observe(D("0"), D("0.02"), quiet=True)
    assert dc.observe(D("0"), D("0.03"), quiet=True) is None and dc.streak == 1
    assert dc.observe(D("0"), D("0"), quiet=True) is None and dc.streak == 0  # in sync: over


def test_small_diff_is_no_drift() -> None:
    dc = check(consecutive=2)
    dc.observe(D("0"), D("0.02"), quiet=True)
    assert dc.observe(D("0.02"), D("0.0205"), quiet=True) is None and dc.streak == 0
    for _ in range(10):
        assert dc.observe(D("0"), D("0"), quiet=True) is None
    assert dc.streak == 0 and dc.last_diff == 0


def test_cap_and_rounding_down_to_the_size_step() -> None:
    dc = check(consecutive=1, max_order="0.1")
    assert dc.observe(D("0"), D("-3.7"), quiet=True) == Correction("BUY", D("0.1"), D("-3.7"))
    dc.max_order = D("0.123456789")  # hot-reloaded adjust_max_size, finer than the size step
    corr = dc.observe(D("0"), D("1"), quiet=True)
    assert corr is not None and corr.size == D("0.12345678")
    tiny_cap = DriftCheck(min_size=D("0.001"), consecutive=1, max_order=D("0.0005"))
    assert tiny_cap.observe(D("0"), D("1"), quiet=True) is None  # nothing sendable below the minimum


def test_float_noise_does_not_break_identical_diffs() -> None:
    dc = check(consecutive=2)
    dc.observe(D(repr(0.1 + 0.2)), D("0.4"), quiet=True)  # expected 0.30000000000000004
    corr = dc.observe(D("0.3"), D("0.4"), quiet=True)
    assert corr == Correction("SELL", D("0.1"), D("0.1"))


def test_invalid_consecutive() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        DriftCheck(min_size=D("0.001"), consecutive=0, max_order=D("0.1"))


async def test_the_drift_loop_survives_a_failing_round_and_logs_it_once(caplog: pytest.LogCaptureFixture) -> None:
    """A round that raises neither ends the loop nor fills the log: one traceback per new error,
    one line when it works again, and the loop stops when told."""
    import asyncio
    import logging

    from bfsx.account.drift import run_drift_loop

    outcomes = [ValueError, ValueError, ValueError, None, KeyError, None, None]
    rounds = 0

    async def one_round() -> None:
        nonlocal rounds
        rounds += 1
        err = outcomes[rounds - 1]
        if err is not None:
            raise err("boom")

    log = logging.getLogger("test.drift")
    with caplog.at_level(logging.INFO, logger="test.drift"):
        await asyncio.wait_for(
            run_drift_loop(lambda: 0.0, one_round, log=log, what="drift check", running=lambda: rounds < len(outcomes)),
            5,
        )
    assert rounds == len(outcomes)
    failed = [r for r in caplog.records if r.getMessage() == "drift check failed"]
    assert [r.exc_info[0] for r in failed if r.exc_info] == [ValueError, KeyError]  # not three ValueErrors
    assert [r.getMessage() for r in caplog.records].count("drift check works again") == 2


def test_reset_needs_the_full_streak_again_and_sent_counts_each() -> None:
    """Found by mutating ``reset`` / ``sent``: after a failed correction the caller resets, and
    the next order needs ``consecutive`` identical diffs again; every sent order is counted."""
    dc = check(consecutive=3)
    dc.observe(D("0"), D("0.02"), quiet=True)
    dc.observe(D("0"), D("0.02"), quiet=True)
    dc.reset()
    assert dc.streak == 0
    assert dc.observe(D("0"), D("0.02"), quiet=True) is None and dc.streak == 1
    assert dc.observe(D("0"), D("0.02"), quiet=True) is None
    assert dc.observe(D("0"), D("0.02"), quiet=True) is not None
    dc.sent()
    dc.sent()
    assert dc.corrections == 2


def test_a_diff_of_exactly_the_minimum_size_is_corrected() -> None:
    """Found by mutating ``observe``'s bounds: the minimum order size itself is a drift, and the
    correction of that size goes out (< not <=)."""
    dc = check(consecutive=2)
    assert dc.observe(D("0"), D("-0.001"), quiet=True) is None
    assert dc.observe(D("0"), D("-0.001"), quiet=True) == Correction("BUY", D("0.001"), D("-0.001"))


@pytest.mark.parametrize("consecutive", [1, 3])
def test_a_refused_correction_is_sent_again_on_the_next_identical_quiet_diff(consecutive: int) -> None:
    """An order the exchange refused never traded: the next sample of the same drift yields it
    again; a sample that is not quiet, or of another drift, needs a new streak."""
    dc = check(consecutive=consecutive)
    for _ in range(consecutive - 1):
        dc.observe(D("0"), D("0.02"), quiet=True)
    assert dc.observe(D("0"), D("0.02"), quiet=True) == Correction("SELL", D("0.02"), D("0.02"))
    dc.refused()
    assert dc.observe(D("0"), D("0.02"), quiet=True) == Correction("SELL", D("0.02"), D("0.02"))
    dc.refused()
    assert dc.observe(D("0"), D("0.02"), quiet=False) is None  # not quiet: not sent, evidence kept
    assert dc.observe(D("0"), D("0.02"), quiet=True) == Correction("SELL", D("0.02"), D("0.02"))
    assert dc.observe(D("0"), D("0.02"), quiet=False) is None and dc.streak == 0
    dc.refused()  # the last sample yielded nothing: the streak is not ``consecutive - 1`` again
    dc.observe(D("0"), D("0.02"), quiet=True)
    assert dc.streak == 1 or consecutive == 1
    fresh = check(consecutive=3)
    fresh.refused()  # nothing observed yet: nothing to resend
    assert fresh.streak == 0 and fresh.observe(D("0"), D("0.02"), quiet=True) is None
    moved = check(consecutive=3)
    for _ in range(3):
        moved.observe(D("0"), D("0.02"), quiet=True)
    moved.refused()
    assert moved.observe(D("0"), D("0.03"), quiet=True) is None and moved.streak == 1
