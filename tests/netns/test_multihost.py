"""Several hosts, really (issue 13 item 1): the simulator, the position server and two bots in four
network namespaces behind a router (tests/netns/conftest.py), with a secret off loopback, over a
link made bad on purpose.

Timeline (wall time, every wait bounded; about 40 s in all on 2 cores):

1. clean link: both bots join the server and quote;
2. bad link, ~20 s: 5 % loss each hop (nftables), 40 ± 20 ms each way, 10 % of UDP datagrams
   duplicated and 10 % held back 250 ms (relay), bot2's line limited to 4 Mbit/s (tbf); 2 s in,
   a 0.02 BTC market order nobody's bot placed (the position server must correct it once);
3. the position server's host cut off from everything (``Net.cut``: the router drops what goes to
   it and refuses what comes from it) until it has evicted both bots, then three times ``evict_after`` more —
   longer than the eviction time, and until each bot placed an order — then healed, the link clean
   again. The bots keep trading on their own budget meanwhile (one the server had just asked to
   step aside for its correction first waits out ``STEP_ASIDE_WAIT_S``); the server, blind to the
   exchange, must not correct anything;
4. the server settles; then it stops, the bots stop (each cancels its orders), and we compare.

Checked at the end: invariant 1 (Σ bots' journal positions + base_position == the simulator's
position), exactly one correction (the hand trade's, opposite side, same size: never twice; a
correcting order refused as a self trade against the bots' own quotes is retried, not counted), no
over-limit refusal on any key (``limits_refused`` all zeros), each bot placed orders while the link
was bad and while the server was unreachable and got fills in that time, the relay really
duplicated / reordered and nftables really dropped, and the server refused the duplicates and the
overtaken reports as replays without a single bad signature.

The bots run the sample ``strategies/mm_spread.py`` with its sample parameters (quotes kept 8 s
instead of 5), on a simulator whose spread (400 JPY) lets it quote: together 55 to 75 small orders
a minute, under the account's 100 / min even without the server's account-wide view. At three
times that rate the bots run the bucket down to its last two orders, and in trial runs two things
each pushed it over: the hand trade (an order no budget sees) and the cut (each bot falling back
to its own budget, unaware of the other's orders). Over-limit answers, the penalty, and the
server's correction refused until the window rolled: the budget leases of the issue "the position
server as the account's authority" are for that.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from bfsx.posserver.controls import STEP_ASIDE_WAIT_S

REPO = Path(__file__).resolve().parents[2]
FX = "FX_BTC_JPY"
KEY, KEY_SECRET = "demo-key-1", "demo-secret-1"
SECRET = "netns-test-secret-8c1f0b7e2a9d4c6f"  # >= 16 characters: required off loopback
EVICT_AFTER = 3.0
CHECK_INTERVAL = 1.0
CONSECUTIVE = 3
HAND_SIZE = Decimal("0.02")
BAD_SECONDS = 20.0


def wait(cond: Any, timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except RuntimeError as e:  # a probe that could not reach its target yet
            last_error = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")


def _yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _configs(net: Any) -> dict[str, Path]:
    folder, leaves, sim_port, pos_port = net.folder, net.leaves, net.sim_port, net.pos_port
    sim = _yaml(folder / "sim.yaml", {"market": {
        "taker_rate": 0.6, "taker_size_mean": 0.02, "half_spread": 200, "noise": 1e-5, "volatility": 5e-6, "jump_probability": 0.0,
        "snapshot_interval": 1.0, "ticker_interval": 0.5}})
    strategy = _yaml(folder / "mm.yaml", {
        "parameters": {"interval": 1.0, "lot": 0.01, "max_position": 0.05, "min_spread": 300, "skew": 200,
                       "tolerance": 500, "stale_after": 8.0, "api_floor": 100},
        "close_position": False, "no_trade": [], "subscribe": {"executions": True, "board": True, "ticker": False},
        "minute_to_expire": 10, "log_level": "INFO",
        "max_order_size": 0.05, "max_position": 0.2, "price_band": 0.05, "max_orders_per_second": 10,
    })
    timing = {"pos_server_secret": SECRET, "pos_server_check_interval": CHECK_INTERVAL,
              "pos_server_consecutive": CONSECUTIVE, "pos_server_evict_after": EVICT_AFTER,
              "pos_server_report_interval": 0.25, "pos_server_query_interval": 0.5, "adjust_max_size": 0.05}
    pos_addr, pos_gw = leaves["pos"].addr, leaves["pos"].gw
    out = {"sim": sim, "pos": _yaml(folder / "pos" / "trade.yaml", {
        "apikey": KEY, "secret": KEY_SECRET, "endpoint": f"http://{pos_gw}:{sim_port}",
        "pos_server": [pos_addr, pos_port], "pos_server_bind": pos_addr, **timing,
        # The hand trade's side depends on a self trade, and so whether it adds or removes
        # exposure: correct it whatever it does (the reduce-only rule has its own tests).
        "pos_server_correct_all": True,
        "console_output": False, "log_folder": str(folder / "pos" / "logs" / "x"), "log_level": "INFO"})}
    for role in ("bot1", "bot2"):
        gw = leaves[role].gw
        out[role] = _yaml(folder / role / "trade.yaml", {
            "apikey": KEY, "secret": KEY_SECRET, "product": FX,
            "endpoint": f"http://{gw}:{sim_port}", "ws_endpoint": f"ws://{gw}:{sim_port}/json-rpc",
            "pos_server": [gw, pos_port], **timing, "bot_name": role, "base_position": 0,
            "strategy_py": str(REPO / "strategies" / "mm_spread.py"), "strategy_yaml": str(strategy),
            "console_output": False, "log_folder": str(folder / role / "logs"), "health_interval": 1.0,
            "ws_silence_timeout": 10, "status_interval": 5})
    return out


def _journal(folder: Path) -> tuple[list[tuple[str, float, float]], list[float]]:
    """(fills as (side, size, time), order creation times) of one bot's journal; read only (never
    creates the file), empty before the bot made it."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{folder / 'journal.db'}?mode=ro", uri=True)) as db:
            fills = [(str(s), float(z), float(t)) for s, z, t in db.execute("SELECT side, size, time FROM fills")]
            orders = [float(c) for (c,) in db.execute("SELECT created FROM orders")]
    except sqlite3.OperationalError:  # not there yet
        return [], []
    return fills, orders


