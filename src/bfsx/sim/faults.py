"""Fault switches of ``POST /_sim/faults``, with exactly the names documented in
docs/simulator.md#test-hooks-no-signature-needed.

A request sets any subset; ``close_websockets`` is an action (close every realtime connection now,
``true`` = code 1000, an int = that close code), the rest stay in force until changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bfsx.bitflyer.states import HEALTH_LEVELS


@dataclass(slots=True)
class Faults:
    """The faults now in force (the simulator's engine and server read these)."""

    drop_private_events: float = 0.0
    http_error_rate: float = 0.0
    http_error_status: int = 500
    latency_ms: float = 0.0
    health: str | None = None
    maintenance: bool = False
    #: ``/v1`` paths (lower case, e.g. ``/v1/me/getpositions``) that fail on every request, the
    #: rest of the API working: with ``fail_paths_timeout_ms`` > 0 the reply is held that long
    #: (a client timeout), else it is an ``http_error_status`` error.
    fail_paths: list[str] = field(default_factory=list)
    fail_paths_timeout_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultsRequest(BaseModel):
    """Body of POST /_sim/faults: any subset of the switches."""

    model_config = ConfigDict(extra="forbid")

    drop_private_events: float | None = Field(default=None, ge=0, le=1)
    close_websockets: bool | int | None = None
    http_error_rate: float | None = Field(default=None, ge=0, le=1)
    http_error_status: int | None = Field(default=None, ge=400, le=599)
    latency_ms: float | None = Field(default=None, ge=0, le=600_000)
    health: str | None = None
    maintenance: bool | None = None
    fail_paths: list[str] | None = Field(default=None, max_length=64)
    fail_paths_timeout_ms: float | None = Field(default=None, ge=0, le=600_000)

    @field_validator("fail_paths")
    @classmethod
    def _v1_paths(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = [x.rstrip("/").lower() for x in v]
        if any(not x.startswith("/v1/") for x in out):
            raise ValueError("each path must start with /v1/")
        return out

    @field_validator("health")
    @classmethod
    def _known_health(cls, v: str | None) -> str | None:
        if v is not None and v not in HEALTH_LEVELS:
            raise ValueError(f"health must be one of {', '.join(HEALTH_LEVELS)} or null")
        return v

    @field_validator("close_websockets")
    @classmethod
    def _close_code(cls, v: bool | int | None) -> bool | int | None:
        if isinstance(v, int) and not isinstance(v, bool) and not (v == 1000 or 3000 <= v <= 4999 or 1001 <= v <= 1014):
            raise ValueError("close code must be 1000-1014 or 3000-4999")
        if v in (1004, 1005, 1006):
            raise ValueError("close code 1004/1005/1006 cannot be sent")
        return v


def parse_request(data: Any) -> FaultsRequest:
    """Validate a faults body; raises ``ValueError`` with one line."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    try:
        return FaultsRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ValueError(f"{where}: {err['msg']}") from None


def apply(faults: Faults, req: FaultsRequest) -> None:
    """Set the persistent switches present in ``req`` (``health: null`` explicitly resets it)."""
    given = req.model_fields_set
    for name in ("drop_private_events", "http_error_rate", "http_error_status", "latency_ms", "maintenance",
                 "fail_paths", "fail_paths_timeout_ms"):
        if name in given and getattr(req, name) is not None:
            setattr(faults, name, getattr(req, name))
    if "health" in given:
        faults.health = req.health
