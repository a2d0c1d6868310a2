"""Every bitFlyer Lightning API path, in one place (docs/bitflyer.md#endpoints-and-request-conventions).

Owns the public hosts, the REST paths (public ``/v1/<name>``, private ``/v1/me/<name>``), the realtime
JSON-RPC path, the sets that classify paths for the rate limits, and the short aliases the exchange
also answers. The client (:mod:`bfsx.bitflyer.rest`, :mod:`bfsx.bitflyer.budget`) and the simulator
(``bfsx.sim``) read them from here; nothing else types a path.
"""

from __future__ import annotations

from collections.abc import Mapping

REST_ORIGIN = "https://api.bitflyer.com"
REALTIME_PATH = "/json-rpc"
REALTIME_URL = f"wss://ws.lightstream.bitflyer.com{REALTIME_PATH}"

#: Every path under this prefix is private: it must be signed and counts in the per-key bucket.
PRIVATE_PREFIX = "/v1/me/"

# ---- public
GET_MARKETS = "/v1/getmarkets"
#: ``getmarkets/<region>`` lists the products of another region.
MARKET_REGIONS = ("usa", "eu")
GET_BOARD = "/v1/getboard"
GET_TICKER = "/v1/getticker"
GET_EXECUTIONS = "/v1/getexecutions"
GET_BOARD_STATE = "/v1/getboardstate"
GET_HEALTH = "/v1/gethealth"
GET_FUNDING_RATE = "/v1/getfundingrate"

# ---- private
GET_PERMISSIONS = "/v1/me/getpermissions"
GET_BALANCE = "/v1/me/getbalance"
GET_COLLATERAL = "/v1/me/getcollateral"
GET_COLLATERAL_ACCOUNTS = "/v1/me/getcollateralaccounts"
GET_COLLATERAL_HISTORY = "/v1/me/getcollateralhistory"
SEND_CHILD_ORDER = "/v1/me/sendchildorder"
SEND_PARENT_ORDER = "/v1/me/sendparentorder"
CANCEL_CHILD_ORDER = "/v1/me/cancelchildorder"
CANCEL_ALL_CHILD_ORDERS = "/v1/me/cancelallchildorders"
GET_CHILD_ORDERS = "/v1/me/getchildorders"
GET_MY_EXECUTIONS = "/v1/me/getexecutions"
GET_POSITIONS = "/v1/me/getpositions"
GET_TRADING_COMMISSION = "/v1/me/gettradingcommission"

# ---- classification (docs/bitflyer.md#rate-limits)
#: Paths that count in the order bucket.
ORDER_PATHS = frozenset({SEND_CHILD_ORDER, SEND_PARENT_ORDER, CANCEL_ALL_CHILD_ORDERS})
#: Paths whose orders of size ≤ 0.1 count in the small-order bucket.
SMALL_ORDER_PATHS = frozenset({SEND_CHILD_ORDER, SEND_PARENT_ORDER})

#: Short public names the exchange answers too: alias → the path it stands for.
ALIASES: Mapping[str, str] = {
    "/v1/markets": GET_MARKETS,
    "/v1/board": GET_BOARD,
    "/v1/ticker": GET_TICKER,
    "/v1/executions": GET_EXECUTIONS,
}


def spellings(path: str) -> tuple[str, ...]:
    """``path`` followed by its aliases (``/v1/getboard``, ``/v1/board``)."""
    return (path, *(alias for alias, target in ALIASES.items() if target == path))
