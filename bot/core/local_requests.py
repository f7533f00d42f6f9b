"""Whether a request comes from this machine: the setup pages and the metrics endpoint answer only
the local machine unless a token is configured."""

from __future__ import annotations

import ipaddress

# Any forwarding header means a proxy stood between: a proxy on the same host would make every
# visitor look local, so such a request counts as remote.
PROXY_HEADERS = ("X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP", "Forwarded")


def is_local_request(remote_addr: str | None, headers) -> bool:
    """A loopback peer that did not come through a proxy (a local proxy would make every visitor
    look local, so any forwarding header counts as remote)."""
    if any(headers.get(name) for name in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address((remote_addr or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
