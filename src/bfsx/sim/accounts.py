"""Body of ``POST /_sim/account`` (docs/simulator.md#test-hooks-no-signature-needed): set one
account's CFD collateral, as a deposit or a withdrawal, so tests and the demo can bring about a
margin call or a loss-cut. The engine applies it (:meth:`bfsx.sim.engine.Engine.set_collateral`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: Largest collateral the hook sets, JPY: the same bound as an account's ``collateral`` in sim.yaml.
MAX_COLLATERAL_JPY = 1e15


class UnknownAccount(ValueError):
    """The body names no configured account (HTTP 404)."""


class AccountRequest(BaseModel):
    """``{"api_key": "...", "collateral_jpy": X}``: the collateral becomes X JPY."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    api_key: str = Field(min_length=1)
    collateral_jpy: float = Field(ge=0, le=MAX_COLLATERAL_JPY)


def parse_request(data: Any) -> AccountRequest:
    """Validate an account body; raises ``ValueError`` with one line."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object like {\"api_key\": \"...\", \"collateral_jpy\": 1000000}")
    try:
        return AccountRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"][:1]) or "body"
        raise ValueError(f"{where}: {err['msg']}") from None
