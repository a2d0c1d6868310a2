"""The wire layer: signing vectors (docs/bitflyer.md#signing), ids, timestamps, channel names, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from bfsx import clock
from bfsx.bitflyer import auth, channels, errors, ids, limits, products, timestamps

SECRET = "AKHZlv3PoAXZ0KXIKIVKOmS4ji3rV7ZIVIJRstwyplaw0FQ4"
TS = "2085848896000"


def test_rest_get_vector() -> None:
    sig = auth.rest_signature(SECRET, TS, "GET", "/v1/me/getchildorders?product_code=FX_BTC_JPY&child_order_state=ACTIVE")
    assert sig == "7413e237eee917f1a2a276f6d1553a82fc8ca7b1b3353ff02a070b5e3c3deda5"


def test_rest_post_vector() -> None:
    body = json.dumps({"product_code": "FX_BTC_JPY", "child_order_type": "MARKET", "side": "BUY", "size": 0.01})
    sig = auth.rest_signature(SECRET, TS, "POST", "/v1/me/sendchildorder", body)
    assert sig == "0e391462aad928c8152201a8854b095f084d1b9f6bd9c0d9b8b026c9963711b4"
    assert auth.verify_rest(SECRET, TS, "POST", "/v1/me/sendchildorder", body.encode(), sig)
    assert not auth.verify_rest(SECRET, TS, "POST", "/v1/me/sendchildorder", body.encode() + b" ", sig)


def test_ws_vector() -> None:
    p = auth.ws_auth_params("key", SECRET, int(TS), "d73b41172d6deca2285e8e58533db082")
    assert p["signature"] == "f47526dec80c4773815fb1121058c2e3bcc531d1224b683e8babf76e52b0ba9c"
    assert auth.verify_ws(SECRET, p["timestamp"], p["nonce"], p["signature"])
    fresh = auth.ws_auth_params("key", SECRET)
    assert len(fresh["nonce"]) == 32 and len(str(fresh["timestamp"])) == 13


def test_ids() -> None:
    when = datetime(2023, 5, 25, 8, 2, 46, tzinfo=UTC)
    assert ids.acceptance_id(when, 59340) == "JRF20230525-080246-059340"
    assert ids.child_order_id(when, 33442, fx=True) == "JFX20230525-080246-033442F"
    assert ids.child_order_id(when, 22523, fx=False) == "JOR20230525-080246-022523"
    assert ids.ACCEPTANCE_RE.match(ids.acceptance_id(when, 1_234_567))
    assert ids.CHILD_ORDER_RE.match(ids.child_order_id(when, 1, fx=True))


def test_timestamps_roundtrip() -> None:
    when = datetime(2026, 9, 23, 3, 31, 27, 87322, tzinfo=UTC)
    assert timestamps.ws(when) == "2026-09-23T03:31:27.0873220Z"
    assert timestamps.rest_ms(when) == "2026-09-23T03:31:27.087"
    assert timestamps.rest_ms(when.replace(microsecond=760000)) == "2026-09-23T03:31:27.76"
    assert timestamps.rest_seconds(when) == "2026-09-23T03:31:27"
    assert timestamps.parse("2026-09-23T03:31:27.0873222Z") == when.replace(microsecond=87322)
    assert timestamps.parse("2015-07-08T02:43:34.823") == datetime(2015, 7, 8, 2, 43, 34, 823000, tzinfo=UTC)
    assert timestamps.parse("2023-05-25T08:02:46") == datetime(2023, 5, 25, 8, 2, 46, tzinfo=UTC)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(epoch_us=st.integers(0, 4_102_444_800_000_000), offset_min=st.integers(-14 * 60, 14 * 60))
def test_cached_stamps_equal_strftime_in_any_zone(epoch_us: int, offset_min: int) -> None:
    """The per-second and per-datetime caches give what strftime gives, for any instant and zone
    (and the same instant met again through another zone's datetime)."""
    zone = timezone(timedelta(minutes=offset_min))
    when = datetime.fromtimestamp(epoch_us / 1e6, UTC).astimezone(zone)
    utc = when.astimezone(UTC)
    for _ in range(2):  # the second round is served by the caches
        assert ids.acceptance_id(when, 7) == f"JRF{utc.strftime('%Y%m%d-%H%M%S')}-000007"
        assert timestamps.ws(when) == utc.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
        assert timestamps.rest_seconds(when) == utc.strftime("%Y-%m-%dT%H:%M:%S")
        assert timestamps.rest_ms(when).startswith(utc.strftime("%Y-%m-%dT%H:%M:%S"))
        when = utc


def test_an_absent_date_is_the_clock_s_time_even_a_virtual_one() -> None:
    """A fill or event without a date is stamped with bfsx.clock: the replay's time in a backtest,
    never the wall clock (a backtest of January must not see December)."""
    vc = clock.VirtualClock(1_767_571_200.0)  # 2026-01-05T00:00:00Z
    with clock.install(vc):
        vc.advance_to(11.5)
        assert timestamps.parse_epoch(None) == timestamps.parse_epoch("") == timestamps.parse_epoch("garbage")
        assert timestamps.parse_epoch(None) == 1_767_571_210.5
        assert timestamps.now() == datetime(2026, 1, 5, 0, 0, 10, 500000, tzinfo=UTC)


def test_channels_split() -> None:
    assert channels.split("lightning_board_snapshot_FX_BTC_JPY") == (channels.BOARD_SNAPSHOT, "FX_BTC_JPY")
    assert channels.split("lightning_board_FX_BTC_JPY") == (channels.BOARD, "FX_BTC_JPY")
    assert channels.split("child_order_events") == ("child_order_events", "")
    assert channels.split("nope") == ("", "")


def test_products_and_errors() -> None:
    assert products.product_spec("fx_btc_jpy").is_fx
    assert not products.product_spec("BTC_JPY").is_fx
    assert products.get_product("NOPE") is None
    e = errors.api_error(-208, "Order is not accepted.", 500, "/v1/me/sendchildorder")
    assert isinstance(e, errors.OverloadError) and e.status == -208
    assert errors.error_body(errors.MIN_SIZE, min_size="0.001")["error_message"].endswith("0.001 BTC.")


def test_limit_headers() -> None:
    r = limits.LimitReading(remaining=499, period=300, reset=1674714614)
    assert limits.read_private(limits.headers_for(r)) == r
    assert limits.read_orders(limits.headers_for(r, order=True)) == r
    assert limits.read_orders(limits.headers_for(r)) is None