def _between(times: list[float], start: float, end: float) -> int:
    return sum(1 for t in times if start <= t < end)


def _fx(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((m for m in status["markets"] if m["market"] == FX), None)


def _hand_trade(sim: Any, sim_url: str) -> str:
    """A market order on the bots' account that no bot knows. The bots quote on the same account,
    so it may be refused as a self trade (-159), as on bitFlyer: then the other side, or again."""
    last = ""
    for attempt in range(75):
        side = "BUY" if attempt % 2 == 0 else "SELL"
        try:
            sim.ask(f"trade {sim_url} {FX} {side} {HAND_SIZE}")
            return side
        except RuntimeError as e:
            last = str(e)
            time.sleep(0.2)
    raise AssertionError(f"the hand trade was refused every time: {last}")


@pytest.mark.timeout(180)
def test_bots_on_other_hosts_survive_a_bad_link_and_a_cut_longer_than_eviction(net: Any) -> None:
    t_begin = time.monotonic()
    cfg = _configs(net)
    sim_addr, pos_addr = net.leaves["sim"].addr, net.leaves["pos"].addr
    sim_url = f"http://{sim_addr}:{net.sim_port}"
    net.start_relay()
    sim_proc = net.bfsx("sim", "sim", "sim", "--host", sim_addr, "--port", str(net.sim_port),
                        "--seed", "5", "--quiet", "--config", str(cfg["sim"]))
    sim = net.probe("sim", env={"BFSX_APIKEY": KEY, "BFSX_SECRET": KEY_SECRET})
    wait(lambda: sim.ask(f"state {sim_url}"), 30, "the simulator")
    server = net.bfsx("pos", "pos_server", "pos-server", str(cfg["pos"]))
    pos = net.probe("pos", env={"BFSX_POS_SERVER_SECRET": SECRET})
    status_cmd = f"status {pos_addr} {net.pos_port}"
    wait(lambda: pos.ask(status_cmd), 30, "the position server")
    bots = {role: net.bfsx(role, role, "trade", str(cfg[role])) for role in ("bot1", "bot2")}

    def status() -> dict[str, Any]:
        for name, proc in [("sim", sim_proc), ("pos_server", server), *bots.items()]:
            assert proc.poll() is None, f"{name} exited {proc.returncode}: {net.output(name)[-3000:]}"
        st: dict[str, Any] = pos.ask(status_cmd)
        return st

    # 1. clean link: both bots report and quote
    wait(lambda: {b["id"] for b in status()["bots"]} == {"bot1", "bot2"}, 60, "both bots joined")
    wait(lambda: all(_journal(net.folder / r / "logs")[1] for r in bots), 30, "both bots quoting")

    # 2. the bad link
    bad_from = time.time()
    net.loss(5)
    net.impair(delay_ms=40, jitter_ms=20, duplicate_pct=10, reorder_pct=10, reorder_ms=250)
    net.rate("bot2", "4mbit")
    time.sleep(2)
    hand_side = _hand_trade(sim, sim_url)
    deadline = time.monotonic() + BAD_SECONDS - 2
    while_bad = []
    while time.monotonic() < deadline:
        while_bad.append(status())  # every process still up
        time.sleep(1)
    bad_to = time.time()
    dropped = net.dropped()
    relay_bad = net.relay_counters()

    # 3. the position server's host cut off for longer than the eviction time, then healed
    evictions_before = status()["counters"]["evictions"]
    cut_from = time.time()
    net.cut("pos")
    server_log = net.folder / "pos" / "logs" / "pos_server" / "pos_server.log"
    wait(lambda: server_log.read_text().count("evicted after") >= 2 + evictions_before, 20,
         "both bots evicted while the server is cut off", every=0.2)
    time.sleep(3 * EVICT_AFTER)  # > stale_after: every bot requotes at least once while cut off
    # ... unless the server had just asked it to step aside for a correction (a self trade): it
    # does so until STEP_ASIDE_WAIT_S after it last heard the server, then trades on its own budget.
    wait(lambda: all(_between(_journal(net.folder / r / "logs")[1], cut_from, time.time()) for r in bots),
         STEP_ASIDE_WAIT_S + 10, "each bot placing orders while the server is cut off", every=0.2)
    net.heal("pos")
    cut_to = time.time()
    net.loss(0)
    net.impair()
    net.rate("bot2", None)

    # 4. settle: both bots back, the hand trade corrected, the server agreeing with the exchange
    def settled() -> dict[str, Any] | None:
        st = status()
        fx = _fx(st)
        ok = ({b["id"] for b in st["bots"]} == {"bot1", "bot2"} and fx is not None and fx["diff"] == 0
              and st["counters"]["corrections"] >= 1 and fx["last_check"] > cut_to + CHECK_INTERVAL)
        return st if ok else None

    wait(settled, 40, "the server settled after the cut (bots back, hand trade corrected)")
    final_status = status()
    assert net.stop(server) == 0, net.output("pos_server")[-3000:]
    codes = {role: net.stop(proc) for role, proc in bots.items()}
    state = sim.ask(f"state {sim_url}")
    duration = time.monotonic() - t_begin

    # ------------------------------------------------------------------ the verdict
    acct = state["accounts"][KEY]
    exchange = Decimal(repr(acct["positions"][FX]["net"]))
    journals = {role: _journal(net.folder / role / "logs") for role in bots}
    positions = {role: sum((Decimal(repr(z)) * (1 if s == "BUY" else -1) for s, z, _ in fills), Decimal(0))
                 for role, (fills, _) in journals.items()}
    log_text = server_log.read_text()
    corrections = [line for line in log_text.splitlines() if "correcting order" in line and "accepted" in line]
    summary = {
        "duration_s": round(duration, 1), "exit_codes": codes, "exchange": str(exchange),
        "positions": {r: str(p) for r, p in positions.items()},
        "fills": {r: len(f) for r, (f, _) in journals.items()},
        "fills_while_bad": {r: _between([t for _, _, t in f], bad_from, bad_to) for r, (f, _) in journals.items()},
        "orders_while_bad": {r: _between(o, bad_from, bad_to) for r, (_, o) in journals.items()},
        "orders_while_cut": {r: _between(o, cut_from, cut_to) for r, (_, o) in journals.items()},
        "cut_s": round(cut_to - cut_from, 1), "corrections": corrections, "counters": final_status["counters"],
        "limits_refused": state["limits_refused"], "nft_dropped": dropped, "relay": relay_bad,
    }
    print(f"\nnetns summary: {json.dumps(summary)}")
    detail = json.dumps(summary, indent=1)

    assert codes == {"bot1": 0, "bot2": 0}, detail
    assert not acct["open_orders"], f"orders left on the account: {acct['open_orders']}"
    # invariant 1: exchange = Σ bots + base_position (0 on FX)
    assert exchange == sum(positions.values()), detail
    # one drift (the hand trade), one correction: never twice, never the other way
    assert final_status["counters"]["corrections"] == 1 == len(corrections), detail
    fix_side = "SELL" if hand_side == "BUY" else "BUY"
    words = corrections[0].split("correcting order ", 1)[1].split()
    assert (words[0], Decimal(words[1])) == (fix_side, HAND_SIZE), detail
    # ... and none while the server was cut off (log times are local, as time.time() reads them; a
    # request already on its way when the cut began may still land in its first second)
    fixed_at = datetime.strptime(corrections[0][:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    assert not cut_from + 1 <= fixed_at <= cut_to, detail
    # A correcting order may be refused as a self trade (-159) while the bots quote the other side
    # on the same account (the streak starts over and it is sent again); never over a limit.
    failed = [line for line in log_text.splitlines() if "correcting order" in line and "failed" in line]
    assert all("-159" in line for line in failed), failed
    # no over-limit answer, on any key or address
    assert all(v == 0 for row in state["limits_refused"].values() for v in row.values()), detail
    assert "Over API limit" not in "".join(net.output(r) + (net.folder / r / "logs" / f"{r}.log").read_text()
                                           for r in bots), "a bot was answered over the limit"
    # the bots kept trading while the link was bad, and while the server was unreachable
    for role, (fills, _) in journals.items():
        assert summary["orders_while_bad"][role] > 0 and summary["orders_while_cut"][role] > 0, detail
        assert _between([t for _, _, t in fills], bad_from, cut_to) > 0, detail
    # the impairments really happened, and the server took the duplicates as replays
    assert dropped > 0 and relay_bad.get("udp_up_duplicated", 0) > 0 and relay_bad.get("udp_up_reordered", 0) > 0, detail
    assert final_status["counters"]["replay"] > 0 and final_status["counters"]["bad_signature"] == 0, detail
    assert final_status["counters"]["evictions"] >= 2, detail
    # a duplicated datagram is a replay of the same sender, never a second bot on the same id; the
    # failed exchange requests of the cut are unknown data, not failed checks
    assert final_status["counters"]["duplicates"] == 0 and final_status["counters"]["check_errors"] == 0, detail
    assert summary["cut_s"] > EVICT_AFTER
    # Budget leases (issue "the position server as the account's authority"), once the server has
    # them: granted to both bots all along the bad link, so the orders above came from leases.
    if "leases" in final_status:
        grants = [st["leases"]["grants"] for st in while_bad]
        assert grants[-1] > grants[0] and min(st["leases"]["live"] for st in while_bad) == 2, detail
