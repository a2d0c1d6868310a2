"""With no ``pos_server_secret``, the server and the bots of one OS user sign with a generated
secret in a 0600 file only that user can read (issue 10, item 6); off loopback a configured secret
of at least 16 characters is required.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bfsx.config import ConfigError, TradeConfig, load_trade_config
from bfsx.config.local_secret import config_dir, local_secret, local_secret_path
from bfsx.net import free_port
from bfsx.posserver.client import PosServerUnavailable, query_status
from real_components import missing


def one_line(info: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(info.value)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------------------------- the file
def test_no_secret_configured_means_the_users_generated_secret(tmp_path: Path) -> None:
    cfg = TradeConfig()  # the zero-config server: no pos_server, no secret
    value = cfg.pos_server_secret_value()
    path = tmp_path / "bfsx-config" / "pos_server_secret"  # BFSX_CONFIG_HOME from conftest
    assert local_secret_path() == path
    assert len(value) == 64 and int(value, 16) >= 0  # secrets.token_hex(32)
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert TradeConfig(pos_server=("localhost", 51000)).pos_server_secret_value() == value  # read, not remade
    assert sorted(p.name for p in path.parent.iterdir()) == ["pos_server_secret"]  # no temporary left


def test_a_configured_secret_wins_and_creates_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TradeConfig(pos_server=("127.0.0.1", 51000), pos_server_secret=SecretStr("mine"))
    assert cfg.pos_server_secret_value() == "mine"
    monkeypatch.setenv("BFSX_POS_SERVER_SECRET", "from-env")
    assert load_trade_config(write("trade.yaml", "pos_server: [localhost, 51000]\n")).pos_server_secret_value() == (
        "from-env")
    assert not (tmp_path / "bfsx-config").exists()


def write(name: str, text: str) -> Path:
    p = Path(name)
    p.write_text(text, encoding="utf-8")
    return p


def test_config_dir_follows_bfsx_config_home_then_xdg_then_home() -> None:
    home = Path.home()
    assert config_dir({"BFSX_CONFIG_HOME": "/srv/bfsx", "XDG_CONFIG_HOME": "/x"}) == Path("/srv/bfsx")
    assert config_dir({"XDG_CONFIG_HOME": "/x"}) == Path("/x/bfsx")
    assert config_dir({"XDG_CONFIG_HOME": "relative/dir"}) == home / ".config" / "bfsx"  # ignored, per XDG
    assert config_dir({}) == home / ".config" / "bfsx"
    assert local_secret_path({}) == home / ".config" / "bfsx" / "pos_server_secret"


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    home = tmp_path / "race"
    env = {**os.environ, "BFSX_CONFIG_HOME": str(home)}
    code = "from bfsx.config.local_secret import local_secret; print(local_secret())"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6
    assert len(set(outs)) == 1 and len(outs[0]) == 64
    assert (home / "pos_server_secret").read_text().strip() == outs[0]
    assert [p.name for p in home.iterdir()] == ["pos_server_secret"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o660])
def test_a_file_other_users_can_read_or_change_is_refused(mode: int) -> None:
    path = local_secret_path()
    local_secret(path)
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        local_secret(path)
    assert one_line(info) == (
        f"{path}: other users can read or change it (mode {mode:04o}); run: chmod 600 {path}")
    # The same refusal through the config, as the server and the bots meet it: never "fixed" silently.
    with pytest.raises(ConfigError, match="other users can read or change it"):
        TradeConfig().pos_server_secret_value()
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_symlink_a_directory_or_a_short_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.write_text("x" * 64)
    real.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError) as info:
        local_secret(link)
    assert one_line(info) == f"{link}: is a symbolic link; the position-server secret must be a regular file"
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ConfigError) as info:
        local_secret(folder)
    assert "is not a regular file" in one_line(info)
    short = tmp_path / "short"
    short.write_text("   abc  \n")
    short.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        local_secret(short)
    assert one_line(info).startswith(f"{short}: holds no usable position-server secret (fewer than 16 characters)")


def test_a_path_that_cannot_be_used_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "bfsx" / "pos_server_secret"  # a file where the config folder should be
    with pytest.raises(ConfigError) as info:
        local_secret(path)
    assert one_line(info) == f"{path}: cannot read the position-server secret: Not a directory"


# ------------------------------------------------------------------------------- other users
def _nobody() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs a command as the user 'nobody' (os.setuid)")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        missing("no user 'nobody' on this machine")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder under /tmp that every user may enter (pytest's tmp_path is private to its owner)."""
    d = Path(tempfile.mkdtemp(prefix="bfsx-secret-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_another_os_user_cannot_read_the_secret(open_dir: Path) -> None:
    nobody = _nobody()
    path = open_dir / "bfsx" / "pos_server_secret"
    local_secret(path)
    path.parent.chmod(0o755)  # even a config folder others may enter: the file's own mode protects it

    def as_nobody() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    listed = subprocess.run(["ls", str(path.parent)], preexec_fn=as_nobody, capture_output=True, text=True,
                            timeout=30)
    assert listed.returncode == 0 and listed.stdout.split() == ["pos_server_secret"]  # it can see the file
    read = subprocess.run(["cat", str(path)], preexec_fn=as_nobody, capture_output=True, text=True, timeout=30)
    assert read.returncode != 0 and "Permission denied" in read.stderr and read.stdout == ""


def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    nobody = _nobody()
    path = tmp_path / "s" / "pos_server_secret"
    local_secret(path)
    os.chown(path, nobody.pw_uid, nobody.pw_gid)  # e.g. planted by another user before we started
    with pytest.raises(ConfigError) as info:
        local_secret(path)
    assert one_line(info).startswith(f"{path}: owned by uid {nobody.pw_uid}, not by this user (uid 0)")


# --------------------------------------------------------------------------- remote secrets
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pos_server: [10.0.0.5, 51000]\npos_server_secret: ' '\n", "is only whitespace"),
        ("pos_server: [localhost, 51000]\npos_server_secret: '   '\n", "is only whitespace"),
        ("pos_server: [10.0.0.5, 51000]\npos_server_secret: 15-characters!!\n",
         "must have at least 16 characters (not counting spaces) when the position server host is not loopback "
         "('10.0.0.5'), got 15"),
        ("pos_server: [10.0.0.5, 51000]\npos_server_secret: 'a b c d e f g h i j k l m n o'\n", "got 15"),
        ("pos_server_bind: 0.0.0.0\n", "'pos_server_secret' is required when the position server host is not "
         "loopback ('0.0.0.0')"),
    ],
)
def test_remote_needs_a_strong_configured_secret(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_trade_config(write("trade.yaml", text))
    message = one_line(info)
    assert message.startswith("trade.yaml: 'pos_server_secret' ") and problem in message, message


def test_sixteen_characters_are_enough_and_loopback_takes_any() -> None:
    cfg = load_trade_config(write("trade.yaml", "pos_server: [10.0.0.5, 51000]\npos_server_secret: 16-characters!!!\n"))
    assert cfg.pos_server_secret_value() == "16-characters!!!"
    assert load_trade_config(write("trade.yaml", "pos_server: ['::1', 51000]\npos_server_secret: s\n")
                             ).pos_server_secret_value() == "s"


def test_a_copy_made_in_code_cannot_sign_remote_with_the_local_secret() -> None:
    unsafe = TradeConfig().model_copy(update={"pos_server_bind": "0.0.0.0"})
    with pytest.raises(ConfigError, match=r"'pos_server_secret' is required .* not loopback \('0\.0\.0\.0'\)"):
        unsafe.pos_server_secret_value()


# ----------------------------------------------------------------------- a real server process
def _start_server(folder: Path, home: Path, port: int) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trade.yaml").write_text(
        f"pos_server: ['127.0.0.1', {port}]\nendpoint: http://127.0.0.1:9\nconsole_output: false\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
    env["BFSX_CONFIG_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "bfsx.cli", "pos-server", "trade.yaml"], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _status_when_up(proc: subprocess.Popen[bytes], port: int, secret: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            return await query_status("127.0.0.1", port, secret, timeout=2)
        except PosServerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_server_and_signer_talk_only_with_the_same_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home_a, home_b = tmp_path / "user-a", tmp_path / "user-b"
    port = free_port()
    server = _start_server(tmp_path / "server", home_a, port)
    try:
        # A bot of the same user (same config dir): it signs with the file the server made or read.
        monkeypatch.setenv("BFSX_CONFIG_HOME", str(home_a))
        same = TradeConfig(pos_server=("127.0.0.1", port)).pos_server_secret_value()
        status = await _status_when_up(server, port, same)
        assert status["bots"] == []
        # A signer with another config dir (another user, say) has another secret: refused.
        monkeypatch.setenv("BFSX_CONFIG_HOME", str(home_b))
        other = TradeConfig(pos_server=("127.0.0.1", port)).pos_server_secret_value()
        assert other != same
        with pytest.raises(PosServerUnavailable):
            await query_status("127.0.0.1", port, other, timeout=5)
        with pytest.raises(PosServerUnavailable):
            await query_status("127.0.0.1", port, "", timeout=5)  # the old zero-config key: no longer valid
        status = await query_status("127.0.0.1", port, same)
        counters = status["counters"]
        assert isinstance(counters, dict) and counters["bad_signature"] == 2
        assert (home_a / "pos_server_secret").read_text().strip() == same
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(30)
    assert code == 0
