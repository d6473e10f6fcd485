"""The server's door: who may come in, and how much they may bring.

A server on localhost is reachable by every web page the composer opens: a page on another
site can post to it (a form, a ``no-cors`` fetch), and a page on a name that its owner points
at 127.0.0.1 (DNS rebinding) can even read the answers. :class:`Gate`, an ASGI middleware in
front of every route, refuses:

* a ``Host`` that is not this machine's: only IP addresses (a rebound name is a name),
  ``localhost`` and names the operator allowed (``--allow-host``) are answered;
* a request from a web page of another origin (its ``Origin``, or ``Sec-Fetch-Site`` when a
  browser sends no ``Origin``), unless the operator named that origin (``--cors-origin``);
  scripts, curl and plugins send neither and come in as before;
* form-encoded bodies on JSON routes (an HTML form is a web page's one way round CORS);
* a missing or wrong token, when the server has one (but for Riffusion's routes from a
  network the operator opened to them, ``--riffusion-open``: Riffusion's clients cannot
  send a token);
* a body over its route's limit (cut off at the limit, whatever the declared length), or one
  that stalls (no data for ``body_timeout_s``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Names that are this machine's, whatever the operator allows besides.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})

#: Body types a browser may send across sites without asking (no CORS preflight) that are
#: never JSON.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

#: Said with a refused body: the server closes the connection instead of reading the rest.
HANG_UP = {"Connection": "close"}


@dataclass(frozen=True)
class Policy:
    """What :class:`Gate` lets in.

    Args:
        allowed_hosts: Names (besides IP addresses and localhost) the server answers to.
        cors_origins: Web pages' origins (``https://app.example:3000``) allowed to call it.
        token: Required of every API request when set (``Authorization: Bearer ...``).
        body_limit: The largest body of a request, in bytes, by (method, path).
        json_routes: Paths whose bodies are JSON: form encodings are refused there.
        body_timeout_s: A body that sends nothing for this long is cut off (408).
        token_paths: Paths (by prefix) that need the token.
        open_networks: Client networks (``192.168.0.0/16``) that may use ``open_paths``
            without the token.
        open_paths: The paths (exactly) those networks use without one: Riffusion's.
    """

    allowed_hosts: Collection[str] = ()
    cors_origins: Collection[str] = ()
    token: str | None = None
    body_limit: Callable[[str, str], int] = lambda method, path: 64 * 1024
    json_routes: Collection[str] = ()
    body_timeout_s: float = 30.0
    token_paths: tuple[str, ...] = ("/v1", "/run_")
    open_networks: Collection[str] = ()
    open_paths: Collection[str] = ()
    _hosts: frozenset[str] = field(init=False, repr=False)
    _networks: tuple[Any, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = {h.strip().lower().rstrip(".") for h in self.allowed_hosts}
        object.__setattr__(self, "_hosts", LOCAL_NAMES | names)
        object.__setattr__(self, "_networks", tuple(open_network(n) for n in self.open_networks))

    def refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        """Why this request is refused (status, message), or None to let it in."""
        host = headers.get("host")
        if host is not None and not self.host_allowed(host):
            name = _hostname(host)
            return 421, (
                f"This server does not answer to the name {name!r}: a web page may be trying "
                f"to reach it under another name. To use that name, start it with "
                f"--allow-host {name}."
            )
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site")
        if origin is not None and origin not in self.cors_origins:
            if origin == "null" or not _same_origin(origin, host, scope):
                return 403, (
                    f"Requests from web pages on other sites are refused (this one came from "
                    f"{origin}). To let a page call this server, start it with "
                    f"--cors-origin {origin}."
                )
        elif origin is None and site in ("cross-site", "same-site"):
            return 403, "Requests from web pages on other sites are refused."
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["path"] in self.json_routes and content_type in FORM_TYPES:
            return 415, "Send this route JSON (Content-Type: application/json), not a form."
        if self.token and scope["path"].startswith(self.token_paths) and not self.opened(scope):
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return 401, "Give the API token: an 'Authorization: Bearer ...' header."
        return None

    def opened(self, scope: Scope) -> bool:
        """Whether this request is to an open path from an open network (no token needed)."""
        if scope["path"] not in self.open_paths or not self._networks:
            return False
        client = scope.get("client")
        try:
            address = ipaddress.ip_address((client or ("",))[0])
        except ValueError:  # no address (a test client's name, a Unix socket)
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:192.168.1.5 on a dual-stack socket
        return any(address in network for network in self._networks)

    def host_allowed(self, host: str) -> bool:
        name = _hostname(host)
        if name in self._hosts:
            return True
        try:
            ipaddress.ip_address(name)  # an address cannot be rebound to another machine
        except ValueError:
            return False
        return True


class Gate:
    """ASGI middleware applying a :class:`Policy` to every HTTP request."""

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refused = self.policy.refusal(scope, headers)
        if refused is not None:
            await _answer(send, *refused)
            return
        limit = self.policy.body_limit(scope["method"], scope["path"])
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _answer(send, 413, _too_large(limit))
            return
        if declared is None and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body to watch (a GET)
            return
        await self.app(scope, _limited(receive, limit, self.policy.body_timeout_s), send)


def _limited(receive: Receive, limit: int, timeout_s: float) -> Receive:
    """``receive`` that stops a body at ``limit`` bytes, or when it stalls."""
    size = 0
    body_done = False

    async def limited() -> Message:
        nonlocal size, body_done
        if body_done:
            return await receive()  # after the body: a disconnect, whenever it comes
        try:
            message = await asyncio.wait_for(receive(), timeout_s)
        except asyncio.TimeoutError:  # noqa: UP041 (Python 3.10 has its own)
            raise HTTPException(408, "The upload stalled: send it again.", HANG_UP) from None
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise HTTPException(413, _too_large(limit), HANG_UP)
            body_done = not message.get("more_body", False)
        return message

    return limited


def open_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A network named as ``192.168.0.0/16`` (or one address).

    Raises:
        ValueError: Not a network; the message says what to write.
    """
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{cidr!r} is not a network: write it as an address and a prefix length, e.g. "
            "192.168.0.0/16 (a home network) or 10.0.0.5/32 (one machine)."
        ) from None


def _too_large(limit: int) -> str:
    return f"The request is over {limit / (1 << 20):g} MB: send a shorter sketch."


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _hostname(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    name, _, port = host.rpartition(":")
    return (name if name and port.isdigit() else host).rstrip(".")


def _same_origin(origin: str, host: str | None, scope: Scope) -> bool:
    scheme = scope.get("scheme", "http")
    return host is not None and origin.lower() in (f"{scheme}://{host.lower()}",)
