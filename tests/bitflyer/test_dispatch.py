"""RealtimeClient.dispatch_frame: routing by channel, fan-out, replies, bad frames, failing handlers."""

from __future__ import annotations

from typing import Any

import orjson

from bfsx.bitflyer import channels
from bfsx.bitflyer.realtime import RealtimeClient


def frame(channel: str, message: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "method": "channelMessage",
                         "params": {"channel": channel, "message": message}})


def test_dispatch_routes_by_channel_and_counts() -> None:
    rt = RealtimeClient("ws://127.0.0.1:1/json-rpc")
    got: list[tuple[str, Any]] = []
    ex = channels.executions("FX_BTC_JPY")
    bd = channels.board("FX_BTC_JPY")
    rt.subscribe(ex, lambda m: got.append(("ex", m)))
    rt.subscribe(bd, lambda m: got.append(("bd", m)))
    rt.subscribe(bd, lambda m: got.append(("bd2", m)))  # second handler on one channel
    rt.dispatch_frame(frame(ex, [{"id": 1}]))
    rt.dispatch_frame(frame(bd, {"mid_price": 1}).decode())  # str frames work too
    rt.dispatch_frame(frame(channels.ticker("FX_BTC_JPY"), {}))  # not subscribed: dropped
    assert got == [("ex", [{"id": 1}]), ("bd", {"mid_price": 1}), ("bd2", {"mid_price": 1})]
    assert rt.frames == 3
    assert rt.channels == [ex, bd]


def test_failing_handler_is_counted_and_does_not_stop_dispatch() -> None:
    rt = RealtimeClient("ws://127.0.0.1:1/json-rpc")
    seen: list[int] = []

    def bad(m: Any) -> None:
        raise RuntimeError("strategy bug")

    rt.subscribe("lightning_board_X", bad)
    rt.subscribe("lightning_executions_X", lambda m: seen.append(m))
    for i in range(3):
        rt.dispatch_frame(frame("lightning_board_X", i))
        rt.dispatch_frame(frame("lightning_executions_X", i))
    assert rt.handler_errors == 3
    assert seen == [0, 1, 2]


def test_garbage_and_replies_do_not_raise() -> None:
    rt = RealtimeClient("ws://127.0.0.1:1/json-rpc")
    rt.dispatch_frame(b"not json")
    rt.dispatch_frame(b'{"jsonrpc":"2.0","method":"channelMessage","params":{}}')
    rt.dispatch_frame(b'{"jsonrpc":"2.0","id":99,"result":true}')
    rt.dispatch_frame(b'[{"jsonrpc":"2.0","id":98,"error":{"code":-32602,"message":"invalid channel"}}]')
    rt.dispatch_frame(b"[1, 2]")
    assert rt.frames == 0 and rt.handler_errors == 0


def test_a_peer_sending_garbage_is_counted_not_logged_per_frame(caplog: Any) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="bfsx")
    rt = RealtimeClient("ws://127.0.0.1:1/json-rpc")
    got: list[Any] = []
    ex = channels.executions("FX_BTC_JPY")
    rt.subscribe(ex, got.append)
    for i in range(3000):
        bad = [b"{not json", b'{"method": "channelMessage", "params": 7}',
               b'{"method": "channelMessage", "params": {"channel": [1], "message": 1}}'][i % 3]
        rt.dispatch_frame(bad)
    rt.dispatch_frame(frame(ex, [{"id": 1}]))
    assert rt.malformed_frames == 3000 and got == [[{"id": 1}]]
    warnings = [r for r in caplog.records if "malformed frames so far" in r.getMessage()]
    assert 10 <= len(warnings) <= 13, len(warnings)  # the first ten, then every 1000th
