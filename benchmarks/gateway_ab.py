#!/usr/bin/env python3
"""Gateway client before/after in ONE process: `check()` of this tree's gateway client and of
another tree's (loaded under another module name), each case run for both in turn within
every round, beside the same floors, on the same document (benchmarks/gateway_check.py's).

On a shared machine, separate runs of gateway_check.py drift apart by more than the change
being measured; here the floor and both clients take turns every 1 000 calls, so all three meet
the same noise. Ratios are per round (a client's total time / the floor's); the report gives
their median and spread.

    .venv/bin/python benchmarks/gateway_ab.py --before /tmp/before [--grants 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
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
    warm = module.AllowlistClient(harness.URL, None, jwks=docs.jwks, session=harness.StaticSession(answer))
    warm.poll()
    limits = module.WILDCARD_HITS_MAX, module.PUBLISHABLE_HITS_MAX
    module.WILDCARD_HITS_MAX = module.PUBLISHABLE_HITS_MAX = 0
    cold = module.AllowlistClient(harness.URL, None, jwks=docs.jwks, session=harness.StaticSession(answer),
                                  key_cache_size=0)
    cold.poll()
    cold._hosts.limit = 0
    module.WILDCARD_HITS_MAX, module.PUBLISHABLE_HITS_MAX = limits
    return warm, cold


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
    pairs = {"before": clients(before, docs, answer), "after": clients(gateway, docs, answer)}

    step = max(args.grants // 1000, 1)
    sample = list(range(0, args.grants, step))[:1000]
    secret = [docs.secret[i] for i in sample]
    publishable = [(docs.publishable[i], f"https://app{i}.example.com") for i in sample]
    unknown = [keyformat.generate("bk", "sk") for _ in sample]
    every_origin = [f"https://app{i}.example.com" for i in range(args.grants)]
    index = {hashlib.sha256(k.encode()).digest(): True for k in docs.secret + docs.publishable}
    origins = dict.fromkeys(every_origin, True)
    sha256 = hashlib.sha256

    def key_floor(key: str):
        return index.get(sha256(key.encode()).digest())

    def origin_floor(origin: str):
        return origins.get(origin)

    rotation = max(1, args.repeat * len(sample) // args.grants)
    # case: (floor, inputs, repeat, which client (warm/cold), call)
    cases = {
        "first sight: secret key": (key_floor, secret, args.repeat, 1, lambda c: lambda k: c(key=k)),
        "first sight: publishable key + Origin": (key_floor, publishable, args.repeat, 1,
                                                  lambda c: lambda p: c(key=p[0], origin=p[1])),
        "first sight: unknown key": (key_floor, unknown, args.repeat, 1, lambda c: lambda k: c(key=k)),
        "secret key": (key_floor, secret, args.repeat, 0, lambda c: lambda k: c(key=k)),
        "rotation: every secret key": (key_floor, docs.secret, rotation, 0, lambda c: lambda k: c(key=k)),
        "Origin, exact host": (origin_floor, every_origin[::step][:1000], args.repeat, 0,
                               lambda c: lambda o: c(origin=o)),
        "rotation: every exact Origin": (origin_floor, every_origin, rotation, 0, lambda c: lambda o: c(origin=o)),
    }
    # Floor, before and after take turns every 1 000 calls (in a rotating order), so all three
    # meet the same noise; a round's ratio is a client's total time over the floor's.
    ratios: dict[tuple[str, str], list[float]] = {}
    perf = time.perf_counter
    for number in range(args.rounds):
        print(f"  round {number + 1}/{args.rounds}", file=sys.stderr)
        for name, (floor, inputs, repeat, which, call) in cases.items():
            floor_inputs = secret if inputs is publishable else inputs  # the key floor takes a key
            runners = {"floor": (floor, floor_inputs), "before": (call(pairs["before"][which].check), inputs),
                       "after": (call(pairs["after"][which].check), inputs)}
            for function, values in runners.values():  # warm
                for value in values:
                    function(value)
            totals = dict.fromkeys(runners, 0.0)
            order = list(runners)
            for _ in range(repeat):
                for begin in range(0, len(inputs), 1000):
                    order.append(order.pop(0))
                    for label in order:
                        function, values = runners[label]
                        chunk = values[begin : begin + 1000]
                        started = perf()
                        for value in chunk:
                            function(value)
                        totals[label] += perf() - started
            for who in ("before", "after"):
                ratios.setdefault((name, who), []).append(totals[who] / totals["floor"])
    print(f"\ngateway client A/B in one process: before = {args.before}, after = this tree; {args.grants} grants, "
          f"{args.rounds} rounds; × the floor measured next to it (median, min–max)")
    print(f"{'case':40} {'before':>22} {'after':>22}")
    for name in cases:
        cells = []
        for who in ("before", "after"):
            values = ratios[(name, who)]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})")
        print(f"{name:40} {cells[0]:>22} {cells[1]:>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
