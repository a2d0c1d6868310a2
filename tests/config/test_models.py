"""trade.yaml / strategy yaml: defaults, one-line errors, env overrides, secrets, argument forms."""

from __future__ import annotations

import hashlib
import re
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bfsx.bitflyer.timestamps import JST
from bfsx.cli import UserError
from bfsx.config import (
    DEFAULT_ENDPOINT,
    DEFAULT_WS_ENDPOINT,
    ConfigError,
    StrategyConfig,
    TradeConfig,
    changed_keys,
    load_run,
    load_strategy_config,
    load_trade_config,
    resolve_trade_args,
)
from bfsx.reporting.alerts import DEFAULT_ALERT_KINDS

REPO = Path(__file__).resolve().parents[2]


def write(name: str, text: str) -> Path:
    p = Path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def error_of(path: Path, loader=load_trade_config) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        loader(path)
    text = str(info.value)
    assert "\n" not in text, text
    assert isinstance(info.value, UserError)
    return text


# ----------------------------------------------------------------------------------- defaults
TRADE_DEFAULTS = {
    "product": "FX_BTC_JPY",
    "endpoint": DEFAULT_ENDPOINT,
    "ws_endpoint": DEFAULT_WS_ENDPOINT,
    "strategy_py": None,
    "strategy_yaml": None,
    "base_position": 0.0,
    "adjust_position_with_api": False,
    "adjust_max_size": 0.1,
    "adjust_position_interval": 30.0,
    "adjust_consecutive": 4,
    "pos_server": None,
    "pos_server_bind": None,
    "pos_server_graph_period": 6.0,
    "pos_server_discord_interval": 60.0,
    "pos_server_discord_send_text": False,
    "pos_server_bitflyer_color": False,
    "pos_server_discord_influxdb": None,
    "pos_server_check_interval": 30.0,
    "pos_server_consecutive": 4,
    "pos_server_evict_after": 300.0,
    "pos_server_report_interval": 10.0,
    "pos_server_query_interval": 10.0,
    "pos_server_margin_interval": 30.0,
    "pos_server_keep_rate_warn": 1.5,
    "pos_server_keep_rate_close_only": 1.0,
    "pos_server_max_daily_loss": 0.0,
    "pos_server_alerts": DEFAULT_ALERT_KINDS,
    "pos_server_alert_interval": 60.0,
    "pos_server_correct_all": False,
    "pos_server_control_interval": 0.5,
    "console_output": True,
    "log_level": "INFO",
    "close_on_exit": False,
    "api_reserve": 50,
    "over_limit_pause": 60.0,
    "trade_health": "SUPER BUSY",
    "health_interval": 5.0,
    "ws_silence_timeout": 60.0,
    "status_interval": 60.0,
}


def test_trade_defaults_from_an_empty_file() -> None:
    cfg = load_trade_config(write("trade.yaml", ""))
    for key, value in TRADE_DEFAULTS.items():
        assert getattr(cfg, key) == value, key
    assert cfg.api_key() == cfg.api_secret() == cfg.pos_server_discord_value() == ""
    assert cfg.pos_server_secret.get_secret_value() == ""  # the effective one is the user's file
    assert not cfg.has_credentials
    assert cfg.bot_name == "bot_FX_BTC_JPY"
    assert cfg.log_folder == "./logs/bot_FX_BTC_JPY"
    assert cfg.source == Path("trade.yaml")
    # Every model key is covered by the table above or is a secret / derived one.
    assert set(TradeConfig.model_fields) == set(TRADE_DEFAULTS) | {
        "apikey", "secret", "pos_server_secret", "pos_server_discord", "bot_name", "log_folder",
    }


def path_hash(path: str) -> str:
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:4]


