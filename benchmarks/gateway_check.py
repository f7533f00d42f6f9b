#!/usr/bin/env python3
"""Gateway client: `check()` per second and the memory of a client holding 100 000 grants.

In one process, with a signed document of --grants grants (two keys and two domains each) made
here and loaded through the client's real poll/verify path:
* check() per second for: a secret key, a publishable key with its Origin, an Origin alone
  (exact host, and under a declared wildcard), an unknown key (valid checksum), an unknown Origin;
* beside the floor of one `hashlib.sha256(key).digest()` + one dict lookup in a dict of the same
  size (the least any hash-based check must do), as a ratio — goal: within 2x of the floor;
* memory the client keeps for the list (tracemalloc: retained after load, and the peak while
  loading).

The 1 000 sample keys and hosts repeat, as a gateway's callers do, so the client's memos (a key's
verified digest, a host's wildcard match, a publishable key's host) answer all but the first
pass. The "first sight" cases turn the memos off: the cost of a key or host never seen before.

Rounds alternate between the floor and each case (median reported) so a noisy machine hits both.

    .venv/bin/python benchmarks/gateway_check.py [--grants 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import gateway, keyformat, signing  # noqa: E402
from bot.gateway import AllowlistClient  # noqa: E402

URL = "https://cdn.example.org/allowlist.jws"


class StaticSession:
    """An HTTP session that answers every GET with one body (the client's injectable session)."""

    def __init__(self, body: bytes):
        self.body = body

    def get(self, url, **_kwargs):
        response = requests.Response()
        response.status_code, response._content, response.url = 200, self.body, url
        return response


def make_document(grants: int) -> tuple[bytes, dict, dict]:
    """(signed document, jwks, sample plaintext keys and hosts)."""
    secret_keys, publishable_keys, entries = [], [], []
    for i in range(grants):
        secret, publishable = keyformat.generate("bk", "sk"), keyformat.generate("bk", "pk")
        if i % (grants // 1000 or 1) == 0:
            secret_keys.append(secret)
            publishable_keys.append((publishable, f"app{i}.example.com"))
        entries.append({"app_id": f"app-{i}", "tier": "seed", "status": "active", "version": i + 1,
                        "domains": [f"app{i}.example.com", f"*.app{i}.example.net"], "referrers": [f"app-{i}"],
                        "keys": [{"id": 2 * i + 1, "kind": "secret", "sha256": keyformat.sha256_hex(secret),
                                  "expires_at": None},
                                 {"id": 2 * i + 2, "kind": "publishable",
                                  "sha256": keyformat.sha256_hex(publishable), "expires_at": None}]})
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    doc = {"schema": 1, "version": grants, "generated_at": "2024-01-01T00:00:00Z", "expires_at": expires,
           "key_prefix": "bk", "tiers": {"seed": {"rank": 1, "limits": {"requests_per_minute": 60, "concurrency": 2,
                                                                         "daily_quota": None}}},
           "grants": entries}
    pem, jwk = signing.new_key_material()
    token = signing.sign(json.dumps(doc, separators=(",", ":")).encode(),
                         signing.SigningKey(kid=jwk["kid"], private_pem=pem, public_jwk=jwk))
    return token, {"keys": [jwk]}, {"secret": secret_keys, "publishable": publishable_keys}


def per_second(function, inputs: list, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        for value in inputs:
            function(value)
    return repeat * len(inputs) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=200, help="passes over the 1000 sample inputs per round")
    args = parser.parse_args()

    print(f"making a signed document of {args.grants} grants…", file=sys.stderr)
    token, jwks, samples = make_document(args.grants)
    started = time.perf_counter()
    client = AllowlistClient(URL, None, jwks=jwks, session=StaticSession(token))
    client.poll()
    load_seconds = time.perf_counter() - started

    # Memory: a second client loads the same document under tracemalloc (which slows allocation,
    # hence the separate timing above); what it still holds after the load is its index.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    measured = AllowlistClient(URL, None, jwks=jwks, session=StaticSession(token))
    measured.poll()
    gc.collect()
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    retained -= before
    peak -= before
    del measured
    gc.collect()

    secret = samples["secret"]
    publishable = samples["publishable"]
    unknown_keys = [keyformat.generate("bk", "sk") for _ in secret]
    hosts = [f"https://{host}" for _, host in publishable]
    wildcard_hosts = [f"https://www.{host.replace('.com', '.net')}" for _, host in publishable]
    unknown_hosts = [f"https://nobody{i}.example.org" for i in range(len(secret))]
    assert all(client.check(key=k).allowed for k in secret)
    assert all(client.check(key=k, origin=o).allowed for (k, _), o in zip(publishable, hosts, strict=True))
    assert all(client.check(origin=h).allowed for h in wildcard_hosts)
    assert not any(client.check(key=k).allowed for k in unknown_keys)

    # The floor: one SHA-256 and one lookup in a dict as big as the client's key index.
    index = dict.fromkeys((hashlib.sha256(keyformat.generate("bk", "sk").encode()).digest()
                           for _ in range(2 * args.grants)), True)
    for key in secret:
        index[hashlib.sha256(key.encode()).digest()] = True
    sha256 = hashlib.sha256

    def floor(key: str):
        return index.get(sha256(key.encode()).digest())

    client_index = client._state.by_hash  # the client's own key index, for a floor with its memory layout

    def floor_on_client_index(key: str):
        return client_index.get(sha256(key.encode()).digest())

    check = client.check
    pairs = list(zip([k for k, _ in publishable], hosts, strict=True))
    # Each case: (function, inputs, key memo on?). The inputs repeat every pass, as a gateway's
    # callers repeat their keys, so with the memo on a key's checksum and SHA-256 are computed
    # on its first request only. "first sight" runs the same cases with the memo off: the cost
    # of a key never seen before (or of every key, with key_cache_size=0).
    cases = {
        "floor (sha256 + dict)": (floor, secret, True),
        "floor on the client's index": (floor_on_client_index, secret, True),
        "secret key": (lambda k: check(key=k), secret, True),
        "publishable key + Origin": (lambda pair: check(key=pair[0], origin=pair[1]), pairs, True),
        "Origin, exact host": (lambda o: check(origin=o), hosts, True),
        "Origin, wildcard": (lambda o: check(origin=o), wildcard_hosts, True),
        "miss: unknown key": (lambda k: check(key=k), unknown_keys, True),
        "miss: unknown Origin": (lambda o: check(origin=o), unknown_hosts, True),
        "first sight: secret key": (lambda k: check(key=k), secret, False),
        "first sight: publishable key + Origin": (lambda pair: check(key=pair[0], origin=pair[1]), pairs, False),
        "first sight: unknown key": (lambda k: check(key=k), unknown_keys, False),
        "first sight: Origin, wildcard": (lambda o: check(origin=o), wildcard_hosts, False),
    }
    limits = client.key_cache_size, gateway.WILDCARD_HITS_MAX, gateway.PUBLISHABLE_HITS_MAX
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (function, inputs, memo) in cases.items():
            client.key_cache_size, gateway.WILDCARD_HITS_MAX, gateway.PUBLISHABLE_HITS_MAX = \
                limits if memo else (0, 0, 0)
            for held in (client._digests, client._state.wildcard_hits, client._state.publishable_hits):
                held.clear()
            results[name].append(per_second(function, inputs, args.repeat))
    client.key_cache_size, gateway.WILDCARD_HITS_MAX, gateway.PUBLISHABLE_HITS_MAX = limits
    medians = {name: statistics.median(values) for name, values in results.items()}
    floor_rate = medians["floor (sha256 + dict)"]

    print(f"\ngateway check benchmark — {args.grants} grants (2 keys, 2 domains each), Python "
          f"{sys.version.split()[0]}, median of {args.rounds} rounds × {args.repeat * len(secret)} calls")
    print(f"load (fetch + verify JWS {len(token) / 1e6:.1f} MB + index): {load_seconds:.2f} s; "
          f"memory held: {retained / 2**20:.1f} MiB ({retained / args.grants:.0f} B/grant), "
          f"peak while loading: {peak / 2**20:.1f} MiB")
    print(f"{'case':38} {'checks/s':>12} {'ns/check':>9} {'x floor':>8}")
    for name, rate in medians.items():
        print(f"{name:38} {rate:>12,.0f} {1e9 / rate:>9.0f} {floor_rate / rate:>8.2f}")
    key_cases = ("secret key", "publishable key + Origin", "miss: unknown key")
    worst_key = floor_rate / min(medians[name] for name in key_cases)
    worst_first = floor_rate / min(medians["first sight: " + name.removeprefix("miss: ")]
                                   for name in (*key_cases, "Origin, wildcard"))
    print(f"key checks within {worst_key:.2f}x of the floor (goal ≤ 2x: {'met' if worst_key <= 2 else 'MISSED'}); "
          f"first sight of a key or wildcard host: up to {worst_first:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
