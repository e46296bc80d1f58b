"""``orchestrate watch``: follow a bridge's events, locally (ipc) or from another machine (TCP + CURVE).

A read-only client: it attaches nothing, so the bridge forgets it when it goes. Each slot is followed
with :meth:`~ipc_bridge.client.bridge_client.BridgeClient.events` (in seq order, gaps filled from the bridge's replay
buffer); without ``--slot`` the bridge's slot list is polled so that slots attached later are followed
from their first event.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import BridgeError, Event, EventGap
from ipc_bridge.wire.connection_file import read_connection_file
from ipc_bridge.wire.curve import CurveError
from ipc_bridge.wire.messages import TaskEventContent

SUMMARY_CHARS = 120

Printer = Callable[[Event], None]


def format_event(event: Event) -> str:
    """One line: local time, slot, #seq, event name (or msg_type), task id, a short summary."""
    try:
        when = datetime.fromisoformat(event.header.date).astimezone().strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        when = event.header.date
    head = f"{when} {event.slot or '-'} #{event.seq if event.seq is not None else '-'}"
    content = event.content
    if isinstance(content, TaskEventContent):
        payload = content.event.get("payload")
        rest = payload[1:] if isinstance(payload, list) else payload
        if event.event_name == "message" and isinstance(payload, list) and payload:
            summary = _message_summary(payload[0])
        else:
            summary = orjson.dumps(rest).decode() if rest else ""
        parts = [head, event.event_name or "task_event", content.task_id or "-", _cut(summary)]
    else:
        fields = content.model_dump(mode="json", exclude={"slot", "seq"})
        summary = " ".join(f"{k}={_cut(str(v), 60)}" for k, v in fields.items() if v is not None)
        parts = [head, event.msg_type, summary]
    return " ".join(p for p in parts if p)


def _message_summary(data: Any) -> str:
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        return ""
    kind = message.get("say") or message.get("ask") or "?"
    text = str(message.get("text") or "").replace("\n", " ")
    partial = " (partial)" if message.get("partial") else ""
    return f"{message.get('type', '?')}:{kind}{partial} {text}"


def _cut(text: str, limit: int = SUMMARY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_json(event: Event) -> str:
    return orjson.dumps(
        {
            "topic": event.topic.decode(errors="replace"),
            "msg_type": event.msg_type,
            "header": event.header.to_dict(),
            "parent_header": event.parent,
            "content": event.content.model_dump(mode="json"),
        }
    ).decode()


class Watcher:
    """Follows slots of one bridge and hands every event to ``emit``."""

    def __init__(self, client: BridgeClient, emit: Printer, since: int | None, poll: float) -> None:
        self.client = client
        self.emit = emit
        self.since = since
        self.poll = poll
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def run(self, slots: tuple[str, ...]) -> None:
        """Until cancelled, or until a stream fails for good (bridge lost or restarted)."""
        try:
            if slots:
                for name in slots:
                    self._follow(name, self.since)
                await asyncio.gather(*self._tasks.values())
            else:
                await self._discover()
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _discover(self) -> None:
        first = True
        while True:
            for info in await self.client.slots():
                if info.slot not in self._tasks:
                    # Slots attached after we started are followed from their first event.
                    self._follow(info.slot, self.since if first else 0)
            first = False
            for task in self._tasks.values():
                if task.done():
                    task.result()  # a stream that failed for good ends the watch
            await asyncio.sleep(self.poll)

    def _follow(self, slot: str, since: int | None) -> None:
        self._tasks[slot] = asyncio.ensure_future(self._stream(slot, since))

    async def _stream(self, slot: str, since: int | None) -> None:
        while True:
            try:
                async for event in self.client.events(slot, since):
                    self.emit(event)
                    since = event.seq
            except EventGap as exc:
                click.echo(f"watch: {exc}; going on from seq {exc.available}", err=True)
                since = exc.available - 1


async def watch_bridge(
    connection_file: Path, slots: tuple[str, ...], since: int | None, emit: Printer
) -> int:
    """Follow until SIGINT/SIGTERM (exit status 0) or a fatal client error (1)."""
    info = read_connection_file(connection_file)
    client = await BridgeClient.connect(info)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = Watcher(client, emit, since, poll=info.hugz_interval or 1.0)
    run = asyncio.ensure_future(watcher.run(slots))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            return 0
        exc = run.exception()
        if isinstance(exc, BrokenPipeError):  # `orchestrate watch ... | head`: the reader is done
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
            return 0
        click.echo(f"watch: {exc or 'stream ended'}", err=True)
        return 1
    finally:
        for task in (run, stopped):
            task.cancel()
        await asyncio.gather(run, stopped, return_exceptions=True)
        await client.close(linger_ms=0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@click.command()
@click.argument("connection_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--slot",
    "slots",
    multiple=True,
    metavar="SLOT",
    help="Follow only this slot (repeatable) [default: every slot, and slots attached later].",
)
@click.option(
    "--since",
    type=click.IntRange(min=0),
    help="First replay the slot's buffered events after this seq (0: all of them) [default: from now on].",
)
@click.option("--json", "as_json", is_flag=True, help="One raw JSON message per line instead of text.")
def watch(connection_file: Path, slots: tuple[str, ...], since: int | None, as_json: bool) -> None:
    """Print a bridge's events, one line each, until Ctrl-C.

    CONNECTION_FILE is the bridge's connection file: the ipc one on the same machine, or the TCP one
    (written with `orchestrate bridge --listen`) from another machine.
    """
    fmt = event_json if as_json else format_event

    def emit(event: Event) -> None:
        click.echo(fmt(event))  # click.echo flushes: a pipe reader sees each event as it comes

    try:
        code = asyncio.run(watch_bridge(connection_file, slots, since, emit))
    except (BridgeError, CurveError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
