"""The default bot_name stays readable and cannot collide for two strategy yamls of the same name in
different folders (issue 10, item 4); the journal follows the name; an explicit bot_name wins."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from bfsx.account.journal import JOURNAL_FILE, Journal
from bfsx.config import ConfigError, TradeConfig, load_run, load_trade_config
from bfsx.config.trade import derived_bot_name

CREDENTIALS = "apikey: k-1234\nsecret: s-1234\n"


def strategy(folder: str, name: str = "mm") -> tuple[Path, Path]:
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.py").write_text("import bfsx\n\n\nclass MyStrategy(bfsx.Strategy):\n    pass\n")
    (d / f"{name}.yaml").write_text("parameters: {}\n")
    return d / f"{name}.py", d / f"{name}.yaml"


def test_same_stem_in_two_folders_gives_two_names_and_two_journals() -> None:
    Path("trade.yaml").write_text(CREDENTIALS)
    a_py, a_yaml = strategy("a")
    b_py, b_yaml = strategy("b")
    a, _ = load_run([str(a_py), str(a_yaml)])
    b, _ = load_run([str(b_py), str(b_yaml)])
    assert re.fullmatch(r"mm_FX_BTC_JPY_[0-9a-f]{4}", a.bot_name), a.bot_name
    assert re.fullmatch(r"mm_FX_BTC_JPY_[0-9a-f]{4}", b.bot_name), b.bot_name
    assert a.bot_name != b.bot_name
    assert a.log_folder == f"./logs/{a.bot_name}" and b.log_folder == f"./logs/{b.bot_name}"
    digest = hashlib.sha256(str(a_yaml.resolve()).encode()).hexdigest()[:4]
    assert a.bot_name == f"mm_FX_BTC_JPY_{digest}"
    # Two live bots, two journals: both open at once (one journal would refuse the second).
    with Journal(Path(a.log_folder) / JOURNAL_FILE), Journal(Path(b.log_folder) / JOURNAL_FILE):
        pass


def test_the_same_file_by_any_path_is_the_same_bot(tmp_path: Path) -> None:
    _, yml = strategy("s")
    link = tmp_path / "linked.yaml"
    link.symlink_to(yml.resolve())
    names = {derived_bot_name(p, "FX_BTC_JPY") for p in ("s/mm.yaml", "./s/mm.yaml", "s/../s/mm.yaml",
                                                           str(yml.resolve()))}
    assert len(names) == 1
    # A symlink has its own stem but resolves to the same file, so the hash agrees.
    assert derived_bot_name(link, "FX_BTC_JPY").endswith(next(iter(names))[-4:])
    # Stable: the same path always gives the same name (a restart finds its journal).
    assert derived_bot_name("s/mm.yaml", "FX_BTC_JPY") == derived_bot_name("s/mm.yaml", "FX_BTC_JPY")
    assert derived_bot_name("s/mm.yaml", "BTC_JPY").startswith("mm_BTC_JPY_")


def test_explicit_bot_name_wins_unchanged() -> None:
    Path("trade.yaml").write_text(CREDENTIALS + "bot_name: alpha\n")
    py, yml = strategy("a")
    trade, _ = load_run([str(py), str(yml)])
    assert (trade.bot_name, trade.log_folder) == ("alpha", "./logs/alpha")
    assert TradeConfig(bot_name="mm_FX_BTC_JPY", strategy_yaml="a/mm.yaml").bot_name == "mm_FX_BTC_JPY"
    assert TradeConfig().bot_name == "bot_FX_BTC_JPY"  # no strategy (the position server's config)


def test_derived_names_stay_valid_ids() -> None:
    long = derived_bot_name("x" * 100 + ".yaml", "FX_BTC_JPY")
    assert len(long) == 64 and long.startswith("xxx") and re.search(r"_FX_BTC_JPY_[0-9a-f]{4}$", long)
    spaced = derived_bot_name("my bot.yaml", "BTC_JPY")
    assert re.fullmatch(r"my_bot_BTC_JPY_[0-9a-f]{4}", spaced), spaced
    # What a derived name must satisfy is what an explicit one must: accepted as bot_name as is.
    assert TradeConfig(bot_name=spaced).bot_name == spaced


# ------------------------------------------------------------------- upgrading from the old default
def test_a_journal_under_the_old_default_name_stops_the_bot_with_a_hint() -> None:
    Path("trade.yaml").write_text(CREDENTIALS + "strategy_py: s/mm.py\nstrategy_yaml: s/mm.yaml\n")
    strategy("s")
    old = Path("logs/mm_FX_BTC_JPY")
    old.mkdir(parents=True)
    (old / JOURNAL_FILE).write_bytes(b"")
    new_name = derived_bot_name("s/mm.yaml", "FX_BTC_JPY")
    with pytest.raises(ConfigError) as info:
        load_run([])
    assert str(info.value) == (
        f"trade.yaml: found {old / JOURNAL_FILE}, this bot's journal under the old default bot_name "
        f"'mm_FX_BTC_JPY'; set 'bot_name: mm_FX_BTC_JPY' to keep it (the default is now '{new_name}')"
    )
    # Following the hint: the old journal is the bot's again.
    Path("trade.yaml").write_text(CREDENTIALS + "strategy_py: s/mm.py\nstrategy_yaml: s/mm.yaml\nbot_name: mm_FX_BTC_JPY\n")
    trade, _ = load_run([])
    assert Path(trade.log_folder) / JOURNAL_FILE == Path("./logs/mm_FX_BTC_JPY") / JOURNAL_FILE
    # Once the new folder has its own journal, the old one is history: no refusal.
    Path("trade.yaml").write_text(CREDENTIALS + "strategy_py: s/mm.py\nstrategy_yaml: s/mm.yaml\n")
    new = Path("logs") / new_name
    new.mkdir(parents=True)
    (new / JOURNAL_FILE).write_bytes(b"")
    assert load_run([])[0].bot_name == new_name


def test_an_explicit_log_folder_is_not_second_guessed() -> None:
    Path("trade.yaml").write_text(CREDENTIALS + "strategy_py: s/mm.py\nstrategy_yaml: s/mm.yaml\nlog_folder: mine\n")
    strategy("s")
    Path("logs/mm_FX_BTC_JPY").mkdir(parents=True)
    (Path("logs/mm_FX_BTC_JPY") / JOURNAL_FILE).write_bytes(b"")
    assert load_run([])[0].log_folder == "mine"
    assert load_trade_config(Path("trade.yaml")).bot_name == derived_bot_name("s/mm.yaml", "FX_BTC_JPY")
