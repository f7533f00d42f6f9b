"""A local DNS server (dnslib) and a local web server (http.server) on 127.0.0.1 for the proof of
domain control tests: the applicant's zone and site, never the internet."""

from __future__ import annotations

import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dnslib import QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Zone(BaseResolver):
    """TXT and A records by name; any other name is NXDOMAIN."""

    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.a: dict[str, str] = {}
        self.queries: list[tuple[str, str]] = []

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        if qtype == "TXT":
            for value in self.txt.get(name, []):
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(value), ttl=1))
        elif qtype == "A" and name in self.a:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(self.a[name]), ttl=1))
        if name not in self.txt and name not in self.a:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class LocalDNS:
    def __init__(self) -> None:
        self.zone = Zone()
        self.server = DNSServer(self.zone, address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda *_: None))
        self.port = self.server.server.server_address[1]

    def __enter__(self) -> LocalDNS:
        self.server.start_thread()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self.server.server.server_close()


@dataclasses.dataclass
class Page:
    status: int = 200
    body: bytes = b""
    location: str | None = None


class Site:
    """Pages by (host, path), whatever Host header a request names."""

    def __init__(self) -> None:
        self.pages: dict[tuple[str, str], Page] = {}
        self.requests: list[tuple[str, str]] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                site.requests.append((host, self.path))
                page = site.pages.get((host, self.path), Page(404, b"not found"))
                self.send_response(page.status)
                if page.location:
                    self.send_header("Location", page.location)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(page.body)))
                self.end_headers()
                self.wfile.write(page.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def proof_settings(settings, dns: LocalDNS, site: Site | None = None, *, allow_private: bool = True):
    """Settings that send DNS lookups to the local server and the file fetch to the local site."""
    return dataclasses.replace(
        settings, dns_nameserver="127.0.0.1", dns_port=dns.port, domain_proof_timeout=3.0,
        domain_proof_http_scheme="http", domain_proof_http_port=site.port if site else None,
        domain_proof_allow_private_addresses=allow_private)
