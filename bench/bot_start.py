"""Bot start: seconds from ``bfsx trade`` launch to "trading", and resident memory then.

Starts a simulator process on loopback, then ``--runs`` times a bot process (``python -m bfsx.cli
trade`` with the sample ``mm_spread`` strategy, no position server, no charts) and reads: the time
until its log says it is trading, its RSS at that moment (``/proc/PID/status``), and which optional
reporting libraries it imported (matplotlib, PIL, influxdb must not be: a bot without charts does
not pay for them). Prints the median and the range.

``--src DIR`` runs another checkout's ``src`` (``PYTHONPATH``) to compare before / after a change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bfsx.net import free_port

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("matplotlib", "PIL", "influxdb")

_PROBE = """
import atexit, sys
def _mods():
    with open(sys.argv[-1] + ".mods", "w") as f:
        f.write(" ".join(m for m in {opt!r} if m in sys.modules))
import bfsx.bot.runtime as rt
_orig = rt.BotRuntime.run
async def run(self):
    _mods()
    return await _orig(self)
rt.BotRuntime.run = run
from bfsx.cli import main
sys.exit(main(["trade", *sys.argv[1:-1]]))
"""


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run(runs: int, src: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "bfsx.cli", "sim", "--port", str(port), "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # "REST ... realtime ..." once listening
        seconds: list[float] = []
        rss: list[int] = []
        mods: set[str] = set()
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(runs):
                folder = Path(tmp) / f"bot{n}"
                folder.mkdir()
                trade = folder / "trade.yaml"
                trade.write_text(
                    f"apikey: demo-key-1\nsecret: demo-secret-1\nendpoint: http://127.0.0.1:{port}\n"
                    f"ws_endpoint: ws://127.0.0.1:{port}/json-rpc\nlog_folder: {folder}/logs\n"
                    f"console_output: false\nbot_name: start{n}\n"
                )
                probe = folder / "probe"
                # Only the sample's parameters: a checkout from before a strategy-yaml key existed
                # (a --src comparison) must read the same file.
                sample = yaml.safe_load((REPO / "strategies" / "mm_spread.yaml").read_text())
                strategy_yaml = folder / "mm_spread.yaml"
                strategy_yaml.write_text(yaml.safe_dump({"parameters": sample["parameters"]}))
                args = [str(trade), str(REPO / "strategies" / "mm_spread.py"), str(strategy_yaml)]
                started = time.monotonic()
                bot = subprocess.Popen(
                    [sys.executable, "-c", _PROBE.format(opt=OPTIONAL), *args, str(probe)],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                log = folder / "logs"
                deadline = started + 60
                while time.monotonic() < deadline:
                    text = "".join(p.read_text(errors="replace") for p in log.glob("*.log")) if log.exists() else ""
                    if " trading FX_BTC_JPY" in text:
                        break
                    time.sleep(0.01)
                else:
                    bot.kill()
                    raise RuntimeError("the bot did not start within 60 s")
                seconds.append(time.monotonic() - started)
                rss.append(_rss_kb(bot.pid))
                mods.update(Path(f"{probe}.mods").read_text().split())
                bot.terminate()
                bot.wait(30)
    finally:
        sim.terminate()
        sim.wait(30)
    return {
        "start_s_median": statistics.median(seconds), "start_s_min": min(seconds), "start_s_max": max(seconds),
        "rss_mb_median": statistics.median(rss) / 1024, "rss_mb_min": min(rss) / 1024, "rss_mb_max": max(rss) / 1024,
        "optional_imported": len(mods), "optional": " ".join(sorted(mods)) or "none",  # type: ignore[dict-item]
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--src", type=Path, default=None, help="another checkout's src/ to measure instead")
    args = ap.parse_args()
    r = run(args.runs, args.src)
    print(f"bot start over {args.runs} runs: {r['start_s_median']:.3f} s median "
          f"({r['start_s_min']:.3f}-{r['start_s_max']:.3f}); RSS {r['rss_mb_median']:.1f} MB median "
          f"({r['rss_mb_min']:.1f}-{r['rss_mb_max']:.1f}); optional reporting libraries imported: {r['optional']}")


if __name__ == "__main__":
    main()
