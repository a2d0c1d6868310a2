"""Market data: order book, executions, N-second candles, ticker, health, and the feed wiring them."""

from bfsx.market.book import OrderBook
from bfsx.market.candles import Candle, CandleBuilder
from bfsx.market.executions import Executions
from bfsx.market.feed import MarketFeed
from bfsx.market.health import UNKNOWN, HealthPoller
from bfsx.market.ticker import TickerState

__all__ = ["UNKNOWN", "Candle", "CandleBuilder", "Executions", "HealthPoller", "MarketFeed", "OrderBook",
           "TickerState"]
