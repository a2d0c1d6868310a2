"""One journal, one live process (issue 10, item 4): a second bot on the same journal is refused
with one line naming the holder's pid, and a holder killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bfsx.account.journal import Journal, JournalInUse, lock_path
from bfsx.errors import UserError

HOLDER = Path(__file__).with_name("journal_holder.py")


def in_use(path: Path, pid: int) -> str:
    return f"journal {path} is in use by another running bot (pid {pid}); two bots need different bot_name (or log_folder)"


class Holder:
    """journal_holder.py as a child process that holds ``path`` once ``READY``."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HOLDER), str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "READY", (line, self.proc.stderr.read() if self.proc.stderr else "")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for h in started:
        h.stop()


def test_a_second_process_is_refused_and_sigkill_releases_the_lock(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "bot" / "journal.db"
    with Journal(path) as j:
        j.set("who", "first run")
    holder = Holder(path)
    holders.append(holder)
    # A second process: one line naming the holder, exit 2.
    second = subprocess.run([sys.executable, str(HOLDER), str(path)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [in_use(path, holder.pid)]
    # This process too (it is not the holder).
    with pytest.raises(JournalInUse) as info:
        Journal(path)
    assert str(info.value) == in_use(path, holder.pid) and isinstance(info.value, UserError)
    # kill -9: no cleanup code runs, the OS drops the lock with the process.
    holder.kill9()
    with Journal(path) as j:
        assert j.load()[2]["who"] == "first run"
    assert lock_path(path).exists()  # kept on purpose (see _lock): only the flock matters


def test_one_process_cannot_open_a_journal_twice_until_it_closes(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = Journal(path)
    with pytest.raises(JournalInUse, match=f"pid {os.getpid()}"):
        Journal(path)
    first.close()
    with Journal(path):
        pass
    lock = lock_path(path)
    assert lock == tmp_path / "j.db.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_a_dropped_journal_releases_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = Journal(path)
    j._db.close()
    j._checkpointer.stopping = True
    j._checkpointer.wake.set()
    j._checkpointer.join(10)
    del j  # never closed: the lock's file object goes with it
    with Journal(path):
        pass


def test_bfsx_trade_refuses_a_journal_in_use(tmp_path: Path, holders: list[Holder]) -> None:
    (tmp_path / "mm.py").write_text("import bfsx\n\n\nclass MyStrategy(bfsx.Strategy):\n    pass\n")
    (tmp_path / "mm.yaml").write_text("parameters: {}\n")
    (tmp_path / "trade.yaml").write_text(
        "apikey: k\nsecret: s\nendpoint: http://127.0.0.1:9\nws_endpoint: ws://127.0.0.1:9/json-rpc\n"
        "strategy_py: mm.py\nstrategy_yaml: mm.yaml\nbot_name: b1\nlog_folder: logs/b1\nconsole_output: false\n")
    holder = Holder(tmp_path / "logs" / "b1" / "journal.db")
    holders.append(holder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
    r = subprocess.run([sys.executable, "-m", "bfsx.cli", "trade", "trade.yaml"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"bfsx trade: {in_use(Path('logs/b1/journal.db'), holder.pid)}"]
