"""Connection file, runtime dir and single-instance lock; the replay buffer (no sockets needed)."""

from __future__ import annotations

import os
import stat
import tracemalloc
from pathlib import Path

import pytest

from ipc_bridge.server.replay_buffer import ReplayBuffer, entry_cost, pack
from ipc_bridge.wire.connection_file import (
    BridgeAlreadyRunning,
    ConnectionInfo,
    InstanceLock,
    ensure_runtime_dir,
    ipc_endpoint,
    read_connection_file,
    write_connection_file,
)
from ipc_bridge.wire.messages import task_event_content
from ipc_bridge.wire.session import Session, new_key


def _info(runtime: Path) -> ConnectionInfo:
    return ConnectionInfo(
        command_endpoint=ipc_endpoint(runtime, "c.ipc"),
        event_endpoint=ipc_endpoint(runtime, "e.ipc"),
        key="ab" * 32,
        bridge_pid=os.getpid(),
        session="s" * 32,
        runtime_dir=str(runtime),
    )


def test_connection_file_is_0600_and_round_trips(sockdir: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the file
    try:
        path = write_connection_file(sockdir / "sub" / "bridge.json", _info(sockdir))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_connection_file(path) == _info(sockdir)
    assert [p.name for p in path.parent.iterdir()] == ["bridge.json"]  # no temp file left


def test_runtime_dir_is_made_private(sockdir: Path) -> None:
    loose = sockdir / "rt"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert stat.S_IMODE(ensure_runtime_dir(loose).stat().st_mode) == 0o700
    fresh = ensure_runtime_dir(sockdir / "a" / "b")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_ipc_paths_longer_than_sun_path_are_refused(sockdir: Path) -> None:
    assert ipc_endpoint(sockdir, "x.ipc") == f"ipc://{sockdir}/x.ipc"
    with pytest.raises(ValueError, match="longer than"):
        ipc_endpoint(sockdir, "x" * 120)


def test_lock_excludes_a_second_holder_and_is_reusable_after_release(sockdir: Path) -> None:
    first = InstanceLock(sockdir)
    first.acquire()
    assert (sockdir / "bridge.lock").read_text().strip() == str(os.getpid())
    with pytest.raises(BridgeAlreadyRunning, match=str(os.getpid())):
        InstanceLock(sockdir).acquire()
    first.release()
    assert not (sockdir / "bridge.lock").exists()
    with InstanceLock(sockdir) as second:
        assert second.held


def test_replay_buffer_bounds_and_completeness() -> None:
    buf = ReplayBuffer(max_events=3, max_bytes=1000)
    for seq in range(1, 6):
        buf.append(seq, [b"t", b"x" * 10])
    assert len(buf) == 3 and buf.first_seq == 3
    events, complete, more = buf.since(2, last_seq=5, limit=10)
    assert [e.seq for e in events] == [3, 4, 5] and complete and not more
    events, complete, _ = buf.since(0, last_seq=5, limit=10)
    assert not complete and [e.seq for e in events] == [3, 4, 5]  # 1 and 2 are gone for good
    events, complete, more = buf.since(2, last_seq=5, limit=2)
    assert [e.seq for e in events] == [3, 4] and complete and more
    assert buf.since(5, last_seq=5, limit=10) == ([], True, False)
    with pytest.raises(ValueError, match="does not follow"):
        buf.append(7, [b"t"])


def test_replay_buffer_byte_bound_keeps_the_newest() -> None:
    two = 2 * entry_cost(len(pack([b"y" * 20])))
    buf = ReplayBuffer(max_events=100, max_bytes=two)
    for seq in range(1, 11):
        buf.append(seq, [b"y" * 20])
    assert buf.bytes <= two and buf.first_seq == 9
    buf.append(11, [b"z" * 5000])  # larger than the bound alone: still kept, as the only one
    assert len(buf) == 1 and buf.first_seq == 11
    assert buf.since(10, last_seq=11, limit=5)[0][0].frames == (b"z" * 5000,)


def test_replay_buffer_counts_what_its_events_cost_in_memory() -> None:
    """orjson's output keeps the ~4 KiB buffer it was written into: a 200-byte header held 4 KiB, and a
    buffer of tiny events took ~12 KiB each, 25 times its byte count. What the buffer says it holds is
    what the process holds for it."""
    session = Session(new_key())
    parent = session.header("task_command").to_dict()
    limit = 4 * 1024 * 1024
    buf = ReplayBuffer(max_events=10**6, max_bytes=limit)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(1, 50_001):
            event = {"eventName": "message", "payload": [{"taskId": "t", "n": seq}]}
            frames = session.serialize_event("task_event", parent, task_event_content("w", seq, "t", event))
            buf.append(seq, [b"slot.w.task.t", *frames])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert buf.bytes <= limit
    assert 0.7 * buf.bytes <= held <= 1.1 * limit, (held, buf.bytes, len(buf))
    events, complete, more = buf.since(0, last_seq=50_000, limit=10**6, max_bytes=64 * 1024)
    assert not complete and more and 0 < sum(e.size for e in events) <= 64 * 1024
