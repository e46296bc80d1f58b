"""One transcript row as a conversation item: what a person reads of an event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from orchestrator.results.transcript_index import event_of


def _json_text(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


_SAY_KINDS = {
    "text": "assistant",
    "reasoning": "reasoning",
    "completion_result": "completion",
    "command_output": "output",
    "error": "error",
    "diff_error": "error",
    "rooignore_error": "error",
    "condense_context_error": "error",
    "api_req_retried": "retry",
    "api_req_retry_delayed": "retry",
    "api_req_rate_limit_wait": "retry",
    "subtask_result": "subtask_result",
    "user_feedback": "user",
}
_ASK_KINDS = {
    "tool": "tool",
    "command": "command",
    "followup": "question",
    "completion_result": "completion_ask",
    "api_req_failed": "error",
    "mistake_limit_reached": "error",
}


def _message_item(body: Mapping[str, Any]) -> dict[str, Any]:
    message = body.get("message")
    msg: Mapping[str, Any] = message if isinstance(message, Mapping) else {}
    text = msg.get("text") or ""
    if msg.get("type") == "ask":
        sub = str(msg.get("ask") or "")
        kind = _ASK_KINDS.get(sub, "ask")
    else:
        sub = str(msg.get("say") or "")
        kind = _SAY_KINDS.get(sub, "say")
    item: dict[str, Any] = {"kind": kind, "title": sub, "text": text, "task": body.get("taskId")}
    if sub == "api_req_started":
        item["kind"] = "api"
        info = _json_text(text) or {}
        item["params"] = {k: info[k] for k in ("tokensIn", "tokensOut", "cost", "cancelReason") if k in info}
        item["text"] = ""
    elif kind == "tool":
        params = _json_text(text)
        if params is not None:
            item["title"] = str(params.pop("tool", "tool"))
            item["params"] = params
            item["text"] = ""
            if item["title"] == "newTask":
                item["kind"] = "subtask"
                item["title"] = "starts a subtask"
    elif kind == "completion_ask" and not text:
        item["kind"] = "marker"
        item["title"] = "asks to complete"
    elif kind in ("ask", "say") and not text:
        item["kind"] = "marker"  # an approval step with nothing to read (ask command_output, ...)
    return item


def render(row: Any) -> dict[str, Any]:
    """One transcript row as a conversation item: ``kind`` (prompt, assistant, tool, command, output,
    error, retry, api, completion, subtask, ...), ``title``, ``text``, ``params``, ``task``, ``t``."""
    event = event_of(row)
    t = row.get("t") if isinstance(row, Mapping) else None
    name = str(event.get("eventName") or event.get("type") or "event")
    payload = event.get("payload")
    args: list[Any] = payload if isinstance(payload, list) else []
    if name == "message" and args and isinstance(args[0], Mapping):
        item = _message_item(args[0])
    elif name == "taskSpawned" and len(args) >= 2:
        item = {"kind": "subtask", "title": "subtask started", "text": str(args[1]), "task": args[0]}
    elif name == "taskToolFailed" and len(args) >= 3:
        item = {"kind": "error", "title": f"tool {args[1]} failed", "text": str(args[2]), "task": args[0]}
    elif name in ("taskCompleted", "taskAborted", "taskStarted", "taskPaused", "taskUnpaused") and args:
        item = {"kind": "marker", "title": name, "text": "", "task": args[0]}
    else:
        # Anything else (a command sent to the host, a future event): its name and its payload as is.
        item = {"kind": "event", "title": name, "text": orjson.dumps(event).decode()[:4000], "task": None}
    item["t"] = t
    return item
