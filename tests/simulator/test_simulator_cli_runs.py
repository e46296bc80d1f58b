"""The simulator against the real engine's ``orchestrate run`` transcripts (issue #14,
``tests/fixtures/recordings/cli-runs``): each recorded try, played on the simulator with the engine setting
of the recording and that try's script, must give the same per-role event sequence (after merging repeated
partial updates, usage events included) and the same record fields (how the task ended, its usage, asks,
errors, completion text).

Two tries of one scenario may differ where the engine races (when a request's token update lands); the
scenario states that per try with the script's ``usage_at`` (``ipc_bridge.simulator.replay.Scenario.tries``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ipc_bridge.simulator.replay import (
    SCENARIOS,
    Scenario,
    diff_lines,
    load_events,
    play,
    record_fields,
    recording_files,
    sequences,
)

pytestmark = pytest.mark.timeout(60)

RECORDINGS = Path(__file__).parents[1] / "fixtures" / "recordings" / "cli-runs"
USAGE = "taskTokenUsageUpdated"


def cases() -> list[tuple[Scenario, str, Path]]:
    return [
        (s, e, path) for s in SCENARIOS for e in s.engines for path in recording_files(RECORDINGS, s.name, e)
    ]


def test_every_recording_has_a_scenario() -> None:
    played = {path for _, _, path in cases()}
    assert played == set(RECORDINGS.glob("*/*.jsonl"))


@pytest.mark.parametrize(
    ("scenario", "engine", "recording"),
    cases(),
    ids=lambda v: v.stem if isinstance(v, Path) else v if isinstance(v, str) else v.name,
)
async def test_scenario_replays_like_the_engine(scenario: Scenario, engine: str, recording: Path) -> None:
    simulated = await play(scenario, engine, recording)
    recorded = load_events(recording)
    ours, theirs = sequences(simulated), sequences(recorded)
    why = "\n".join(diff_lines(simulated, recorded))
    # Equal but for token updates the 2 s usage throttle adds when a busy machine stretches a turn past
    # it (the engine does the same): every recorded one is there, in its place.
    assert {r: _without_usage(s) for r, s in ours.items()} == {
        r: _without_usage(s) for r, s in theirs.items()
    }, why
    for role, recorded_seq in theirs.items():
        assert _in_order(recorded_seq, ours[role]), why
    assert record_fields(simulated) == record_fields(recorded)


def _without_usage(seq: list[str]) -> list[str]:
    return [e for e in seq if e != USAGE]


def _in_order(part: list[str], whole: list[str]) -> bool:
    """``part`` is ``whole`` with none but some of its token updates left out."""
    i = 0
    for event in whole:
        if i < len(part) and part[i] == event:
            i += 1
        elif event != USAGE:
            return False
    return i == len(part)


@pytest.mark.parametrize("engine", ["3.52", "3.50"])
async def test_last_token_update_follows_the_completion_ask(engine: str) -> None:
    """Issue #14 item 3: most real completions show the last request's tokens after the ask."""
    scenario = next(s for s in SCENARIOS if s.name == "write-ok")
    seq = sequences(await play(scenario, engine))["t0"]
    ask = seq.index("ask:completion_result")
    assert seq[ask + 1] == "say:api_req_started~"
    assert "say:completion_result~" not in seq  # whole after the final text, not streamed
    recorded = sequences(load_events(recording_files(RECORDINGS, "write-ok", engine)[0]))["t0"]
    assert recorded[recorded.index("ask:completion_result") + 1] == "say:api_req_started~"


async def test_completion_order_3_50() -> None:
    """Issue #14 item 4: on 3.50 the final text, the whole completion, usage, taskCompleted, the ask."""
    scenario = next(s for s in SCENARIOS if s.name == "write-wrong")
    seq = sequences(await play(scenario, "3.50"))["t0"]
    end = seq[seq.index("say:text~", seq.index("taskAskResponded")) :]
    expected = ["say:text~", "say:completion_result", USAGE, "taskCompleted", "ask:completion_result"]
    assert end[:5] == expected
    recorded = sequences(load_events(recording_files(RECORDINGS, "write-wrong", "3.50")[0]))["t0"]
    assert recorded[recorded.index("say:text~", recorded.index("taskAskResponded")) :][:5] == expected


@pytest.mark.parametrize("engine", ["3.52", "3.50"])
async def test_the_write_delay_puts_usage_where_the_engine_does(engine: str) -> None:
    """The engine waits ~1 s after a file edit before its next request, so the usage throttle's trailing
    edge falls in the next turn; the planned timeline makes that order independent of machine load."""
    scenario = next(s for s in SCENARIOS if s.name == "write-wrong")
    recorded = load_events(recording_files(RECORDINGS, "write-wrong", engine)[0])
    assert sequences(await play(scenario, engine)) == sequences(recorded)
    without = {**scenario.script, "write_delay": 0}
    assert sequences(await play(Scenario(scenario.name, scenario.prompt, without), engine)) != sequences(
        recorded
    )


@pytest.mark.parametrize(
    ("usage_at", "after"),
    [("text", "say:api_req_started"), ("ask", "say:text~"), (None, "say:text~"), ("end", "taskAskResponded")],
)
async def test_usage_at_places_the_token_update(usage_at: str | None, after: str) -> None:
    """A write's request shows its tokens while its text streams, before its ask (the default) or after
    the turn's last message, as the script says: the engine's race, stated per call."""
    base = next(s for s in SCENARIOS if s.name == "write-wrong")
    tool = {**base.script["tools"][0], "usage_at": usage_at}
    scenario = Scenario(base.name, base.prompt, {**base.script, "tools": [tool], "write_delay": 0})
    seq = sequences(await play(scenario, "3.52"))["t0"]
    first_update = seq.index("say:api_req_started~")
    assert seq[first_update - 1] == after


async def test_without_a_provider_profile_the_3_50_parent_keeps_its_provider() -> None:
    """Issue #14 item 1: on 3.50 the re-created parent restores the profile its history names; with
    ``currentApiConfigName: ""`` it names none and keeps StartNewTask's provider (docs/delegation-3.50.md),
    so the delegation completes as on 3.52."""
    base = next(s for s in SCENARIOS if s.name == "subtask")
    scenario = Scenario(base.name, base.prompt, base.script)  # stops at the completion ask's taskIdle
    events = await play(scenario, "3.50", configuration={"currentApiConfigName": ""})
    assert record_fields(events)["ended"] == "taskIdle"
    assert "say:api_req_retry_delayed~" not in sequences(events)["t0"]
    lost = await play(base, "3.50")  # the named profile ("default") is restored: retries for ever
    assert "say:api_req_retry_delayed~" in sequences(lost)["t0"]
