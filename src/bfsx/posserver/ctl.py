"""``bfsx ctl [TRADE_YAML] COMMAND [MARKET]``: the operator's kill switch (docs/config.md#bfsx-ctl).

Sends one signed CTL_COMMAND to the position server named by the trade.yaml (``pos_server``, else
where the server binds) and prints its one-line answer. Owns nothing: the state lives in the
server (:mod:`bfsx.posserver.controls`). Exit 0 when the server applied the command, 1 when it
refused it, 2 for a usage mistake or when no valid answer came (down, wrong secret).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bfsx import aio
from bfsx.config import load_trade_config
from bfsx.errors import UserError
from bfsx.posserver import protocol as p
from bfsx.posserver.client import PosServerUnavailable, query_status, send_ctl

USAGE = "usage: bfsx ctl [TRADE_YAML] COMMAND [MARKET] with COMMAND one of " + ", ".join(p.CTL_COMMANDS)




def parse_words(words: list[str]) -> tuple[str, str, str]:
    """``(trade_yaml, command, market)`` from the words after ``ctl``; ``market`` "" = every
    market. A market is upper-cased (``fx_btc_jpy`` is ``FX_BTC_JPY``) and must be a product code."""
    rest = list(words)
    path = "trade.yaml"
    if rest and rest[0].lower().endswith((".yaml", ".yml")):
        path = rest.pop(0)
    if not rest:
        raise UserError(f"no command ({USAGE})")
    command = rest.pop(0).lower()
    if command not in p.CTL_COMMANDS:
        raise UserError(f"unknown command {command!r} ({USAGE})")
    market = rest.pop(0).strip().upper() if rest else ""
    if rest:
        raise UserError(f"too many arguments: {' '.join(rest)} ({USAGE})")
    if market and not p.is_known_market(market):
        raise UserError(f"unknown market {market!r} (a product code such as FX_BTC_JPY)")
    return path, command, market


def _address(config: Any) -> tuple[str, int]:
    if config.pos_server is not None:
        host, port = config.pos_server
        return str(host), int(port)
    bind = config.pos_server_bind_address()
    return (str(bind[0]), int(bind[1])) if bind is not None else (config.pos_server_bind or p.DEFAULT_HOST, p.DEFAULT_PORT)


def _status_lines(status: dict[str, Any]) -> list[str]:
    lines = []
    for m in status.get("markets", []):
        frozen = " FROZEN" if m.get("frozen") else ""
        lines.append(f"  {m.get('market')}: mode {m.get('mode', '?')}{frozen} | bots {m.get('bots')} | "
                     f"Σ bots {m.get('total')} + base {m.get('base')}{m.get('base_adjust') or 0:+g} = expected "
                     f"{m.get('expected')} | exchange {m.get('exchange')} | {m.get('skip_reason') or 'in check'}")
    return lines


def run_ctl(words: list[str], *, timeout_s: float = 5.0) -> int:
    """The ``bfsx ctl`` command: returns the exit code (UserError for a usage mistake)."""
    path, command, market = parse_words(words)
    if not Path(path).exists():
        raise UserError(f"{path}: file not found ({USAGE})")
    config = load_trade_config(path)
    host, port = _address(config)
    secret = config.pos_server_secret_value()

    async def main() -> tuple[p.CtlReply, dict[str, Any] | None]:
        reply = await send_ctl(host, port, secret, command, market, timeout=timeout_s)
        status = await query_status(host, port, secret, client_id="ctl", timeout=timeout_s) \
            if command == "status" else None
        return reply, status

    try:
        reply, status = aio.run(main())
    except PosServerUnavailable as e:
        raise UserError(f"no valid answer from the position server at {host}:{port} ({e}): is it running, "
                        f"with the same pos_server_secret?") from None
    except OSError as e:
        raise UserError(f"cannot reach the position server at {host}:{port}: {e.strerror or e}") from None
    print(("" if reply.ok else "refused: ") + reply.text, flush=True)
    if status is not None:
        for line in _status_lines(status):
            print(line, flush=True)
    return 0 if reply.ok else 1
