"""``bfsx record``: the public feed of some products, recorded to compressed daily files.

``recorder`` (the websocket side: subscription, receive times, gap markers), ``store`` (the bounded
queue, the writer thread, the day files, rotation and retention), ``reader`` (records back, for
tests and the backtest), ``format`` (names and numbers of the file format, docs/recording.md),
``command`` (the ``bfsx record`` command: config, status line, signals).
"""

from bfsx.record.format import Drop, Frame, Gap, Marker, Record, jst_day, recording_files
from bfsx.record.reader import read_recording, read_recordings
from bfsx.record.recorder import Recorder
from bfsx.record.store import DayFiles, Store

__all__ = [
    "DayFiles",
    "Drop",
    "Frame",
    "Gap",
    "Marker",
    "Record",
    "Recorder",
    "Store",
    "jst_day",
    "read_recording",
    "read_recordings",
    "recording_files",
]
