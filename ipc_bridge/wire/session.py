"""The bridge's ZeroMQ wire format: pure (de)serialisation and signing, no sockets.

Every message is one multipart ZeroMQ message, laid out like jupyter_client's::

    [routing ids... | topic]  b"<IDS|MSG>"  signature  header  parent_header  content  [buffers...]

* header, parent_header and content are orjson-encoded JSON objects; parent_header is ``{}`` when the
  message has no cause.
* signature is the hex HMAC-SHA256 of header, parent_header and content (in that order) under the run's
  key. Routing ids, topics and buffers are not signed (a snapshot's buffers are whole events that carry
  their own signatures).
* Frames are counted and the signature is checked (``hmac.compare_digest``) *before* anything is parsed,
  and a bounded history of seen signatures rejects replays. A retried request reuses its ``msg_id`` but
  gets a fresh ``date``, so its signature differs and the bridge's reply cache, not the replay check, is
  what recognises it.
* Unknown ``msg_type``\\ s and extra fields are tolerated (content models keep extra keys).

The message contents are defined once each, below, as pydantic models; ``docs/wire-format.md`` documents
the whole protocol. :data:`VERSION` follows the rule "same major = compatible": minor bumps only add
optional fields or message types.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import secrets
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from pydantic import BaseModel

from ipc_bridge.json_compat import dumps, loads

PROTOCOL = "roo-bridge"
VERSION = "1.3"  # 1.1: heartbeat interval / hugz_interval / liveness, SlotInfo.owner; 1.2: start_timeout;
# 1.3: attach_start, close_detach, welcome seq 0 for a slot not held
DELIM = b"<IDS|MSG>"
SIGNATURE_SCHEME = "hmac-sha256"
DIGEST_HISTORY_SIZE = 2**16
MIN_FRAMES_AFTER_DELIM = 4  # signature, header, parent_header, content
SNAPSHOT_FRAMES_PER_EVENT = 5  # topic, signature, header, parent_header, content

BRIDGE_TOPIC = b"bridge."

_pid = [os.getpid()]
"""This process's pid, kept current across forks: a Session checks it per message, and ``os.getpid()``
is a system call."""
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def _hmac_sha256(key: bytes) -> Any:
    """An HMAC-SHA256 object to ``copy()`` per message: OpenSSL's own when available, which copies in
    a third of the time ``hmac.HMAC`` takes (it wraps the same object)."""
    try:
        from _hashlib import hmac_new  # type: ignore[import-not-found,unused-ignore]

        return hmac_new(key, digestmod="sha256")
    except (ImportError, ValueError, TypeError):  # no OpenSSL, no sha256 in it, another signature
        return hmac.new(key, digestmod=hashlib.sha256)


class WireError(ValueError):
    """A multipart message that is not a valid bridge message."""


class SignatureError(WireError):
    """The signature is missing or does not match: the message is dropped unparsed."""


class ReplayError(WireError):
    """A signature seen before: a replayed message."""


def new_id() -> str:
    """16 random bytes as 32 hex digits: session ids."""
    return secrets.token_hex(16)


def new_key() -> str:
    """A fresh HMAC key (hex) for one bridge run."""
    return secrets.token_hex(32)


_date_second = -1
_date_prefix = ""


def utcnow_iso() -> str:
    """``datetime.now(timezone.utc).isoformat()`` at half the cost (one per message sent)."""
    return iso_utc(time.time_ns() // 1000)


def iso_utc(micros: int) -> str:
    """The ``isoformat()`` of that many microseconds since the epoch, UTC; the date part is formatted
    once per second."""
    global _date_second, _date_prefix
    sec, us = divmod(micros, 1_000_000)
    if sec != _date_second:
        _date_prefix = datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _date_second = sec
    return f"{_date_prefix}.{us:06d}+00:00" if us else f"{_date_prefix}+00:00"


def major(version: str) -> str:
    return version.split(".", 1)[0]


# ------------------------------------------------------------------------------------------ topics


def slot_topic(slot: str) -> bytes:
    """Prefix of every event of ``slot``; also the exact topic of slot-level events."""
    return f"slot.{slot}.".encode()


def task_topic(slot: str, task_id: str) -> bytes:
    return f"slot.{slot}.task.{task_id}".encode()


# ------------------------------------------------------------------------------------------ header


@dataclass(frozen=True)
class Header:
    msg_id: str
    session: str
    msg_type: str
    version: str = VERSION
    date: str = ""
    protocol: str = PROTOCOL

    def to_dict(self) -> dict[str, str]:
        return {
            "msg_id": self.msg_id,
            "session": self.session,
            "msg_type": self.msg_type,
            "version": self.version,
            "date": self.date,
            "protocol": self.protocol,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Header:
        """Lenient: extra keys are ignored, the five required ones must be strings."""
        check_header(data)
        # Filled in directly: a frozen dataclass's __init__ sets each field through object.__setattr__,
        # twice the cost of the checks, once per message received.
        header = object.__new__(cls)
        protocol = data.get("protocol", PROTOCOL)
        vars(header).update(
            msg_id=data["msg_id"],
            session=data["session"],
            msg_type=data["msg_type"],
            version=data["version"],
            date=data["date"],
            protocol=protocol if isinstance(protocol, str) else PROTOCOL,
        )
        return header


def check_header(data: Any) -> None:
    """Raise :class:`WireError` unless ``data`` is a header object: the five required fields strings.
    Apart from :meth:`Header.from_dict`, so that a receiver may check a header on arrival and build
    the :class:`Header` only when it is asked for (the client's event stream)."""
    if not isinstance(data, dict):
        raise WireError("header is not an object")
    try:
        # One by one, no comprehension: this runs for every message received (~1 us saved).
        msg_id, session, msg_type = data["msg_id"], data["session"], data["msg_type"]
        version, date = data["version"], data["date"]
    except KeyError as exc:
        raise WireError(f"header lacks {exc.args[0]!r}") from None
    if not (
        isinstance(msg_id, str)
        and isinstance(session, str)
        and isinstance(msg_type, str)
        and isinstance(version, str)
        and isinstance(date, str)
    ):
        raise WireError("header fields must be strings")


@dataclass(slots=True)  # no __dict__: one object fewer per message for the collector
class Message:
    """A verified, parsed message. ``parent`` is the parent header as sent (``{}`` when none; messages
    with the same parent bytes share one dict: do not change it) and ``content`` the raw content
    object: validate it with the model for ``header.msg_type``."""

    header: Header
    parent: dict[str, Any]
    content: dict[str, Any]
    idents: list[bytes] = field(default_factory=list)
    buffers: list[bytes] = field(default_factory=list)
    signature: bytes = b""

    @property
    def msg_type(self) -> str:
        return self.header.msg_type

    @property
    def parent_msg_id(self) -> str | None:
        value = self.parent.get("msg_id")
        return value if isinstance(value, str) else None

    @property
    def topic(self) -> bytes:
        """On the event channel, the one frame before the delimiter."""
        return self.idents[0] if self.idents else b""


ParentLike = Header | dict[str, Any] | None


def _parent_dict(parent: ParentLike) -> dict[str, Any]:
    if parent is None:
        return {}
    if isinstance(parent, Header):
        return parent.to_dict()
    return parent


def pack(obj: BaseModel | dict[str, Any]) -> bytes:
    return orjson.dumps(obj.model_dump() if isinstance(obj, BaseModel) else obj)


EventContent = BaseModel | dict[str, Any] | bytes
"""A message content to send: a model, its dict, or already encoded (a forwarded host event)."""


def _content_bytes(content: EventContent) -> bytes:
    if type(content) is bytes:
        return content
    return dumps(content.model_dump() if isinstance(content, BaseModel) else content)


# ----------------------------------------------------------------------------------------- session


class Session:
    """Signs, serialises and verifies messages for one process (one ``session`` id per lifetime).

    ``msg_id`` is ``{session}_{pid}_{counter}``: unique, cheap, and it names the sending process.
    """

    def __init__(
        self,
        key: str | bytes,
        *,
        signature_scheme: str = SIGNATURE_SCHEME,
        session: str | None = None,
        digest_history_size: int = DIGEST_HISTORY_SIZE,
    ) -> None:
        if signature_scheme != SIGNATURE_SCHEME:
            raise ValueError(f"unsupported signature scheme {signature_scheme!r} (only {SIGNATURE_SCHEME})")
        key_bytes = key.encode() if isinstance(key, str) else key
        # An empty key disables signing, as in jupyter_client; the bridge always sets one.
        self._auth = _hmac_sha256(key_bytes) if key_bytes else None
        self.session = session or new_id()
        self.pid = os.getpid()
        self._counter = itertools.count()
        self.digest_history_size = digest_history_size
        # The replay history: a set to look signatures up, and their order to evict the oldest. Half
        # the cost of an OrderedDict per message (~1 us of the client's event flood), less memory.
        self._seen: set[bytes] = set()
        self._seen_order: deque[bytes] = deque()
        self._last_parent: tuple[bytes, dict[str, Any]] = (b"", {})
        """The last parent header received, as bytes and parsed: every event of a task has the same."""

    # ------------------------------------------------------------------------------------- build

    def new_msg_id(self) -> str:
        return f"{self.session}_{self.pid}_{next(self._counter)}"

    def header(self, msg_type: str, msg_id: str | None = None) -> Header:
        return Header(
            msg_id=msg_id or self.new_msg_id(), session=self.session, msg_type=msg_type, date=utcnow_iso()
        )

    def sign(self, parts: Iterable[bytes]) -> bytes:
        if self._auth is None:
            return b""
        mac = self._auth.copy()
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()  # type: ignore[no-any-return]

    def serialize_parts(
        self, header: Header, parent: ParentLike, content: BaseModel | dict[str, Any]
    ) -> list[bytes]:
        """``[signature, header, parent, content]``: the signed part of a message."""
        if self.pid != _pid[0]:
            # A forked child must build its own Session (and zmq context): zmq-design rule 9.
            raise WireError("Session used from a forked process")
        parts = [orjson.dumps(header.to_dict()), orjson.dumps(_parent_dict(parent)), pack(content)]
        return [self.sign(parts), *parts]

    def serialize_event(
        self,
        msg_type: str,
        parent: dict[str, Any] | None,
        content: EventContent,
        msg_id: str | None = None,
    ) -> list[bytes]:
        """``[signature, header, parent, content]`` of a new message, built from plain dicts: the hot
        paths. Byte for byte what :meth:`serialize_parts` gives for the same header and the same
        content as a model (its ``model_dump()`` has the same keys in the same order)."""
        if self.pid != _pid[0]:
            raise WireError("Session used from a forked process")
        header = {
            "msg_id": msg_id or f"{self.session}_{self.pid}_{next(self._counter)}",
            "session": self.session,
            "msg_type": msg_type,
            "version": VERSION,
            "date": utcnow_iso(),
            "protocol": PROTOCOL,
        }
        parts = [orjson.dumps(header), orjson.dumps(parent) if parent else b"{}", _content_bytes(content)]
        return [self.sign(parts), *parts]

    def serialize_batch(
        self, msg_type: str, events: Sequence[tuple[dict[str, Any] | None, EventContent]]
    ) -> list[list[bytes]]:
        """:meth:`serialize_event` of each ``(parent, content)``, all built at one moment (one ``date``):
        the header is formatted once and each message only gets its own ``msg_id`` counter, a fifth of
        the cost of encoding a header per message (the bridge's event flood)."""
        if self.pid != _pid[0]:
            raise WireError("Session used from a forked process")
        head = f'{{"msg_id":"{self.session}_{self.pid}_'.encode()
        tail = orjson.dumps(
            {"session": self.session, "msg_type": msg_type, "version": VERSION, "date": utcnow_iso()}
        )[1:-1]
        tail = b'",' + tail + b',"protocol":"' + PROTOCOL.encode() + b'"}'
        counter = self._counter
        sign = self.sign
        out = []
        last_parent: dict[str, Any] | None = None
        parent_bytes = b"{}"
        for parent, content in events:
            if parent is not last_parent:  # a task's events share one parent dict: encoded once
                last_parent, parent_bytes = parent, orjson.dumps(parent) if parent else b"{}"
            parts = [b"%b%d%b" % (head, next(counter), tail), parent_bytes, _content_bytes(content)]
            out.append([sign(parts), *parts])
        return out

    def serialize(
        self,
        msg_type: str,
        content: BaseModel | dict[str, Any],
        parent: ParentLike = None,
        *,
        idents: Sequence[bytes] = (),
        msg_id: str | None = None,
        buffers: Sequence[bytes] = (),
    ) -> list[bytes]:
        """The whole multipart message, ready for ``send_multipart``."""
        parts = self.serialize_event(msg_type, _parent_dict(parent), content, msg_id)
        return [*idents, DELIM, *parts, *buffers]

    # ------------------------------------------------------------------------------------- parse

    def deserialize(self, frames: Sequence[bytes], *, check_replay: bool = True) -> Message:
        """Verify then parse. Raises :class:`WireError` (or a subclass) and parses nothing unverified."""
        delim, header_data, parent, content = self.deserialize_parts(frames, check_replay=check_replay)
        return Message(
            Header.from_dict(header_data),
            parent,
            content,
            frames[:delim] if type(frames) is list else list(frames[:delim]),
            list(frames[delim + 5 :]) if len(frames) > delim + 5 else [],
            bytes(frames[delim + 1]),
        )

    def deserialize_parts(
        self, frames: Sequence[bytes], *, check_replay: bool = True
    ) -> tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]:
        """:meth:`deserialize` without the objects: ``(index of the delimiter, header, parent,
        content)`` as parsed, the header checked (:func:`check_header`). The client's event stream
        builds its events from these."""
        if len(frames) > 1 and frames[1] == DELIM and frames[0] != DELIM:  # [topic, DELIM, ...]: events
            delim = 1
        else:
            try:
                delim = frames.index(DELIM)
            except ValueError:
                raise WireError("no <IDS|MSG> delimiter") from None
        if len(frames) - delim - 1 < MIN_FRAMES_AFTER_DELIM:
            raise WireError(
                f"{len(frames) - delim - 1} frames after the delimiter, need {MIN_FRAMES_AFTER_DELIM}"
            )
        signature, h, p, c = frames[delim + 1 : delim + 5]
        self.verify(signature, (h, p, c), check_replay=check_replay)
        try:
            # The content may carry a host's event, whatever valid JSON it holds (see json_compat).
            header_data, content = orjson.loads(h), loads(c)
            last_bytes, parent = self._last_parent
            if p != last_bytes:
                parent = orjson.loads(p)
                if type(parent) is dict:
                    self._last_parent = (bytes(p), parent)
        except ValueError as exc:
            raise WireError(f"invalid JSON: {exc}") from None
        if not isinstance(parent, dict) or not isinstance(content, dict):
            raise WireError("parent_header and content must be objects")
        check_header(header_data)
        return delim, header_data, parent, content

    def verify(self, signature: bytes, parts: Sequence[bytes], *, check_replay: bool = True) -> None:
        if self._auth is None:
            return
        if not signature:
            raise SignatureError("unsigned message")
        if not hmac.compare_digest(signature, self.sign(parts)):
            raise SignatureError("invalid signature")
        if not check_replay:
            return
        seen = self._seen
        sig = bytes(signature)
        if sig in seen:
            raise ReplayError("duplicate signature (replayed message)")
        seen.add(sig)
        order = self._seen_order
        order.append(sig)
        if len(order) > self.digest_history_size:
            seen.discard(order.popleft())


def split_snapshot_buffers(buffers: Sequence[bytes]) -> list[list[bytes]]:
    """A snapshot reply's buffers as whole event messages ``[topic, DELIM, sig, header, parent, content]``."""
    n = SNAPSHOT_FRAMES_PER_EVENT
    if len(buffers) % n:
        raise WireError(f"snapshot buffers not a multiple of {n}")
    return [[buffers[i], DELIM, *buffers[i + 1 : i + n]] for i in range(0, len(buffers), n)]


# The content models live in wire_content.py; ``ipc_bridge.wire.session`` stays the one import point.
