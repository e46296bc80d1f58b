"""``orchestrate view``: serve the viewer on a socket and print its URL."""

from __future__ import annotations

import mimetypes
import socket
import sys
import webbrowser
from pathlib import Path

import click

from orchestrator.view.auth import is_loopback, new_token

EXIT_BAD_INPUT = 2


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--no-open", is_flag=True, help="Do not open the URL in a browser.")
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    help="Write the RUN_DIRs as a static directory at this path (opens from file://, no server) and exit.",
)
def view(paths: tuple[Path, ...], host: str, port: int, no_open: bool, bundle: Path | None) -> None:
    """Serve a web viewer of runs: the runs under each RESULTS_DIR (default ./results) or each RUN_DIR,
    live while they run. Prints the URL; stops on Ctrl-C.

    \b
    With --bundle OUT RUN_DIR...: write one run, or a few to compare, as a directory that a browser
    opens from file:// (its index.html) with no server; its search reads an index written into it.

    \b
    On loopback (the default) the viewer needs no token. On any other --host it requires the token
    printed in its URL on every request: share the URL only with whom may read the results.
    Needs the view extra: pip install 'roo-eval-orchestrator[view]'.
    """
    try:
        import anyio
        import uvicorn

        from orchestrator.view.app import build_app
        from orchestrator.view.runs import Sources
    except ImportError as exc:
        click.echo(
            f"error: orchestrate view needs the view extra ({exc.name} is missing): "
            "pip install 'roo-eval-orchestrator[view]'",
            err=True,
        )
        sys.exit(EXIT_BAD_INPUT)
    if bundle is not None:
        _bundle(paths, bundle)
        return
    sources = Sources.from_paths(list(paths) or [Path("results")])
    loopback = is_loopback(host)
    token = None if loopback else new_token()
    try:
        sock = _bind(host, port)
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    url = _url(host, sock.getsockname()[1], token)
    app = build_app(sources, token=token, loopback_only=loopback)
    # An open live stream (SSE) must not hold Ctrl-C up: connections get 2 s to finish.
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    # Its HTTP protocol, event loop, anyio's asyncio backend (which Starlette's first hand-off to a
    # thread would import) and the MIME types (read by the first static file served) are loaded now,
    # not by the first request: the URL is printed when a browser's first page no longer waits for them.
    config.load()
    anyio.run(anyio.sleep, 0)
    mimetypes.init()
    if token is not None:
        click.echo(f"listening on {host}, not loopback: every request needs the token in this URL")
    click.echo(f"orchestrate view: {url}")
    sys.stdout.flush()
    server = uvicorn.Server(config)
    if not no_open:
        webbrowser.open(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _bundle(paths: tuple[Path, ...], out: Path) -> None:
    from orchestrator.view.bundle import BundleError, write_bundle
    from orchestrator.view.runs import is_run_dir

    if not paths or not all(is_run_dir(p) for p in paths):
        click.echo("error: --bundle OUT takes RUN_DIRs (directories with manifest.json)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if out.exists():
        click.echo(f"error: {out} exists: choose a new directory for the bundle", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        index = write_bundle(list(paths), out)
    except BundleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"orchestrate view: wrote {index.resolve().as_uri()}")
