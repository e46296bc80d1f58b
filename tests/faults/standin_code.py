"""A stand-in for VS Code's ``code`` launcher, as it really behaves: it starts "the app" detached (a new
session and process group, as ``code`` spawns Electron with ``detached: true``), then with ``--wait``
waits for it, else exits at once. The app inherits the environment (so ``ROO_CODE_IPC_SOCKET_PATH``)
and serves the real simulator there, as its extension host.

    standin_code.py [--wait] [VS Code's flags, ignored] [-n] WORKSPACE

Environment: ``STANDIN_REPORT`` a file the app appends one JSON line to (its pid, its host's, its
helper's, its socket); ``STANDIN_LINGER=1`` the app stays when its extension host has closed (CloseTask
does not close its window) and ignores SIGTERM; ``STANDIN_HELPER=1`` the app starts a helper process of
its own, in a session of its own; ``STANDIN_CLEARED=session`` the app starts a process that sheds the
environment (and with it the orchestrator's mark): forked by a process that exits at once, exec'd with
an empty environment; ``STANDIN_CLEARED=daemon`` the same in a session of its own; ``STANDIN_DIES=1`` the app outlives the launcher by a
moment, then exits with code 3 without ever starting its extension host (it never listens).
"""

import json
import os
import signal
import subprocess
import sys
import time

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def cleared(mode: str) -> None:
    """Fork a child that sheds the environment (and leaves the session if ``mode`` is ``daemon``), print
    its pid, and exit: the child is re-parented (to a subreaper, or init) with no mark of the host."""
    pid = os.fork()
    if pid == 0:
        if mode == "daemon":
            os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # not the pipe its starter's pid is read from
            os.dup2(null, fd)
        os.execve(SLEEPER[0], SLEEPER, {})
    print(pid, flush=True)


def dies(launcher: int) -> None:
    """Outlive the launcher (it hands the host over), then die before listening."""
    while os.getppid() == launcher:
        time.sleep(0.05)
    time.sleep(1.0)  # as an app does that crashes while it starts
    sys.exit(3)


def app(workspace: str, launcher: int) -> None:
    if os.environ.get("STANDIN_DIES"):
        dies(launcher)
    linger = bool(os.environ.get("STANDIN_LINGER"))
    if linger:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    helper = None
    if os.environ.get("STANDIN_HELPER"):
        helper = subprocess.Popen(SLEEPER, start_new_session=True).pid
    shed = None
    if mode := os.environ.get("STANDIN_CLEARED"):
        argv = [sys.executable, __file__, "--cleared", mode]
        shed = int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    simulator = [sys.executable, "-m", "orchestrator", "simulate", "--workspace", workspace]
    host = subprocess.Popen([*simulator, "--time-scale", "0.05", "--status-delay", "0.1"])
    line = {
        "app": os.getpid(),
        "host": host.pid,
        "helper": helper,
        "cleared": shed,
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
        [sys.executable, __file__, "--app", workspace, str(os.getpid())],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    sys.exit(started.wait() if "--wait" in argv else 0)


if __name__ == "__main__":
    if sys.argv[1] == "--app":
        app(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "--cleared":
        cleared(sys.argv[2])
    else:
        launch(sys.argv[1:])
