"""Several hosts on one machine: network namespaces joined by veth pairs, a router that relays.

``net`` (the fixture) builds, under a unique prefix ``bfsxnt-<pid>-<hex>-``::

                        ┌────────────── router ns (relay.py, nftables) ──────────────┐
     bot1 ns            │ r-b1 10.77.3.1                        r-sim 10.77.1.1 (+.11 .13 .14)
     10.77.3.2 ─────────┤                                                            ├───── sim ns 10.77.1.2
     bot2 ns            │ r-b2 10.77.4.1                        r-pos 10.77.2.1 (+.13 .14)   (bfsx sim :8787)
     10.77.4.2 ─────────┤                                                            ├───── pos ns 10.77.2.2
                        └────────────────────────────────────────────────────────────┘     (bfsx pos-server :51000)

Every leaf has one veth to the router and knows only its own /24: it cannot reach another leaf
except through an address of the router, where ``relay.py`` listens and forwards (ip_forward stays
off in the router, so no packet bypasses the relay). A bot's ``endpoint`` is ``http://<its
router address>:8787`` and its ``pos_server`` ``[<its router address>, 51000]``; the server's
``endpoint`` is ``http://10.77.2.1:8787``. The relay opens each upstream connection from a
per-host source address (``.13`` for bot1, ``.14`` for bot2, ``.11`` for the server), so the
simulator and the server still see one address per host, as on separate VPSes.

The bad link, in layers:
- loss: nftables in the router drops ``numgen random mod 100 < N`` of what it receives on every
  veth (each direction of each hop), so TCP retransmits for real and UDP reports vanish;
- delay, jitter, duplication, reordering: the relay (``Net.impair``, applied live by SIGHUP);
- rate: a ``tbf`` qdisc on the router's veth towards bot2 (a slow line for one host);
- cut: ``Net.cut(leaf)`` partitions a host: the router drops every packet to it and answers every
  packet from it with a TCP reset or ICMP unreachable; ``heal`` removes those rules. Only a request
  already waiting for its answer when the cut begins waits for its timeout (10 s). (Pulling the
  cable instead, ``ip link set down``, works too, but then the host's requests hang until their
  timeouts: the position server's check round waits up to 3 × 10 s on the exchange, and evicts
  only after it — too slow for this test.)

Nothing is added to the host's own namespace: the test reads the simulator and the server through
``probe.py`` processes inside the sim and pos namespaces, and files (logs, journals) directly.
Teardown kills every process started in the namespaces, deletes the nft table, the veths and the
namespaces — also after a failure; leftovers of a crashed run (prefix ``bfsxnt-<pid>-`` whose pid is
gone) are removed first.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from real_components import missing

HERE = Path(__file__).resolve().parent
PREFIX = "bfsxnt-"
SIM_PORT, POS_PORT = 8787, 51000


@dataclass(frozen=True)
class Leaf:
    """A host: its namespace role, its address, and the router's address on its link."""

    role: str
    addr: str
    gw: str
    dev: str  # the router's end of its veth
    sources: dict[str, str] = field(default_factory=dict)  # relay source address per upstream leaf


