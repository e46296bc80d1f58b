"""What a simulated host is given, whichever way it runs (in its worker's farm, or in a process of its
own with ``process_per_host``): the suite's options and a seed of its own."""

from __future__ import annotations

import hashlib
from typing import Any

from orchestrator.hosts.host import HostPlace
from orchestrator.suite.plan import AttemptKey
from orchestrator.suite.targets import SimulatorTarget


def host_seed(base: Any, key: AttemptKey, number: int) -> int:
    """A simulated host's seed: a pure function of the suite's seed (``target.options.seed``), the attempt
    key and the try number, so an attempt replays identically while task ids differ between attempts (as
    real UUIDv7s do), and whoever reads the results can recompute it (the simulator's ``chaos`` draw)."""
    text = f"{base or 0}/{key.slug}/{key.config_hash}/{number}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:6], "big")


def host_params(target: SimulatorTarget, place: HostPlace) -> dict[str, Any]:
    """``engine``, ``time_scale``, ``status_delay`` and ``engine_lags`` where the suite sets them, and the
    host's seed."""
    opts = target.options
    keys = ("time_scale", "status_delay", "engine_lags")
    params: dict[str, Any] = {k: opts[k] for k in keys if opts.get(k) is not None}
    params["seed"] = host_seed(opts.get("seed"), place.key, place.number)
    if target.engine:
        params["engine"] = target.engine
    return params