def test_bot_name_and_log_folder_derive_from_strategy_yaml_and_product() -> None:
    cfg = load_trade_config(write("trade.yaml", "product: btc_jpy\nstrategy_yaml: strategies/mm.yaml\n"))
    assert cfg.product == "BTC_JPY"
    name = f"mm_BTC_JPY_{path_hash('strategies/mm.yaml')}"
    assert cfg.bot_name == name
    assert cfg.log_folder == f"./logs/{name}"
    explicit = load_trade_config(write("t2.yaml", "bot_name: alpha\nlog_folder: /var/tmp/x\nstrategy_yaml: s/mm.yaml\n"))
    assert (explicit.bot_name, explicit.log_folder) == ("alpha", "/var/tmp/x")
    # A strategy given later (command line) re-derives only what the user did not set.
    scalping = f"scalping_BTC_JPY_{path_hash('other/scalping.yml')}"
    assert cfg.with_bot_name("other/scalping.yml").bot_name == scalping
    assert cfg.with_bot_name("other/scalping.yml").log_folder == f"./logs/{scalping}"
    assert explicit.with_bot_name("other/scalping.yml").bot_name == "alpha"


def test_strategy_defaults() -> None:
    cfg = load_strategy_config(write("s.yaml", "parameters:\n"))
    assert cfg.parameters == {}
    assert cfg.close_position is False
    assert cfg.no_trade == []
    assert (cfg.subscribe.executions, cfg.subscribe.board, cfg.subscribe.ticker) == (True, True, True)
    assert cfg.minute_to_expire is None
    assert cfg.log_level is None
    assert cfg.discord_webhook_value() == ""
    assert (cfg.discord_interval, cfg.discord_graph_period) == (60.0, 6.0)
    assert not cfg.in_no_trade(datetime(2024, 1, 1, 4, 0, tzinfo=JST))


def test_sample_files_in_the_repo_are_valid() -> None:
    cfg = load_trade_config(REPO / "trade.yaml")
    assert cfg.endpoint == "http://127.0.0.1:8787"
    assert cfg.ws_endpoint == "ws://127.0.0.1:8787/json-rpc"
    assert (cfg.api_key(), cfg.api_secret()) == ("demo-key-1", "demo-secret-1")
    assert cfg.pos_server is None  # present but commented out
    assert "# pos_server: ['localhost', 51000]" in (REPO / "trade.yaml").read_text()
    written = set(re.findall(r"^#? ?([a-z_]+):", (REPO / "trade.yaml").read_text(), re.MULTILINE))
    assert set(TradeConfig.model_fields) <= written  # every key is shown, set or commented
    for y in sorted((REPO / "strategies").glob("*.yaml")):
        load_strategy_config(y)


