"""Finding the user's strategy: :func:`load_strategy_class` imports a strategy file and returns its
:class:`~bfsx.bot.strategy.Strategy` subclass, with one-line :class:`~bfsx.errors.UserError`\\ s."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from bfsx.bot.strategy import Strategy
from bfsx.errors import UserError


def load_strategy_class(path: str | Path) -> type[Strategy]:
    """Import a strategy file and return its :class:`Strategy` subclass (``MyStrategy`` preferred)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"strategy file not found: {p}")
    spec = importlib.util.spec_from_file_location(f"bfsx_user_strategy_{p.stem}", p)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import strategy file {p}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a user's file: report it in one line
        raise UserError(f"{p}: {type(e).__name__}: {e}") from None
    found = [
        v for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Strategy) and v is not Strategy and v.__module__ == module.__name__
    ]
    if not found:
        raise UserError(f"{p}: no class derived from bfsx.Strategy (define `class MyStrategy(bfsx.Strategy)`)")
    for cls in found:
        if cls.__name__ == "MyStrategy":
            return cls
    if len(found) > 1:
        raise UserError(f"{p}: several Strategy classes ({', '.join(c.__name__ for c in found)}); name one MyStrategy")
    return found[0]

