"""The simulator against the real engine's ``orchestrate run`` transcripts (issue #14,
``tests/fixtures/recordings/cli-runs``): each scenario, played on the simulator with the engine setting of
the recording, must give the same per-role event sequence as one of the recorded tries and the same record
fields (how the task ended, its usage, asks, errors, completion text).

The sequences are compared with the usage events left out: when the throttled ``taskTokenUsageUpdated``
falls depends on the engine's timing (its 2 s window against the model's latency), the rest does not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ipc_bridge.simulator.replay import (
    SCENARIOS,
    Event,
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


def without_usage(events: list[Event]) -> dict[str, tuple[list[str], int]]:
    """Per role: the event sequence without usage events and token updates, and how many token updates.

    Where a request's token update (``say:api_req_started~``) lands is the engine's race between the
    stream's usage chunk and what the model's answer does (before or after the text; in 5 of 20 real
    completions before the final text, else after the completion ask); how many requests show one is not
    (a task aborted by new_task or finishTask never shows its last). The tests below check where the
    simulator puts the completion's."""
    out: dict[str, tuple[list[str], int]] = {}
    for role, seq in sequences([ev for ev in events if ev.get("eventName") != USAGE]).items():
        updates = seq.count("say:api_req_started~")
        kept = [kind for kind in seq if kind != "say:api_req_started~"]
        out[role] = ([kind for i, kind in enumerate(kept) if i == 0 or kept[i - 1] != kind], updates)
    return out


def cases() -> list[tuple[Scenario, str]]:
    return [(s, e) for s in SCENARIOS for e in s.engines if recording_files(RECORDINGS, s.name, e)]


def test_every_recording_has_a_scenario() -> None:
    played = {p for s, e in cases() for p in recording_files(RECORDINGS, s.name, e)}
    assert played == set(RECORDINGS.glob("*/*.jsonl"))


@pytest.mark.parametrize(("scenario", "engine"), cases(), ids=lambda v: v if isinstance(v, str) else v.name)
async def test_scenario_replays_like_the_engine(scenario: Scenario, engine: str) -> None:
    simulated = await play(scenario, engine)
    tries = [load_events(p) for p in recording_files(RECORDINGS, scenario.name, engine)]
    matching = [rec for rec in tries if without_usage(rec) == without_usage(simulated)]
    assert matching, "\n".join(diff_lines(simulated, tries[0]))
    assert record_fields(simulated) == record_fields(matching[0])


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