# ------------------------------------------------------------------------------------- errors
def test_misspelled_key_names_file_key_and_suggestion() -> None:
    text = error_of(write("trade.yaml", "adjust_max_sise: 0.2\n"))
    assert text == "trade.yaml: unknown key 'adjust_max_sise' (did you mean 'adjust_max_size'?)"
    text = error_of(write("s.yaml", "close_positon: true\n"), load_strategy_config)
    assert text == "s.yaml: unknown key 'close_positon' (did you mean 'close_position'?)"
    text = error_of(write("s.yaml", "subscribe: {boards: true}\n"), load_strategy_config)
    assert text == "s.yaml: unknown key 'subscribe.boards' (did you mean 'subscribe.board'?)"
    # A misspelled nested key is reported before the "missing" error it causes.
    text = error_of(write("s.yaml", "no_trade: [{start: '04:00', edn: '04:10'}]\n"), load_strategy_config)
    assert text == "s.yaml: unknown key 'no_trade[0].edn' (did you mean 'no_trade[0].end'?) (and 1 more)"
    assert error_of(write("trade.yaml", "zzz: 1\n")) == "trade.yaml: unknown key 'zzz'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pos_server_check_interval: abc\n",
         "'pos_server_check_interval' must be a finite number >= 0.05 and <= 86400, got 'abc'"),
        ("pos_server_check_interval: -1\n",
         "'pos_server_check_interval' must be a finite number >= 0.05 and <= 86400, got -1"),
        ("adjust_max_size: true\n", "'adjust_max_size' must be a finite number > 0, got true"),
        ("adjust_consecutive: 2.5\n", "'adjust_consecutive' must be an integer >= 1 and <= 100, got 2.5"),
        ("console_output: maybe\n", "'console_output' must be true or false, got 'maybe'"),
        ("log_level: LOUD\n", "'log_level' must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL', got 'LOUD'"),
        ("product: FX_BTC_JP\n", "'product' is not a known product, got 'FX_BTC_JP' (did you mean 'FX_BTC_JPY'?)"),
        ("pos_server: localhost\n", "'pos_server' must be a [host, port] list with a port 1-65535, got 'localhost'"),
        ("pos_server: [localhost, 70000]\n", "'pos_server' must be a [host, port] list with a port 1-65535, got ['localhost', 70000]"),
        ("endpoint: ftp://x\n", "'endpoint' must be a URL starting with http:// or https://, got 'ftp://x'"),
        ("strategy_py: mm.yaml\n", "'strategy_py' must be a .py file path, got 'mm.yaml'"),
        ("trade_health: STOP\n", "'trade_health' must be one of 'NORMAL', 'BUSY', 'VERY BUSY', 'SUPER BUSY', got 'STOP'"),
        ("apikey: [a, b]\n", "'apikey' must be a string"),
        ("a: 1\nb: 2\nc: 3\n", "unknown key 'a' (and 2 more)"),
    ],
)
def test_wrong_value_is_one_line(text: str, expected: str) -> None:
    assert error_of(write("trade.yaml", text)) == f"trade.yaml: {expected}"


def test_values_are_read_leniently_where_unambiguous() -> None:
    cfg = load_trade_config(write("trade.yaml", """\
        pos_server: "localhost:51000"
        pos_server_discord_influxdb: [127.0.0.1, "8086"]
        pos_server_discord_interval: 0.5
        log_level: debug
        trade_health: very_busy
        adjust_consecutive: "3"
        pos_server_evict_after:
    """))
    assert cfg.pos_server == ("localhost", 51000)
    assert cfg.pos_server_discord_influxdb == ("127.0.0.1", 8086)
    assert cfg.pos_server_discord_interval == 0.5
    assert (cfg.log_level, cfg.trade_health, cfg.adjust_consecutive) == ("DEBUG", "VERY BUSY", 3)
    assert cfg.pos_server_evict_after == 300.0  # `key:` with no value = the default


def test_yaml_problems_are_one_line_with_position() -> None:
    assert error_of(write("trade.yaml", "product: FX_BTC_JPY\nbad: 1\n  worse: 2\n")) == (
        "trade.yaml: YAML syntax error at line 3, column 8: mapping values are not allowed here"
    )
    assert error_of(write("trade.yaml", "a: 1\nb:\n\tc: 1\n")).startswith("trade.yaml: YAML syntax error at line 3")
    assert error_of(write("trade.yaml", "product: BTC_JPY\nproduct: FX_BTC_JPY\n")) == (
        "trade.yaml: duplicate key 'product' at line 2, column 1"
    )
    assert error_of(write("trade.yaml", "- 1\n- 2\n")) == (
        "trade.yaml: the top level must be a mapping of 'key: value' lines, got list"
    )
    assert error_of(Path("nowhere.yaml")) == "nowhere.yaml: file not found"
    Path("adir.yaml").mkdir()
    assert error_of(Path("adir.yaml")) == "adir.yaml: is a directory, not a YAML file"
    Path("latin.yaml").write_bytes(b"product: \xff\n")
    assert error_of(Path("latin.yaml")).startswith("latin.yaml: not UTF-8 text")


def test_secret_value_is_never_echoed_in_an_error() -> None:
    text = error_of(write("trade.yaml", "secret: [hunter2-very-secret]\n"))
    assert "hunter2" not in text


