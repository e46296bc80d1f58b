"""A failing model request (protocol notes 7.8): with auto-approval the engine retries for ever, showing
each wait as a ``say:api_req_retry_delayed`` countdown; without it, ``ask:api_req_failed`` and idle."""

from __future__ import annotations

from ipc_bridge.simulator.script import ApiError
from ipc_bridge.simulator.task import TaskInstance
from ipc_bridge.simulator.tools import dumps

AUTH_ERROR = (
    "Could not resolve authentication method. Expected either apiKey or authToken to be set. Or for one"
    ' of the "X-Api-Key" or "Authorization" headers to be explicitly omitted\n'
)
"""What the Anthropic SDK says when the re-created parent on 3.50 has no key (cli-runs subtask)."""


async def api_error(
    inst: TaskInstance, err: ApiError, *, auto: bool, scale: float, status_delay: float
) -> None:
    """The request fails: with auto-approval, retry countdowns for ever; without, api_req_failed, then
    taskIdle after the status delay. Never returns."""
    if not auto:
        await inst.clock.sleep(1.4 * scale)
        inst.ask("api_req_failed", err.failed_text())
        inst.schedule_status("taskIdle", status_delay)
        await inst.clock.forever()
    await inst.clock.sleep(1.3 * scale)
    await retry_forever(inst, err, err.retry_text(), scale)


async def lost_provider(inst: TaskInstance, err: ApiError, scale: float) -> None:
    """3.50 re-creates a delegating parent with the provider profile its history names ("default"),
    not with StartNewTask's configuration: that profile is empty, so it falls back to Anthropic without
    a key, and every request fails (cli-runs subtask 3.50.4; docs/delegation-3.50.md). Retries run
    for ever, like any API error with auto-approval."""
    inst.say("api_req_started", dumps({"apiProtocol": "anthropic"}))
    await inst.clock.sleep(0.05 * scale)
    await retry_forever(inst, err, AUTH_ERROR, scale)


async def retry_forever(inst: TaskInstance, err: ApiError, head: str, scale: float) -> None:
    """Auto-approved retries of a failing request: countdowns of growing waits, never ending."""
    wait = err.first_wait
    while True:
        ts = inst.say("api_req_retry_delayed", f"{head}<retry_timer>{wait}</retry_timer>", partial=True)
        for remaining in range(wait - 1, 0, -1):
            await inst.clock.sleep(scale)
            inst.update(ts, text=f"{head}<retry_timer>{remaining}</retry_timer>", partial=True)
        await inst.clock.sleep(scale)
        inst.update(ts, text=head, partial=False)
        await inst.clock.sleep(1.2 * scale)
        wait = min(wait * 2, err.max_wait)
