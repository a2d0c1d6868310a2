"""The position-server secret of one OS user, for configs that set no ``pos_server_secret``.

An empty HMAC key is a key every local process knows: with it, any user on the machine could sign a
report and make the position server trade. So when trade.yaml sets no secret, the server and the
bots of the same OS user sign with a random secret kept in a file only that user can read:
``$BFSX_CONFIG_HOME/pos_server_secret``, else ``$XDG_CONFIG_HOME/bfsx/pos_server_secret``, else
``~/.config/bfsx/pos_server_secret``. The first process that needs it creates it (both sides read
the same file, so the zero-config start stays zero-config); every later one reads it.

The file is trusted only if it is a regular file (not a symlink), owned by the user running bfsx,
and not readable or writable by anyone else; anything else is refused with one line rather than
"fixed", since a file someone else could write is a secret someone else may know.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from bfsx.config.base import ConfigError

log = logging.getLogger("bfsx.config")

#: Environment variable naming the bfsx config directory itself (tests, several setups on one user).
ENV_CONFIG_HOME = "BFSX_CONFIG_HOME"
SECRET_FILE_NAME = "pos_server_secret"
#: Fewest non-whitespace characters a secret file must hold (a generated one has 64).
MIN_SECRET_CHARS = 16
_MAX_READ_BYTES = 4096  # a secret is one short line; never slurp whatever the path points at
# Not on every platform (Windows has neither).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """bfsx's per-user config directory: ``$BFSX_CONFIG_HOME``, else ``$XDG_CONFIG_HOME/bfsx``,
    else ``~/.config/bfsx``. A relative ``XDG_CONFIG_HOME`` is ignored, as the XDG spec says."""
    environ = os.environ if env is None else env
    own = environ.get(ENV_CONFIG_HOME, "").strip()
    if own:
        return Path(own).expanduser()
    xdg = environ.get("XDG_CONFIG_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "bfsx"


def local_secret_path(env: Mapping[str, str] | None = None) -> Path:
    """Where this user's generated position-server secret lives (see :func:`config_dir`)."""
    return config_dir(env) / SECRET_FILE_NAME


def local_secret(path: Path | None = None) -> str:
    """This user's position-server secret: read from ``path`` (default :func:`local_secret_path`),
    created there first (``secrets.token_hex(32)``, mode 0600) if it does not exist yet.

    Raises :class:`ConfigError` (one line naming the file) when the file cannot be trusted or used:
    readable or writable by group or others, owned by another user, not a regular file, too short.
    """
    p = local_secret_path() if path is None else path
    try:
        return _read(p)
    except FileNotFoundError:
        pass
    _create(p)
    try:
        return _read(p)
    except FileNotFoundError:  # removed between our create and our read: say so, do not loop
        raise ConfigError(f"{p}: the position-server secret vanished right after it was created") from None


def _read(p: Path) -> str:
    try:
        # O_NOFOLLOW: a symlink planted in place of the file must not redirect us to a file of the
        # attacker's choosing; fstat on the open descriptor checks exactly what we then read.
        fd = os.open(p, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(f"{p}: is a symbolic link; the position-server secret must be a regular file") from None
        raise ConfigError(f"{p}: cannot read the position-server secret: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{p}: is not a regular file; the position-server secret must be one")
        _check_owner_and_mode(p, st)
        raw = os.read(fd, _MAX_READ_BYTES)
    finally:
        os.close(fd)
    text = raw.decode("utf-8", errors="replace").strip()
    if len("".join(text.split())) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{p}: holds no usable position-server secret (fewer than {MIN_SECRET_CHARS} characters); "
            f"delete it and a new one is made"
        )
    return text


def _check_owner_and_mode(p: Path, st: os.stat_result) -> None:
    if sys.platform == "win32":
        return  # no uid or mode bits there: the user profile's ACLs are what keeps others out
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"{p}: owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}); "
            f"a secret another user controls protects nothing: remove the file and start again"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"{p}: other users can read or change it (mode {mode:04o}); run: chmod 600 {p}")


def _create(p: Path) -> None:
    """Write a new secret to ``p`` unless one exists; the file appears complete or not at all."""
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"{p.parent}: cannot create the directory for the position-server secret: {e.strerror or e} "
            f"(set pos_server_secret, or {ENV_CONFIG_HOME} to a writable directory)"
        ) from None
    data = (secrets.token_hex(32) + "\n").encode()
    # Written under a temporary name, then hard-linked into place: link() fails if the name exists,
    # so of two processes starting together exactly one publishes its secret and the other reads
    # that one, and nobody ever reads a half-written file.
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        _write_new(tmp, data)
        try:
            os.link(tmp, p)
        except FileExistsError:
            return  # another process won the race: its secret is the one
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # A filesystem without hard links: create the name itself exclusively instead.
            with contextlib.suppress(FileExistsError):
                _write_new(p, data)
    except OSError as e:
        raise ConfigError(f"{p}: cannot create the position-server secret: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    log.info("created the position-server secret %s (mode 0600)", p)


def _write_new(p: Path, data: bytes) -> None:
    # O_EXCL: never reuse (or follow) something already there; 0600 before the first byte lands.
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        if sys.platform != "win32":
            os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
