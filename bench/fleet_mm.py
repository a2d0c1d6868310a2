"""Ten copies of the shipped ``mm_spread`` sample on one account, at default settings, for 10 minutes.

The shared API budget's acceptance run: real processes — a ``bfsx sim`` with bitFlyer's limits,
a ``bfsx pos-server`` and N ``bfsx trade`` bots, each in its own folder with the unchanged sample
yaml (so the default ``bot_name`` differs by folder), every key at its default except the account,
the endpoints and the position server's address and secret. At the end it reports the simulator's
``limits_refused`` for the account (the target is all zeros: no bot was ever answered -1), each
bot's fills and orders from its journal, and whether every bot exited 0 with nothing left open.

Run: ``python -m bench.fleet_mm [--bots 10] [--minutes 10]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.lease import API_SECRET, KEY, _get, _start_sim
from bfsx.net import free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = "fleet-mm-bench-secret-5b8e71"


def _trade_yaml(folder: Path, url: str, pos_port: int) -> Path:
    path = folder / "trade.yaml"
    path.write_text(yaml.safe_dump({
        "apikey": KEY, "secret": API_SECRET, "endpoint": url, "ws_endpoint": url.replace("http", "ws") + "/json-rpc",
        "pos_server": ["127.0.0.1", pos_port], "pos_server_secret": SECRET, "console_output": False,
    }))
    return path


def _journal_counts(folder: Path) -> tuple[int, int]:
    """(fills, orders) in the one journal under this bot's folder."""
    dbs = list(folder.glob("logs/*/journal.db"))
    if not dbs:
        return 0, 0
    db = sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True)
    try:
        return (db.execute("SELECT COUNT(*) FROM fills").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
    finally:
        db.close()


def run(bots: int, minutes: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sim, url = _start_sim(work / "sim", {})
        procs: list[subprocess.Popen[bytes]] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
        env["BFSX_CONFIG_HOME"] = str(work / "config")
        try:
            pos_port = free_port()
            server_dir = work / "server"
            server_dir.mkdir()
            server = subprocess.Popen(
                [sys.executable, "-m", "bfsx.cli", "pos-server", str(_trade_yaml(server_dir, url, pos_port))],
                cwd=server_dir, stdout=subprocess.DEVNULL, stderr=open(server_dir / "stderr.txt", "wb"),  # noqa: SIM115
                env=env,
            )
            time.sleep(2.0)
            folders = []
            for n in range(bots):
                d = work / f"copy{n}"
                d.mkdir()
                (d / "mm.yaml").write_text((ROOT / "strategies" / "mm_spread.yaml").read_text())
                _trade_yaml(d, url, pos_port)
                folders.append(d)
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bfsx.cli", "trade", "trade.yaml", str(ROOT / "strategies" / "mm_spread.py"),
                     "mm.yaml"], cwd=d, stdout=subprocess.DEVNULL, stderr=open(d / "stderr.txt", "wb"), env=env,  # noqa: SIM115
                ))
            started = time.monotonic()
            while time.monotonic() - started < minutes * 60:
                time.sleep(5)
                dead = [i for i, p in enumerate(procs) if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"bot(s) {dead} exited early: "
                                       f"{(folders[dead[0]] / 'stderr.txt').read_text()[-400:]}")
            for p in procs:
                p.send_signal(signal.SIGTERM)
            codes = [p.wait(60) for p in procs]
            state = _get(f"{url}/_sim/state")
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            counts = [_journal_counts(d) for d in folders]
            return {
                "bots": bots, "minutes": minutes, "exit_codes": codes,
                "limits_refused": state.get("limits_refused", {}).get(KEY),
                "fills": [c[0] for c in counts], "orders": [c[1] for c in counts],
                "open_orders_left": len(state["accounts"][KEY]["open_orders"]),
            }
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            sim.terminate()
            sim.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bots", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args()
    r = run(args.bots, args.minutes)
    print(f"{r['bots']} x mm_spread for {r['minutes']:g} min: limits_refused {r['limits_refused']}; "
          f"fills per bot {r['fills']} (total {sum(r['fills'])}); orders per bot {r['orders']}; "
          f"exit codes {r['exit_codes']}; open orders left {r['open_orders_left']}")


if __name__ == "__main__":
    main()
