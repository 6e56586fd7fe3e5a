"""The client's address: one rule for every place that reads it (the gateway's per-address limits and
stream caps, the accounts function's sign-in throttling, whatever comes next).

The peer of the connection is the client, unless that peer is a trusted proxy (STUDIO_TRUSTED_PROXIES,
by default loopback only: an nginx on the same host). Then `X-Forwarded-For` is read from the right:
each proxy appends the address it saw, so the rightmost hop that is not itself a trusted proxy is the
client, and anything left of it was written by the client and proves nothing. Without that header, a
trusted proxy's `X-Real-IP` names the client. From any other peer both headers are ignored, so a
client cannot name an address of its choosing (to dodge a per-address limit, or to throttle a victim's).

Behind the distributed gateway, a function's peer is the gateway, which sends the client it resolved by
this rule as both `X-Forwarded-For` and `X-Real-IP` (never the chain a client wrote): the function applies
the same rule, with the gateway's network among its trusted proxies (compose sets STUDIO_TRUSTED_PROXIES
for every service); a client that is itself a trusted address (loopback) comes through `X-Real-IP`.
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from studio.runtime.settings import IPNetwork


@functools.lru_cache(maxsize=4096)  # a few peers ask again and again: parsed once each, not twice a request
def is_trusted(address: str, proxies: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in proxies)


def client_address(request: web.Request, proxies: tuple[IPNetwork, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy that names the client."""
    peer = request.remote or "unknown"
    if not is_trusted(peer, proxies):
        return peer
    hops = [h.strip() for value in request.headers.getall("X-Forwarded-For", []) for h in value.split(",")]
    for hop in reversed(hops):
        if hop and not is_trusted(hop, proxies):
            return hop[:64]
    real = request.headers.get("X-Real-IP", "").strip()
    return real[:64] or peer
