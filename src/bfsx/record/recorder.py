"""The recorder: the public channels of some products, as they arrive, into a :class:`Store`.

:class:`Recorder` owns the subscription (one :class:`~bfsx.bitflyer.realtime.RealtimeClient`:
executions, board snapshots, board diffs and ticker of each product), the receive-time stamp of
each frame (``clock_ns()``, wall clock in ns, read once per frame in the read loop, made strictly
increasing within the session so that merging the products' files by time restores the wire
order), the line encoding, and the connection markers: a ``disconnect`` line when the socket closes (with its close
code) and a ``gap`` line when data flows again (from the last frame before to the first frame or
the resubscription after, whichever comes first). Markers go to every product's file: all share
one socket. The realtime client does the reconnecting (jittered back-off, resubscription).

Per frame the read loop pays: one clock read, one ``orjson.dumps`` of the message, one bytes
format, one non-blocking :meth:`Store.put`. The disk is the writer thread's business.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bfsx.bitflyer import channels
from bfsx.bitflyer.realtime import SILENCE_CLOSE_CODE, RealtimeClient
from bfsx.record import format as fmt
from bfsx.record.store import Store

ClockNs = Callable[[], int]

#: The channels recorded for each product, in subscription order (snapshot before diffs).
CHANNEL_PREFIXES = (channels.BOARD_SNAPSHOT, channels.BOARD, channels.EXECUTIONS, channels.TICKER)
#: A gap's "reason" by close code; any other code is a plain "disconnect".
CLOSE_REASONS = {channels.MAINTENANCE_CLOSE_CODE: "maintenance", SILENCE_CLOSE_CODE: "silence"}


def channels_of(products: Sequence[str]) -> list[str]:
    """Every channel recorded for ``products``."""
    return [prefix + p for p in products for prefix in CHANNEL_PREFIXES]


class Recorder:
    """Records the public channels of ``products`` from ``ws_url`` into ``store``.

    ``silence_s``: a product's board-diff channel silent that long forces a reconnect (0 = off).
    Counters: ``frames`` (received), ``frames_by_product``, ``disconnects``, ``gaps`` (written),
    ``connected``; the store has ``dropped``.
    """

    def __init__(
        self,
        ws_url: str,
        products: Sequence[str],
        store: Store,
        *,
        clock_ns: ClockNs = time.time_ns,
        silence_s: float = 60.0,
        backoff_s: tuple[float, float] = (0.5, 10.0),
        client: RealtimeClient | None = None,
    ) -> None:
        if not products:
            raise ValueError("no product to record")
        self.ws_url = ws_url
        self.products = list(products)
        self.store = store
        self._clock = clock_ns
        watch = {channels.board(p): silence_s for p in self.products} if silence_s > 0 else None
        self.client = client or RealtimeClient(ws_url, silence_timeout=watch, backoff=backoff_s)
        self.frames = 0
        self.frames_by_product: dict[str, int] = dict.fromkeys(self.products, 0)
        self.disconnects = 0
        self.gaps = 0
        self.connected = False
        self.last_close_code: int | None = None
        self._last_frame_ns: int | None = None
        self._last_t = 0  # every line's time: strictly increasing within the session
        self._gap: tuple[int, int | None] | None = None  # open gap: (from_ns, close code)
        for product in self.products:
            for prefix in CHANNEL_PREFIXES:
                channel = prefix + product
                self.client.subscribe(channel, self._handler(channel, product))
        self.client.on_connect(self._on_connect)
        self.client.on_disconnect(self._on_disconnect)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the files, start the writer thread and the connection (returns at once)."""
        t = self._now()
        for product in self.products:
            self.store.touch(product, t)
        self.store.start()
        await self.client.start()

    async def stop(self) -> None:
        """Close the connection, then write everything queued and close the files."""
        await self.client.close()
        await self.store.aclose(self._now())

    # ---- hot path --------------------------------------------------------------------------

    def _handler(self, channel: str, product: str) -> Callable[[Any], None]:
        middle = b',"ch":' + orjson.dumps(channel) + b',"msg":'
        dumps = orjson.dumps
        put = self.store.put
        clock = self._clock
        counts = self.frames_by_product

        def on_message(message: Any) -> None:
            if self._gap is not None:
                self._end_gap(self._now())
            t = clock()
            if t <= self._last_t:  # same nanosecond, or the wall clock stepped back
                t = self._last_t + 1
            self._last_t = t
            self._last_frame_ns = t
            self.frames += 1
            counts[product] += 1
            put(product, t, b'{"t":%d%b%b}\n' % (t, middle, dumps(message)))

        return on_message

    # ---- connection markers ----------------------------------------------------------------

    def _now(self) -> int:
        t = self._clock()
        if t <= self._last_t:
            t = self._last_t + 1
        self._last_t = t
        return t

    def _mark(self, t_ns: int, kind: str, **fields: Any) -> None:
        line = fmt.marker_line(t_ns, kind, **fields)
        for product in self.products:
            self.store.put_marker(product, t_ns, line)

    def _on_disconnect(self, code: int | None) -> None:
        t = self._now()
        self.connected = False
        self.disconnects += 1
        self.last_close_code = code
        self._mark(t, fmt.MARK_DISCONNECT, code=code)
        if self._gap is None:
            self._gap = (self._last_frame_ns if self._last_frame_ns is not None else t, code)

    def _on_connect(self, reconnected: bool) -> None:
        self.connected = True
        if self._gap is not None:
            self._end_gap(self._now())

    def _end_gap(self, t_ns: int) -> None:
        gap = self._gap
        if gap is None:
            return
        self._gap = None
        from_ns, code = gap
        self.gaps += 1
        reason = CLOSE_REASONS.get(code or 0, "disconnect")
        self._mark(t_ns, fmt.MARK_GAP, from_ns=from_ns, to_ns=t_ns, code=code, reason=reason)

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counters for the status line and tests."""
        st = self.store
        return {
            "frames": self.frames,
            "dropped": st.dropped,
            "gaps": self.gaps,
            "disconnects": self.disconnects,
            "connected": self.connected,
            "queue_bytes": st.queue_bytes,
            "write_errors": st.write_errors,
            "files": {p: str(path) for p, path in st.paths().items()},
        }
