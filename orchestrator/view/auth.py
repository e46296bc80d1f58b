"""Who may talk to the viewer: an ASGI middleware in front of every route (pages, JSON, SSE, static).

On loopback (the default) no token is needed, but the ``Host`` header must name a loopback host, so a
web page elsewhere cannot reach the viewer through a DNS name rebound to 127.0.0.1. On any other address
a token is required, as in Jupyter: generated at start, printed in the URL, compared in constant time on
every request; a request that brings it in ``?token=`` gets it back as a cookie, so links and the
browser's EventSource work without it in every URL.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

if TYPE_CHECKING:  # only types: `orchestrate view` can say the view extra is missing
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "orchestrate_view_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def new_token() -> str:
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class AccessMiddleware:
    """Refuses (403) a request without the token when one is set, or with a non-loopback ``Host``
    header when ``loopback_only``."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    def _headers(self, scope: Scope) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}

    def _given(self, scope: Scope, headers: dict[str, str]) -> tuple[str | None, bool]:
        """The token the request brings, and whether it came in the query string."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0], True
        auth = headers.get("authorization", "")
        if auth.lower().startswith("token "):
            return auth[6:].strip(), False
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no token
            return None, False
        morsel = cookie.get(COOKIE)
        return (morsel.value if morsel else None), False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = self._headers(scope)
        if self.loopback_only and not is_loopback(_host_name(headers.get("host", ""))):
            await _refuse(send, b"this viewer answers only on a loopback host name")
            return
        from_query = False
        if self.token is not None:
            given, from_query = self._given(scope, headers)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _refuse(send, b"a valid token is required: open the URL the viewer printed")
                return
        if not from_query:
            await self.app(scope, receive, send)
            return
        token = self.token or ""

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode()
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def _refuse(send: Send, text: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": text + b"\n"})
