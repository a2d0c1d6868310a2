"""bfsx: a high-speed bot framework for bitFlyer Lightning.

Users subclass :class:`bfsx.Strategy`; see the README for the tutorial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Order", "Strategy", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from bfsx.account.orders import Order
    from bfsx.bot.strategy import Strategy


def __getattr__(name: str) -> Any:
    # Lazy so that `import bfsx` (e.g. for the simulator) does not pull the whole runtime in.
    if name == "Strategy":
        from bfsx.bot.strategy import Strategy

        return Strategy
    if name == "Order":
        from bfsx.account.orders import Order

        return Order
    raise AttributeError(name)