# ------------------------------------------------------------------------------- env, secrets
def test_env_overrides_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    path = write("trade.yaml", "apikey: file-key\nsecret: file-secret\npos_server_secret: file-pos\n")
    assert load_trade_config(path).api_key() == "file-key"
    monkeypatch.setenv("BFSX_APIKEY", "env-key")
    monkeypatch.setenv("BFSX_SECRET", "env-secret")
    monkeypatch.setenv("BFSX_POS_SERVER_SECRET", "env-pos")
    cfg = load_trade_config(path)
    assert (cfg.api_key(), cfg.api_secret(), cfg.pos_server_secret_value()) == ("env-key", "env-secret", "env-pos")
    monkeypatch.setenv("BFSX_SECRET", "")  # empty env = not set
    assert load_trade_config(path).api_secret() == "file-secret"


def test_secrets_absent_from_repr_str_and_redacted() -> None:
    cfg = load_trade_config(write("trade.yaml", """\
        apikey: KEY-abcdef123
        secret: SECRET-xyz789
        pos_server: [10.1.2.3, 51000]
        pos_server_secret: POS-s3cr3t-long-enough
        pos_server_discord: https://discord.com/api/webhooks/123456/TOKENtokenTOKEN
    """))
    red = cfg.redacted()
    for text in (repr(cfg), str(cfg), str(red), repr(cfg.model_dump())):
        for secret in ("KEY-abcdef123", "SECRET-xyz789", "POS-s3cr3t-long-enough", "TOKENtokenTOKEN", "123456"):
            assert secret not in text
    assert red["apikey"] == red["secret"] == red["pos_server_secret"] == "***"
    assert red["pos_server_discord"] == "discord.com/api…"
    assert red["pos_server"] == ["10.1.2.3", 51000]
    assert cfg.pos_server_discord_value().endswith("TOKENtokenTOKEN")
    assert sorted(cfg.secret_values()) == sorted(
        ["KEY-abcdef123", "SECRET-xyz789", "POS-s3cr3t-long-enough",
         "https://discord.com/api/webhooks/123456/TOKENtokenTOKEN"]
    )
    s = load_strategy_config(write("s.yaml", "discord_webhook: https://discord.com/api/webhooks/9/STRATtok\n"))
    assert "STRATtok" not in repr(s) and "STRATtok" not in str(s.redacted())


def test_remote_pos_server_requires_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for text, host in (("pos_server: [10.0.0.5, 51000]\n", "10.0.0.5"),
                       ("pos_server: [vps2.example, 51000]\n", "vps2.example"),
                       ("pos_server: [localhost, 51000]\npos_server_bind: 0.0.0.0\n", "0.0.0.0")):
        assert error_of(write("trade.yaml", text)) == (
            f"trade.yaml: 'pos_server_secret' is required when the position server host is not loopback "
            f"('{host}'); or set BFSX_POS_SERVER_SECRET"
        )
    for host in ("localhost", "127.0.0.1", "127.0.0.2", "::1"):
        cfg = load_trade_config(write("trade.yaml", f"pos_server: ['{host}', 51000]\n"))
        assert cfg.pos_server_bind_address() == (host, 51000)
    cfg = load_trade_config(write(
        "trade.yaml", "pos_server: [10.0.0.5, 51000]\npos_server_bind: 0.0.0.0\npos_server_secret: s3cret!-16-chars\n"))
    assert cfg.pos_server_bind_address() == ("0.0.0.0", 51000)
    monkeypatch.setenv("BFSX_POS_SERVER_SECRET", "from-env-16-chars")
    assert load_trade_config(write("trade.yaml", "pos_server: [10.0.0.5, 51000]\n")).pos_server_secret_value() == (
        "from-env-16-chars")
    unsafe = TradeConfig().model_copy(update={"pos_server": ("10.0.0.5", 1)})
    with pytest.raises(ConfigError, match="'pos_server_secret' is required"):
        unsafe.require_secret_for_remote()


