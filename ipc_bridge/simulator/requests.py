"""A model request of the scripted agent: the tokens and cost it reports, and where in its turn the engine
shows them.

Each request shows as ``say:api_req_started``; when it ends, that message is updated in place with
``tokensIn``, ``tokensOut``, ``cacheWrites``, ``cacheReads`` and ``cost``. The engine does that from a
background drain of the model's stream (Task.ts ``drainStreamInBackgroundToFindAllUsage``), which races
with what the turn does next: a script states the outcome of that race with ``usage_at``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipc_bridge.simulator.script import Script
from ipc_bridge.simulator.tools import dumps

DEFAULT_REQUEST = (1234, 56)
"""(tokens in, tokens out) per model request when the script gives no ``tokens`` (the recordings' stub)."""

POINTS = {"text": 0, "ask": 1, "end": 2}
"""Where in its turn a request's token update can show, in the order the turn reaches them: while the
text is still being finalized, before the tool's ask or the completion, after the turn's last message."""


@dataclass
class Request:
    """One model request of a turn: its ``say:api_req_started`` (``ts``) and where its token update shows
    (``at``: the script's choice, or the turn's usual point once :meth:`resolve` gave it)."""

    ts: int
    at: str | None
    shown: str | None = None
    """The api_req_started text with the tokens, once counted (the task's usage counts them then)."""
    done: bool = False

    def resolve(self, default: str) -> None:
        self.at = self.at or default

    def due(self, point: str) -> bool:
        """Whether the token update shows when the turn reaches ``point`` (if it has not yet)."""
        return not self.done and self.at is not None and POINTS[self.at] <= POINTS[point]


@dataclass(frozen=True)
class Share:
    """What one request reports."""

    tokens_in: int
    tokens_out: int
    cache_writes: int
    cache_reads: int
    cost: float

    def shown(self) -> str:
        """The api_req_started text that shows it."""
        cost = int(self.cost) if float(self.cost).is_integer() else round(self.cost, 10)
        info = {"apiProtocol": "openai", "tokensIn": self.tokens_in, "tokensOut": self.tokens_out}
        info |= {"cacheWrites": self.cache_writes, "cacheReads": self.cache_reads, "cost": cost}
        return dumps(info)


def share_of(script: Script, index: int, planned: int) -> Share:
    """The ``index``-th request's share of the script's ``tokens`` and ``cost`` over ``planned`` requests:
    a cumulative integer split, so the totals equal the script's exactly; requests past the planned number
    (a followup answered) each add one more share of the same size."""
    n = max(1, planned)
    k = index % n

    def share(total: int) -> int:
        return total * (k + 1) // n - total * k // n

    cost = round(script.cost * (k + 1) / n, 10) - round(script.cost * k / n, 10)
    tokens = script.tokens
    if tokens is None:
        return Share(*DEFAULT_REQUEST, 0, 0, cost)
    return Share(
        share(tokens.in_), share(tokens.out), share(tokens.cache_writes), share(tokens.cache_reads), cost
    )
