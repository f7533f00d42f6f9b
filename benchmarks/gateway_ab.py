#!/usr/bin/env python3
"""Gateway client before/after in ONE process: `check()` of this tree's gateway client and of
another tree's (loaded under another module name), each case run for both in turn within
every round, beside the same floors, on the same document (benchmarks/gateway_check.py's).

On a shared machine, separate runs of gateway_check.py drift apart by more than the change
being measured; here the floor and both clients take turns every 1 000 calls, so all three meet
the same noise. Ratios are per round (a client's total time / the floor's); the report gives
their median and spread.

Every function, floor or client method, is called directly with positional arguments by the
same loop (gateway_check.py's convention); the clients are started as a gateway runs them
(`start()`), except the "polled by hand" ones; `check_origin` cases run for a tree that has it.

    .venv/bin/python benchmarks/gateway_ab.py --before /tmp/before [--grants 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gateway_check as harness  # noqa: E402

from beekeeper_gateway import client as gateway  # noqa: E402
from beekeeper_gateway import keyformat  # noqa: E402


def load_module(tree: Path):
    path = tree / "bot" / "gateway.py"  # a tree from before the gateway distribution
    if not path.exists():
        path = tree / "gateway" / "src" / "beekeeper_gateway" / "client.py"
    spec = importlib.util.spec_from_file_location("gateway_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gateway_before"] = module
    spec.loader.exec_module(module)
    return module


def clients(module, docs, answer):
    """(warm, cold, cold polled by hand) clients of `module`: the first two started as a gateway
    runs them (start(): the poller thread, and the expiry guard in a client that has one), the
    cold ones with every memo off (the first sight of every key); the third has no poller."""
    warm = harness.polling(module.AllowlistClient(harness.URL, None, jwks=docs.jwks,
                                                  session=harness.StaticSession(answer), poll_interval=10**6))
    limits = module.WILDCARD_HITS_MAX, module.PUBLISHABLE_HITS_MAX
    module.WILDCARD_HITS_MAX = module.PUBLISHABLE_HITS_MAX = 0
    made = []
    for by_hand in (False, True):
        cold = module.AllowlistClient(harness.URL, None, jwks=docs.jwks, session=harness.StaticSession(answer),
                                      key_cache_size=0, poll_interval=10**6)
        if by_hand:
            cold.poll()
        else:
            harness.polling(cold)
        cold._hosts.limit = 0
        made.append(cold)
    module.WILDCARD_HITS_MAX, module.PUBLISHABLE_HITS_MAX = limits
    return warm, *made


def timed(function, values) -> float:
    """Seconds for calling `function` directly over `values`: f(value), or f(a, b) for pairs (the
    same loop for the floor and both clients)."""
    perf = time.perf_counter
    if isinstance(values[0], tuple):
        started = perf()
        for a, b in values:
            function(a, b)
        return perf() - started
    started = perf()
    for value in values:
        function(value)
    return perf() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the other source tree (its gateway client)")
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    before = load_module(Path(args.before).resolve())
    docs = harness.Documents(args.grants)
    answer = docs.full(2)
    made = {"before": clients(before, docs, answer), "after": clients(gateway, docs, answer)}

    step = max(args.grants // 1000, 1)
    sample = list(range(0, args.grants, step))[:1000]
    secret = [docs.secret[i] for i in sample]
    publishable = [(docs.publishable[i], f"https://app{i}.example.com") for i in sample]
    unknown = [keyformat.generate("bk", "sk") for _ in sample]
    every_origin = [f"https://app{i}.example.com" for i in range(args.grants)]
    hosts = every_origin[::step][:1000]
    wildcard = [f"https://www.app{i}.example.net" for i in sample]
    nowhere = [f"https://nobody{i}.example.org" for i in sample]
    # The floors' dicts hold other string objects than the queries, as the clients' indexes do
    # (see gateway_check.py); every function, floor or check, is called directly with positional
    # arguments, one per element of its input.
    index = {hashlib.sha256(k.encode()).digest(): True for k in docs.secret + docs.publishable}
    origins = {origin.encode().decode(): True for origin in every_origin}
    sha256 = hashlib.sha256

    def key_floor(key: str):
        return index.get(sha256(key.encode()).digest())

    def pair_floor(key: str, _origin: str):
        return index.get(sha256(key.encode()).digest())

    def origin_floor(origin: str):
        return origins.get(origin)

    def keyless_floor(_key: None, origin: str):
        return origins.get(origin)

    def keyless(values):
        return [(None, value) for value in values]

    rotation = max(1, args.repeat * len(sample) // args.grants)
    # case: (floor, inputs, repeat, which client (0 warm, 1 cold, 2 cold polled by hand), method)
    cases = {
        "first sight: secret key": (key_floor, secret, args.repeat, 1, "check"),
        "first sight: publishable key + Origin": (pair_floor, publishable, args.repeat, 1, "check"),
        "first sight: unknown key": (key_floor, unknown, args.repeat, 1, "check"),
        "first sight, polled by hand: secret key": (key_floor, secret, args.repeat, 2, "check"),
        "first sight, polled by hand: publishable + Origin": (pair_floor, publishable, args.repeat, 2, "check"),
        "secret key": (key_floor, secret, args.repeat, 0, "check"),
        "rotation: every secret key": (key_floor, docs.secret, rotation, 0, "check"),
        "Origin, exact host: check(None, o)": (keyless_floor, keyless(hosts), args.repeat, 0, "check"),
        "rotation: every exact Origin, check(None, o)": (keyless_floor, keyless(every_origin), rotation, 0, "check"),
        "Origin, exact host: check_origin(o)": (origin_floor, hosts, args.repeat, 0, "check_origin"),
        "rotation: every exact Origin, check_origin(o)": (origin_floor, every_origin, rotation, 0, "check_origin"),
        "check_origin(o), polled by hand": (origin_floor, hosts, args.repeat, 2, "check_origin"),
        "Origin under a wildcard: check(None, o)": (keyless_floor, keyless(wildcard), args.repeat, 0, "check"),
        "Origin under a wildcard: check_origin(o)": (origin_floor, wildcard, args.repeat, 0, "check_origin"),
        "unknown Origin: check(None, o)": (keyless_floor, keyless(nowhere), args.repeat, 0, "check"),
        "unknown Origin: check_origin(o)": (origin_floor, nowhere, args.repeat, 0, "check_origin"),
    }
    # Floor, before and after take turns every 1 000 calls (in a rotating order), so all three
    # meet the same noise; a round's ratio is a client's total time over the floor's. A tree
    # whose client lacks the method is left out of that case.
    ratios: dict[tuple[str, str], list[float]] = {}
    # Also per chunk: a chunk's three runs follow each other within a few milliseconds, so a
    # preemption by another process spoils one chunk's ratio, which the median of all chunks'
    # ratios leaves out, where it weighs on a round's totals.
    chunk_ratios: dict[tuple[str, str], list[float]] = {}
    for number in range(args.rounds):
        print(f"  round {number + 1}/{args.rounds}", file=sys.stderr)
        for name, (floor, inputs, repeat, which, method) in cases.items():
            runners = {"floor": floor}
            for who in ("before", "after"):
                function = getattr(made[who][which], method, None)
                if function is not None:
                    runners[who] = function
            for function in runners.values():  # warm
                timed(function, inputs)
            totals = dict.fromkeys(runners, 0.0)
            times = dict.fromkeys(runners, 0.0)
            order = list(runners)
            for _ in range(repeat):
                for begin in range(0, len(inputs), 1000):
                    order.append(order.pop(0))
                    chunk = inputs[begin : begin + 1000]
                    for label in order:
                        times[label] = timed(runners[label], chunk)
                        totals[label] += times[label]
                    for who in runners.keys() - {"floor"}:
                        chunk_ratios.setdefault((name, who), []).append(times[who] / times["floor"])
            for who in runners.keys() - {"floor"}:
                ratios.setdefault((name, who), []).append(totals[who] / totals["floor"])
    for pair in made.values():
        for client in pair[:2]:
            client.stop()
    print(f"\ngateway client A/B in one process: before = {args.before}, after = this tree; {args.grants} grants, "
          f"{args.rounds} rounds; × the floor measured next to it (median, min–max)")
    print(f"{'case':50} {'before':>22} {'after':>22}")
    for name in cases:
        cells = []
        for who in ("before", "after"):
            values = ratios.get((name, who))
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})" if values else "—")
        print(f"{name:50} {cells[0]:>22} {cells[1]:>22}")
    print("\nthe same, per chunk of 1 000 calls: median of every chunk's ratio (interquartile range)")
    print(f"{'case':50} {'before':>22} {'after':>22}")
    for name in cases:
        cells = []
        for who in ("before", "after"):
            values = chunk_ratios.get((name, who))
            if values:
                q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
                cells.append(f"{q2:.2f} ({q1:.2f}–{q3:.2f})")
            else:
                cells.append("—")
        print(f"{name:50} {cells[0]:>22} {cells[1]:>22}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