def test_changed_keys() -> None:
    a = load_trade_config(write("trade.yaml", "adjust_max_size: 0.1\n"))
    b = load_trade_config(write("trade.yaml", "adjust_max_size: 0.2\nproduct: BTC_JPY\n"))
    assert changed_keys(a, b) == ["product", "bot_name", "adjust_max_size", "log_folder"]


# ---------------------------------------------------------------------------------- no_trade
def jst(h: int, m: int, day: int = 1) -> datetime:
    return datetime(2024, 6, day, h, m, tzinfo=JST)  # 2024-06-01 is a Saturday


def test_no_trade_windows_forms_and_midnight() -> None:
    cfg = load_strategy_config(write("s.yaml", """\
        no_trade:
          - 03:55-04:15
          - {start: 23:50, end: 0:10}
          - {start: "12:00", end: "13:00", weekdays: [sun, 月]}
          - "22:00-24:00"
    """))
    assert [str(w) for w in cfg.no_trade] == [
        "03:55-04:15 JST", "23:50-00:10 JST", "12:00-13:00 JST Mon,Sun", "22:00-00:00 JST",
    ]
    assert cfg.in_no_trade(jst(3, 55)) and cfg.in_no_trade(jst(4, 14))
    assert not cfg.in_no_trade(jst(4, 15)) and not cfg.in_no_trade(jst(3, 54))
    # across midnight, on both sides
    assert cfg.in_no_trade(jst(23, 59)) and cfg.in_no_trade(jst(0, 5)) and not cfg.in_no_trade(jst(0, 10))
    # weekdays: Saturday the 1st no, Sunday the 2nd and Monday the 3rd yes
    assert not cfg.in_no_trade(jst(12, 30, day=1))
    assert cfg.in_no_trade(jst(12, 30, day=2)) and cfg.in_no_trade(jst(12, 30, day=3))
    # times in another zone are converted to JST; a naive time is taken as JST
    utc = UTC
    assert cfg.in_no_trade(datetime(2024, 6, 1, 18, 56, tzinfo=utc))  # 03:56 JST
    assert cfg.in_no_trade(datetime(2024, 6, 1, 3, 56))
    assert cfg.in_no_trade(jst(22, 30))
    assert isinstance(cfg.in_no_trade(), bool)


def test_weekday_of_a_midnight_window_is_the_day_it_starts() -> None:
    cfg = load_strategy_config(write("s.yaml", "no_trade: [{start: '23:00', end: '01:00', weekdays: [sat]}]\n"))
    assert cfg.in_no_trade(jst(23, 30, day=1))  # Saturday night
    assert cfg.in_no_trade(jst(0, 30, day=2))  # early Sunday: still Saturday's window
    assert not cfg.in_no_trade(jst(0, 30, day=1))  # early Saturday: Friday's window, not listed
    assert not cfg.in_no_trade(jst(23, 30, day=2))


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("25:00-04:15", "'no_trade[0].start' must be a time HH:MM (JST), got '25:00'"),
        ("'04:00'", "'no_trade[0]' must be a window \"HH:MM-HH:MM\" or {start, end}, got '04:00'"),
        ("{start: '04:00', end: '04:00'}", "'no_trade[0]' start and end must differ, got 04:00 for both"),
        ("{start: '04:00', end: '04:10', weekdays: [funday]}",
         "'no_trade[0].weekdays' must list days like [mon, sat] (or 月..日), got 'funday'"),
    ],
)
def test_bad_no_trade_window(window: str, expected: str) -> None:
    assert error_of(write("s.yaml", f"no_trade:\n  - {window}\n"), load_strategy_config) == f"s.yaml: {expected}"


