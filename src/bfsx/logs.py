"""Logging setup: a daily-rotating file in ``log_folder``, an optional console, secrets redacted.

Any string registered with :func:`add_secret` is replaced by ``***`` in every line our handlers
write (message, arguments and tracebacks alike); a URL secret and any Discord webhook URL are shown
as host + first path segment + ``…`` so the line still says where it went.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from bfsx.errors import UserError

__all__ = [
    "RedactingFilter",
    "RedactingFormatter",
    "add_secret",
    "mask_url",
    "redact",
    "set_level",
    "setup_logging",
    "shutdown_logging",
]

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
BACKUP_DAYS = 14
MIN_SECRET_LEN = 4  # shorter strings would blank out ordinary words

_DISCORD_RX = r"https?://[^\s/]*discord(?:app)?\.com/api/webhooks/[^\s'\"<>)]+"
_secrets: dict[str, str] = {}
_pattern: re.Pattern[str] = re.compile(_DISCORD_RX)


def mask_url(url: str) -> str:
    """``https://discord.com/api/webhooks/1/tok`` → ``discord.com/api…`` ('' stays '')."""
    if not url:
        return ""
    parts = urlsplit(url)
    if not parts.netloc:
        return "***"
    first = parts.path.strip("/").split("/", 1)[0]
    return f"{parts.netloc}/{first}…" if first else f"{parts.netloc}…"


def add_secret(secret: str) -> None:
    """Redact ``secret`` from every log line from now on (strings under 4 characters are ignored)."""
    global _pattern
    secret = secret.strip() if secret else ""
    if len(secret) < MIN_SECRET_LEN or secret in _secrets:
        return
    _secrets[secret] = mask_url(secret) if secret.startswith(("http://", "https://")) else "***"
    # Longest first, so a secret that contains another is replaced whole.
    alternatives = [re.escape(s) for s in sorted(_secrets, key=len, reverse=True)]
    _pattern = re.compile("|".join([*alternatives, _DISCORD_RX]))


def _replace(m: re.Match[str]) -> str:
    text = m.group()
    return _secrets.get(text) or mask_url(text)


def redact(text: str) -> str:
    """``text`` with every registered secret and Discord webhook URL masked."""
    return _pattern.sub(_replace, text)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then masks secrets in the whole line (traceback included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingFilter(logging.Filter):
    """For handlers we do not own: rewrites the record's message (and traceback text) redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_OURS = "_bfsx_handler"


def shutdown_logging() -> None:
    """Remove (and close) the handlers :func:`setup_logging` installed."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _OURS, False):
            root.removeHandler(h)
            h.close()


def set_level(level: str | int) -> None:
    """Change the log level live (a trade.yaml / strategy yaml reload)."""
    logging.getLogger().setLevel(level.upper() if isinstance(level, str) else level)


def setup_logging(
    log_folder: str | os.PathLike[str],
    name: str,
    level: str | int = "INFO",
    console: bool = True,
    *,
    backup_count: int = BACKUP_DAYS,
) -> logging.Logger:
    """Log to ``<log_folder>/<name>.log`` rotated at local midnight (``backup_count`` days kept) and,
    when ``console``, to stderr. Installs on the root logger, replacing a previous setup; returns
    the ``bfsx`` logger. Raises :class:`bfsx.cli.UserError` when the folder cannot be created.
    """

    folder = Path(log_folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        file_handler: logging.Handler = logging.handlers.TimedRotatingFileHandler(
            folder / f"{name}.log", when="midnight", backupCount=backup_count, encoding="utf-8"
        )
    except OSError as e:
        raise UserError(f"log_folder '{folder}': cannot write logs there: {e.strerror or e}") from None
    handlers = [file_handler]
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    shutdown_logging()
    root = logging.getLogger()
    formatter = RedactingFormatter(LOG_FORMAT, DATE_FORMAT)
    for h in handlers:
        h.setFormatter(formatter)
        setattr(h, _OURS, True)
        root.addHandler(h)
    set_level(level)
    return logging.getLogger("bfsx")
