"""A stand-in for VS Code's ``code`` launcher, as it really behaves: it starts "the app" detached (a new
session and process group, as ``code`` spawns Electron with ``detached: true``), then with ``--wait``
waits for it, else exits at once. The app inherits the environment (so ``ROO_CODE_IPC_SOCKET_PATH``)
and serves the real simulator there, as its extension host.

    standin_code.py [--wait] [VS Code's flags, ignored] [-n] WORKSPACE

Environment: ``STANDIN_REPORT`` a file the app appends one JSON line to (its pid, its host's, its
helper's, its socket); ``STANDIN_LINGER=1`` the app stays when its extension host has closed (CloseTask
does not close its window) and ignores SIGTERM; ``STANDIN_HELPER=1`` the app starts a helper process of
its own, in a session of its own.
"""

import json
import os
import signal
import subprocess
import sys


def app(workspace: str) -> None:
    linger = bool(os.environ.get("STANDIN_LINGER"))
    if linger:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    helper = None
    if os.environ.get("STANDIN_HELPER"):
        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        helper = subprocess.Popen(sleeper, start_new_session=True).pid
    simulator = [sys.executable, "-m", "orchestrator", "simulate", "--workspace", workspace]
    host = subprocess.Popen([*simulator, "--time-scale", "0.05", "--status-delay", "0.1"])
    line = {
        "app": os.getpid(),
        "host": host.pid,
        "helper": helper,
        "socket": os.environ["ROO_CODE_IPC_SOCKET_PATH"],
        "workspace": workspace,
    }
    with open(os.environ["STANDIN_REPORT"], "a") as fh:
        fh.write(json.dumps(line) + "\n")
    code = host.wait()
    while linger:
        signal.pause()
    sys.exit(code)


def launch(argv: list[str]) -> None:
    workspace = argv[-1]
    started = subprocess.Popen(
        [sys.executable, __file__, "--app", workspace], start_new_session=True, stdin=subprocess.DEVNULL
    )
    sys.exit(started.wait() if "--wait" in argv else 0)


if __name__ == "__main__":
    if sys.argv[1] == "--app":
        app(sys.argv[2])
    else:
        launch(sys.argv[1:])