def test_strategy_keys_checked_and_parameters_free() -> None:
    cfg = load_strategy_config(write("s.yaml", """\
        parameters: {lot: 0.01, anything: [1, 2], nested: {a: b}}
        close_position: true
        subscribe: {board: false}
        minute_to_expire: 10
        log_level: warning
        discord_interval: 0.5
    """))
    assert cfg.parameters == {"lot": 0.01, "anything": [1, 2], "nested": {"a": "b"}}
    assert cfg.close_position and not cfg.subscribe.board and cfg.subscribe.executions
    assert (cfg.minute_to_expire, cfg.log_level, cfg.discord_interval) == (10, "WARNING", 0.5)
    assert error_of(write("s.yaml", "minute_to_expire: 0\n"), load_strategy_config) == (
        "s.yaml: 'minute_to_expire' must be an integer >= 1 and <= 43200, got 0"
    )
    assert error_of(write("s.yaml", "subscribe: yes\n"), load_strategy_config) == (
        "s.yaml: 'subscribe' must be a mapping with keys executions, board, ticker, got true"
    )
    assert isinstance(StrategyConfig(), StrategyConfig)


# ------------------------------------------------------------------------ command-line forms
def test_four_argument_forms() -> None:
    assert resolve_trade_args([]) == ("trade.yaml", None, None)
    assert resolve_trade_args(["my.yaml"]) == ("my.yaml", None, None)
    assert resolve_trade_args(["s/mm.py", "s/mm.yaml"]) == ("trade.yaml", "s/mm.py", "s/mm.yaml")
    assert resolve_trade_args(["my.yml", "s/mm.py", "s/mm.yaml"]) == ("my.yml", "s/mm.py", "s/mm.yaml")
    assert resolve_trade_args(["my.yaml"]).trade_yaml == "my.yaml"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["mm.py"], "one argument is the run config TRADE_YAML (.yaml), got 'mm.py'"),
        (["mm.yaml", "mm.py"], "2 arguments are STRATEGY_PY STRATEGY_YAML: 'mm.yaml' is not a .py file"),
        (["t.yaml", "mm.yaml", "mm.yaml"], "3 arguments are TRADE_YAML STRATEGY_PY STRATEGY_YAML: 'mm.yaml' is not a .py file"),
        (["t.py", "mm.py", "mm.yaml"], "3 arguments are TRADE_YAML STRATEGY_PY STRATEGY_YAML: 't.py' is not a .yaml file"),
        (["mm.py", "mm.txt"], "'mm.txt' is not a .yaml file"),
        (["a.yaml", "b.py", "c.yaml", "d"], "too many arguments (4)"),
    ],
)
def test_wrong_argument_forms(files: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_trade_args(files)
    assert expected in str(info.value) and "\n" not in str(info.value)


def make_strategy(folder: str = "strategies") -> None:
    write(f"{folder}/mm.py", "import bfsx\n\nclass MyStrategy(bfsx.Strategy):\n    pass\n")
    write(f"{folder}/mm.yaml", "parameters: {lot: 0.01}\n")


def test_load_run_in_each_form() -> None:
    make_strategy()
    write("other/alt.py", "")
    write("other/alt.yaml", "parameters: {lot: 0.02}\n")
    write("trade.yaml", "apikey: k-1234\nsecret: s-1234\nstrategy_py: strategies/mm.py\nstrategy_yaml: strategies/mm.yaml\n")
    write("conf/bot.yaml", "apikey: k-1234\nsecret: s-1234\nstrategy_py: strategies/mm.py\nstrategy_yaml: strategies/mm.yaml\n")

    trade, strat = load_run([])
    assert (trade.strategy_py, trade.bot_name, strat.parameters) == (
        "strategies/mm.py", f"mm_FX_BTC_JPY_{path_hash('strategies/mm.yaml')}", {"lot": 0.01})
    trade, strat = load_run(["conf/bot.yaml"])
    assert trade.source == Path("conf/bot.yaml") and strat.parameters == {"lot": 0.01}
    trade, strat = load_run(["other/alt.py", "other/alt.yaml"])
    assert (trade.strategy_py, trade.bot_name, strat.parameters) == (
        "other/alt.py", f"alt_FX_BTC_JPY_{path_hash('other/alt.yaml')}", {"lot": 0.02})
    trade, strat = load_run(["conf/bot.yaml", "other/alt.py", "other/alt.yaml"])
    assert trade.strategy_yaml == "other/alt.yaml" and trade.source == Path("conf/bot.yaml")


def test_strategy_paths_fall_back_to_the_config_folder() -> None:
    make_strategy("conf/strategies")
    write("conf/bot.yaml", "apikey: k-1234\nsecret: s-1234\nstrategy_py: strategies/mm.py\nstrategy_yaml: strategies/mm.yaml\n")
    trade, _ = load_run(["conf/bot.yaml"])
    assert Path(trade.strategy_py or "") == Path("conf/strategies/mm.py")


@pytest.mark.parametrize(
    ("trade_yaml", "files", "expected"),
    [
        (None, [], "trade.yaml: file not found in the current directory (usage: bfsx trade"),
        ("apikey: k-1234\nsecret: s-1234\n", [], "trade.yaml: 'strategy_py' is required (or give STRATEGY_PY"),
        ("apikey: k-1234\nsecret: s-1234\nstrategy_py: nope.py\nstrategy_yaml: strategies/mm.yaml\n", [],
         "trade.yaml: 'strategy_py' file not found: 'nope.py'"),
        ("apikey: k-1234\nsecret: s-1234\n", ["strategies/mm.py", "missing.yaml"], "missing.yaml: file not found"),
        ("strategy_py: strategies/mm.py\nstrategy_yaml: strategies/mm.yaml\n", [],
         "trade.yaml: 'apikey' is required for trading (or set BFSX_APIKEY / BFSX_SECRET)"),
        ("adjust_max_sise: 1\n", [], "trade.yaml: unknown key 'adjust_max_sise' (did you mean 'adjust_max_size'?)"),
    ],
)
def test_load_run_errors(trade_yaml: str | None, files: list[str], expected: str) -> None:
    make_strategy()
    if trade_yaml is not None:
        write("trade.yaml", trade_yaml)
    with pytest.raises(ConfigError) as info:
        load_run(files)
    assert str(info.value).startswith(expected), str(info.value)


def test_load_run_reports_a_bad_strategy_yaml() -> None:
    make_strategy()
    write("strategies/mm.yaml", "paramters: {}\n")
    write("trade.yaml", "apikey: k-1234\nsecret: s-1234\nstrategy_py: strategies/mm.py\nstrategy_yaml: strategies/mm.yaml\n")
    with pytest.raises(ConfigError, match=r"^strategies/mm.yaml: unknown key 'paramters' \(did you mean 'parameters'\?\)$"):
        load_run([])


def test_env_credentials_make_load_run_work(monkeypatch: pytest.MonkeyPatch) -> None:
    make_strategy()
    write("trade.yaml", "strategy_py: strategies/mm.py\nstrategy_yaml: strategies/mm.yaml\n")
    monkeypatch.setenv("BFSX_APIKEY", "env-key-1")
    monkeypatch.setenv("BFSX_SECRET", "env-secret-1")
    trade, _ = load_run([])
    assert trade.has_credentials


def test_naive_and_aware_helpers_do_not_drift() -> None:
    # The day boundary used by in_no_trade is JST whatever the machine's zone.
    w = load_strategy_config(write("s.yaml", "no_trade: ['00:00-00:30']\n"))
    assert w.in_no_trade(datetime(2024, 6, 1, 15, 10, tzinfo=timezone(timedelta(0))))
    assert not w.in_no_trade(datetime(2024, 6, 1, 0, 10, tzinfo=timezone(timedelta(0))))
