"""Request signing for the private REST API and the realtime ``auth`` method (docs/bitflyer.md#signing)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import TypedDict


def sign(secret: str | bytes, message: str | bytes) -> str:
    """Lower-case hex HMAC-SHA256 of ``message`` keyed with ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    msg = message.encode() if isinstance(message, str) else message
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def rest_signature(secret: str, timestamp: str, method: str, path_with_query: str, body: bytes | str = b"") -> str:
    """``ACCESS-SIGN`` = HMAC(secret, timestamp + METHOD + path?query + body)."""
    raw_body = body.encode() if isinstance(body, str) else body
    return sign(secret, timestamp.encode() + method.upper().encode() + path_with_query.encode() + raw_body)


def rest_headers(
    api_key: str, secret: str, method: str, path_with_query: str, body: bytes | str = b"", timestamp: str | None = None
) -> dict[str, str]:
    """The three ``ACCESS-*`` headers for a private request (timestamp in ms, as the official sample)."""
    ts = timestamp if timestamp is not None else str(int(time.time() * 1000))
    return {
        "ACCESS-KEY": api_key,
        "ACCESS-TIMESTAMP": ts,
        "ACCESS-SIGN": rest_signature(secret, ts, method, path_with_query, body),
    }


def verify_rest(secret: str, timestamp: str, method: str, path_with_query: str, body: bytes, signature: str) -> bool:
    """Constant-time check of a REST signature (server side)."""
    return hmac.compare_digest(rest_signature(secret, timestamp, method, path_with_query, body), signature.lower())


class WsAuthParams(TypedDict):
    api_key: str
    timestamp: int
    nonce: str
    signature: str


def ws_signature(secret: str, timestamp: int, nonce: str) -> str:
    """Realtime auth signature: HMAC(secret, str(timestamp) + nonce)."""
    return sign(secret, f"{timestamp}{nonce}")


def ws_auth_params(api_key: str, secret: str, timestamp: int | None = None, nonce: str | None = None) -> WsAuthParams:
    """``params`` of the JSON-RPC ``auth`` call."""
    ts = timestamp if timestamp is not None else int(time.time() * 1000)
    n = nonce if nonce is not None else secrets.token_hex(16)
    return {"api_key": api_key, "timestamp": ts, "nonce": n, "signature": ws_signature(secret, ts, n)}


def verify_ws(secret: str, timestamp: int, nonce: str, signature: str) -> bool:
    """Constant-time check of a realtime auth signature (server side)."""
    return hmac.compare_digest(ws_signature(secret, timestamp, nonce), signature.lower())