LEAVES = {
    "sim": Leaf("sim", "10.77.1.2", "10.77.1.1", "r-sim"),
    "pos": Leaf("pos", "10.77.2.2", "10.77.2.1", "r-pos", {"sim": "10.77.1.11"}),
    "bot1": Leaf("bot1", "10.77.3.2", "10.77.3.1", "r-b1", {"sim": "10.77.1.13", "pos": "10.77.2.13"}),
    "bot2": Leaf("bot2", "10.77.4.2", "10.77.4.1", "r-b2", {"sim": "10.77.1.14", "pos": "10.77.2.14"}),
}
ROUTER_ALIASES = {"sim": ["10.77.1.11", "10.77.1.13", "10.77.1.14"], "pos": ["10.77.2.13", "10.77.2.14"]}
LEAF_DEV = "up0"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _namespaces() -> list[str]:
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_pids_in(ns: str) -> None:
    """End the processes still inside one of our namespaces (ours: started by this test)."""
    pids = [int(p) for p in _run("ip", "netns", "pids", ns, check=False).stdout.split() if p.isdigit()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_namespace(ns: str) -> None:
    _kill_pids_in(ns)
    # nft tables and veths die with their namespace; delete them first anyway, explicitly.
    for table in _run("ip", "netns", "exec", ns, "nft", "list", "tables", check=False).stdout.splitlines():
        parts = table.split()
        if len(parts) == 3 and parts[0] == "table":
            _run("ip", "netns", "exec", ns, "nft", "delete", "table", parts[1], parts[2], check=False)
    for line in _run("ip", "-n", ns, "-o", "link", "show", "type", "veth", check=False).stdout.splitlines():
        dev = line.split(":")[1].strip().split("@")[0]
        _run("ip", "-n", ns, "link", "del", dev, check=False)
    _run("ip", "netns", "del", ns, check=False)


def clean_leftovers() -> list[str]:
    """Remove namespaces of a previous run of this test whose process is gone."""
    removed = []
    for ns in _namespaces():
        if not ns.startswith(PREFIX):
            continue
        try:
            owner = int(ns[len(PREFIX):].split("-")[0])
        except ValueError:
            continue
        if owner != os.getpid() and not _alive(owner):
            _remove_namespace(ns)
            removed.append(ns)
    return removed


class Net:
    """The namespaces, the relay and the processes of one test (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.folder = folder
        self.ns = {role: f"{self.tag}-{role}" for role in (*LEAVES, "router")}
        self.table = "bfsxnt"  # lives in the router namespace only
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.files: list[IO[bytes]] = []
        self.relay: subprocess.Popen[bytes] | None = None
        self.relay_config = folder / "relay.json"
        self.relay_spec: dict[str, Any] = {}
        self.loss_pct = 0
        self.python = sys.executable
        self.leaves = LEAVES
        self.sim_port, self.pos_port = SIM_PORT, POS_PORT

    # ------------------------------------------------------------------ build / tear down
    def build(self) -> None:
        for ns in self.ns.values():
            _run("ip", "netns", "add", ns)
        r = self.ns["router"]
        _run("ip", "-n", r, "link", "set", "lo", "up")
        for role, leaf in LEAVES.items():
            ns = self.ns[role]
            # Created directly inside the two namespaces: no veth ever shows in the host's.
            _run("ip", "link", "add", leaf.dev, "netns", r, "type", "veth", "peer", "name", LEAF_DEV, "netns", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", f"{leaf.addr}/24", "dev", LEAF_DEV)
            _run("ip", "-n", ns, "link", "set", LEAF_DEV, "up")
            _run("ip", "-n", r, "addr", "add", f"{leaf.gw}/24", "dev", leaf.dev)
            for alias in ROUTER_ALIASES.get(role, []):
                _run("ip", "-n", r, "addr", "add", f"{alias}/24", "dev", leaf.dev)
            _run("ip", "-n", r, "link", "set", leaf.dev, "up")
        _run("ip", "netns", "exec", r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        _run("ip", "netns", "exec", r, "nft", "add", "table", "inet", self.table)
        _run("ip", "netns", "exec", r, "nft", "add", "chain", "inet", self.table, "input",
             "{ type filter hook input priority 0; policy accept; }")

    def teardown(self) -> list[str]:
        """Stop everything and remove every namespace of this run; returns what was left over."""
        for _, proc in reversed(self.procs):
            self._stop(proc, 5)
        for f in self.files:
            f.close()
        with contextlib.suppress(Exception):
            _run("ip", "netns", "exec", self.ns["router"], "nft", "delete", "table", "inet", self.table, check=False)
        for ns in self.ns.values():
            _remove_namespace(ns)
        return [ns for ns in _namespaces() if ns.startswith(self.tag)]

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    # ------------------------------------------------------------------ processes
    def spawn(self, role: str, name: str, args: list[str], env: dict[str, str] | None = None,
              stdin: int | None = subprocess.DEVNULL, stdout: int | None = None) -> subprocess.Popen[bytes]:
        """``ip netns exec <role's ns> args``; stderr (and stdout unless piped) to ``<name>.out``."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
        base["PYTHONUNBUFFERED"] = "1"
        log = open(self.folder / f"{name}.out", "wb")  # noqa: SIM115 - closed at teardown
        self.files.append(log)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *args], env={**base, **(env or {})},
                                stdin=stdin, stdout=log if stdout is None else stdout, stderr=log,
                                cwd=self.folder)
        self.procs.append((name, proc))
        return proc

    def bfsx(self, role: str, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(role, name, [self.python, "-m", "bfsx.cli", *args])

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int | None:
        return self._stop(proc, timeout)

    def probe(self, role: str, env: dict[str, str] | None = None) -> Probe:
        """A :class:`Probe` in ``role``'s namespace (ended at teardown)."""
        return Probe(self, role, env)

    def output(self, name: str) -> str:
        return (self.folder / f"{name}.out").read_text(errors="replace")

    # ------------------------------------------------------------------ the relay
    def start_relay(self) -> None:
        """Listeners on the router's addresses: each bot → sim and pos server, the server → sim."""
        tcp: list[dict[str, Any]] = []
        udp: list[dict[str, Any]] = []
        for role in ("bot1", "bot2", "pos"):
            leaf = LEAVES[role]
            tcp.append({"listen": [leaf.gw, SIM_PORT], "target": [LEAVES["sim"].addr, SIM_PORT],
                        "source": leaf.sources["sim"]})
            if role != "pos":
                for kind in (tcp, udp):
                    kind.append({"listen": [leaf.gw, POS_PORT], "target": [LEAVES["pos"].addr, POS_PORT],
                                 "source": leaf.sources["pos"]})
        self.relay_spec = {"tcp": tcp, "udp": udp, "impair": {}}
        self.relay_config.write_text(json.dumps(self.relay_spec))
        self.relay = self.spawn("router", "relay", [self.python, str(HERE / "relay.py"), str(self.relay_config)],
                                stdout=subprocess.PIPE)
        assert self.relay.stdout is not None
        line = self.relay.stdout.readline()
        if line.strip() != b"READY":
            raise RuntimeError(f"relay did not start: {line!r} {self.output('relay')}")

    def impair(self, **kw: float) -> None:
        """Set the relay's delay_ms / jitter_ms / duplicate_pct / reorder_pct (the rest back to 0)."""
        assert self.relay is not None
        self.relay_spec["impair"] = kw
        tmp = self.relay_config.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.relay_spec))
        tmp.replace(self.relay_config)
        self.relay.send_signal(signal.SIGHUP)

    def relay_counters(self) -> dict[str, int]:
        """The relay's counters (it prints them to its log on SIGUSR1)."""
        assert self.relay is not None
        before = self.output("relay").count('{"relay"')
        self.relay.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            lines = [x for x in self.output("relay").splitlines() if x.startswith('{"relay"')]
            if len(lines) > before:
                data: dict[str, int] = json.loads(lines[-1])["relay"]
                return data
            time.sleep(0.05)
        return {}

    # ------------------------------------------------------------------ the kernel's part
    def loss(self, pct: int) -> None:
        """Drop ``pct`` % of the packets the router receives on any of its veths (0 = none)."""
        r = self.ns["router"]
        _run("ip", "netns", "exec", r, "nft", "flush", "chain", "inet", self.table, "input")
        if pct:
            devs = ", ".join(f'"{leaf.dev}"' for leaf in LEAVES.values())
            _run("ip", "netns", "exec", r, "nft", "add", "rule", "inet", self.table, "input",
                 "iifname", f"{{ {devs} }}", "numgen", "random", "mod", "100", "<", str(pct), "counter", "drop")
        self.loss_pct = pct

    def dropped(self) -> int:
        """Packets the loss rule dropped so far (0 when no rule)."""
        out = _run("ip", "netns", "exec", self.ns["router"], "nft", "list", "chain", "inet", self.table,
                   "input", check=False).stdout
        words = out.split()
        return int(words[words.index("packets") + 1]) if "packets" in words else 0

    def rate(self, role: str, rate: str | None) -> None:
        """A ``tbf`` rate limit on the router's veth towards ``role`` (None: removed)."""
        tc = ["ip", "netns", "exec", self.ns["router"], "tc", "qdisc"]
        if rate is None:
            _run(*tc, "del", "dev", LEAVES[role].dev, "root", check=False)
        else:
            _run(*tc, "replace", "dev", LEAVES[role].dev, "root", "tbf", "rate", rate, "burst", "64kb",
                 "latency", "200ms")

    def cut(self, role: str) -> None:
        """Cut ``role``'s host off from everything: the router drops what goes to it and refuses what
        comes from it (TCP reset, ICMP unreachable), as a gateway that lost the route does. Its own
        requests then fail at once instead of hanging, so its loops keep running."""
        dev = LEAVES[role].dev
        rules = [
            ("cut_in", "type filter hook input priority -10; policy accept;",
             [f'iifname "{dev}" meta l4proto tcp reject with tcp reset', f'iifname "{dev}" reject']),
            ("cut_out", "type filter hook output priority -10; policy accept;",
             [f'oifname "{dev}" tcp flags & rst == rst accept',
              f'oifname "{dev}" icmp type destination-unreachable accept', f'oifname "{dev}" drop']),
        ]
        r = self.ns["router"]
        for chain, hook, lines in rules:
            _run("ip", "netns", "exec", r, "nft", "add", "chain", "inet", self.table, chain, f"{{ {hook} }}")
            for line in lines:
                _run("ip", "netns", "exec", r, "nft", "add", "rule", "inet", self.table, chain, *line.split())

    def heal(self, role: str) -> None:
        """Undo :meth:`cut`."""
        r = self.ns["router"]
        for chain in ("cut_in", "cut_out"):
            _run("ip", "netns", "exec", r, "nft", "delete", "chain", "inet", self.table, chain)


class Probe:
    """A ``probe.py`` inside one namespace: ``ask("state URL")`` → its JSON answer."""

    def __init__(self, net: Net, role: str, env: dict[str, str] | None = None) -> None:
        self.proc = net.spawn(role, f"probe-{role}", [net.python, str(HERE / "probe.py")], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.ask_raw()  # READY

    def ask_raw(self, line: str | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            raise RuntimeError(f"probe exited ({self.proc.poll()})")
        data: dict[str, Any] = json.loads(out)
        return data

    def ask(self, line: str) -> Any:
        data = self.ask_raw(line)
        if "error" in data:
            raise RuntimeError(f"probe {line!r}: {data['error']}")
        return data["ok"]


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (tests/netns)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install iproute2 and nftables (make test does, as root)"
    return None


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    """The topology of the module docstring, torn down whatever happens."""
    reason = _can_make_namespaces()
    if reason is not None:
        missing(reason)
    clean_leftovers()
    n = Net(tmp_path)
    try:
        try:
            n.build()
        except RuntimeError as e:
            missing(f"cannot build network namespaces here: {e}")
        yield n
    finally:
        left = n.teardown()
        assert not left, f"namespaces left behind: {left}"
