"""The one duration grammar (ipc_bridge/durations.py), read by the suite and by the simulator's scripts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from ipc_bridge.durations import not_bool, parse_duration, parse_positive_duration
from ipc_bridge.simulator.script import ScriptError, host_options, parse_script
from orchestrator.suite.config import load_suite
from orchestrator.suite.yaml_loader import SuiteError

HINT = "500ms, 90s, 5m, 1h"

# Every form either reader took before they shared the grammar: (text, seconds).
SUITE_FORMS = [
    ("5m", 300.0),
    ("90s", 90.0),
    ("500ms", 0.5),
    ("1h", 3600.0),
    ("1m30s", 90.0),
    ("1h2m3s", 3723.0),
    ("2.5s", 2.5),
    (" 10 s ", 10.0),
    ("1m 30s", 90.0),
    ("45", 45.0),
    ("1e3", 1000.0),
    ("5S", 5.0),
    (90, 90.0),
    (1.5, 1.5),
]
SCRIPT_FORMS = [
    ("2s", 2.0),
    ("500ms", 0.5),
    ("1.5m", 90.0),
    (" 3 ", 3.0),
    ("2sec", 2.0),
    ("2min", 120.0),
    ("2.", 2.0),
    (".5s", 0.5),
    (4, 4.0),
    (0.25, 0.25),
]


@pytest.mark.parametrize(("text", "seconds"), SUITE_FORMS + SCRIPT_FORMS)
def test_both_readers_take_every_form_either_took(text: object, seconds: float) -> None:
    assert parse_positive_duration(text) == seconds
    assert parse_duration(text) == seconds
    assert parse_script({"duration": text}).duration == seconds


@pytest.mark.parametrize(
    "bad", ["5 minutes", "", "5x", "m5", "2 parsecs", "inf", "nan", "1_000", "1m30", True, None, [5]]
)
def test_not_a_duration_anywhere(bad: object) -> None:
    for parse in (parse_duration, parse_positive_duration):
        with pytest.raises(ValueError, match=HINT):
            parse(bad)
    with pytest.raises(ScriptError, match="invalid duration"):
        parse_script({"duration": bad})


@pytest.mark.parametrize("bad", ["-5s", "-1m", -1, "-2", float("inf"), float("nan")])
def test_negative_and_infinite_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"negative|finite"):
        parse_duration(bad)
    with pytest.raises(ValueError, match=r"more than zero|finite"):
        parse_positive_duration(bad)


@pytest.mark.parametrize("zero", [0, "0", "0s", "0ms"])
def test_zero_is_a_pause_not_a_timer(zero: object) -> None:
    """A script may pause for nothing (``write_delay: 0``); a suite's timer of zero would fire at once."""
    assert parse_script({"write_delay": zero}).write_delay == 0
    with pytest.raises(ValueError, match="more than zero"):
        parse_positive_duration(zero)


def test_the_suite_reads_the_forms_the_simulator_took(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        textwrap.dedent(
            """\
            name: t
            defaults: {timeout: 2min, ask_timeout: .5m, cancel_timeout: 3sec}
            cases:
              - {id: a, prompt: x, simulate: {duration: 1h, write_delay: 1m30s}}
            """
        )
    )
    loaded = load_suite(suite)
    assert (loaded.defaults.timeout, loaded.defaults.ask_timeout, loaded.defaults.cancel_timeout) == (
        120.0,
        30.0,
        3.0,
    )
    suite.write_text(suite.read_text().replace("timeout: 2min", "timeout: 0s"))
    with pytest.raises(SuiteError, match="more than zero"):
        load_suite(suite)


@pytest.mark.parametrize("word", ["yes", "on", "true"])
def test_a_yaml_boolean_is_no_number_for_the_suite_nor_the_simulator(tmp_path: Path, word: str) -> None:
    """One rule (:func:`not_bool`) for the suite's counts and the simulator's numbers, each naming what
    it expected."""
    with pytest.raises(ScriptError, match="expected a number, got True"):
        host_options(**yaml.safe_load(f"seed: {word}"))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: t\ndefaults: {{retries: {word}}}\ncases: [{{id: a, prompt: x}}]\n")
    with pytest.raises(SuiteError, match="expected a whole number, got True"):
        load_suite(suite)
    assert not_bool(3) == 3 and not_bool("3") == "3"
