#!/usr/bin/env python3
"""Gateway client: `check()` per second, load time, memory and delta cost at 100 000 grants.

In one process, with a document of --grants grants (two keys and two domains each) made here
and loaded through the client's real poll/verify path:
* check() per second for: a secret key, a publishable key with its Origin, an Origin alone
  (exact host, and under a declared wildcard), an unknown key (valid checksum), an unknown Origin;
  1 000 sample inputs repeated, as a gateway's callers repeat them;
* the same with every key / every exact Origin of the list in rotation (100 000 distinct
  inputs, past any fixed-size memo);
* "first sight": a client whose memos are off (the cost of a key or host never seen before);
  "polled by hand": the same without the poller thread (no expiry guard: every check reads the
  clock);
* `check_origin(origin)` beside `check(None, origin)` (the same answer) when the client has it;
* beside the floors, as ratios: one `hashlib.sha256(key).digest()` + one dict lookup in a dict
  of the same size (keys), and one lookup in a dict of exact Origins (Origins);
* load + verify of the full document (format 1 compact JWS, and format 2 with its detached
  signature when the client under test reads it), each in a fresh child process, with its RSS
  after the load, the peak RSS (VmHWM) and the peak over a second full poll;
* applying a delta of one changed grant to a client holding the whole list.

Every case, floor or check, is called directly with positional arguments by the same loop (no
wrapper on either side), and the floors' dicts hold their own copies of the queried Origins (see
benchmarks/README.md). Both clients are started (`start()`) as a gateway runs them.

Rounds alternate between the floor and each case (median and spread reported) so a noisy
machine hits both. `--code DIR` runs the same measurements against another source tree (e.g.
the commit before issue 18, extracted with `git archive`), for before/after in one session.

    .venv/bin/python benchmarks/gateway_check.py [--grants 100000] [--rounds 5]
    .venv/bin/python benchmarks/gateway_check.py --code /tmp/before   # the client of another tree
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import json
import os
import pickle
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
# The tree whose client is measured: --code DIR (read here, before the import below), else
# $BENCH_CODE, else this checkout.
_code_arg = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv[:-1] else None
CODE = Path(_code_arg or os.environ.get("BENCH_CODE") or ROOT).resolve()
sys.path.insert(0, str(CODE))

if (CODE / "gateway" / "src").is_dir():  # the client's own distribution (gateway/); an older tree: bot/gateway.py
    sys.path.insert(0, str(CODE / "gateway" / "src"))
    from beekeeper_gateway import client as gateway  # noqa: E402
    from beekeeper_gateway import keyformat  # noqa: E402
else:  # pragma: no cover - a tree from before the gateway distribution (--code)
    from bot import gateway, keyformat  # noqa: E402
try:
    from bot.allowlist import signing  # noqa: E402
except ImportError:  # pragma: no cover - a tree from before the layout (--code)
    from bot import signing  # noqa: E402

AllowlistClient = gateway.AllowlistClient

URL = "https://cdn.example.org/allowlist"
READS_FORMAT_2 = hasattr(gateway, "SIGNATURE_HEADER")
V2_TYPE = "application/vnd.beekeeper.allowlist+json; format=2"


class StaticSession:
    """An HTTP session answering every GET with the next of its (body, headers) answers (the
    last one repeats): the client's injectable session."""

    def __init__(self, *answers: tuple[bytes, dict]):
        self.answers = list(answers)

    def get(self, url, **_kwargs):
        body, headers = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        response = requests.Response()
        response.status_code, response._content, response.url = 200, body, url
        response.headers.update(headers)
        return response


def _b64(hex_digest: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode()


TIERS = {"seed": {"rank": 1, "limits": {"requests_per_minute": 60, "concurrency": 2, "daily_quota": None}}}
COLUMNS = {"grants": ["app_id", "tier", "version", "domains", "keys"],
           "keys": ["sha256", "kind", "expires_at", "revoked_at"], "removed": ["app_id", "status", "version"]}


def _header(version: int, since: int | None = None, fmt: int = 1) -> dict:
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    doc = {"schema": 1, "version": version, "generated_at": "2024-01-01T00:00:00Z", "expires_at": expires,
           "key_prefix": "bk", "tiers": TIERS}
    if fmt == 2:
        doc.update(format=2, columns=COLUMNS)
    if since is not None:
        doc.update(since=since, removed=[])
    return doc


def _entry(i: int, secret_hex: str, publishable_hex: str, fmt: int, version: int):
    domains = [f"app{i}.example.com", f"*.app{i}.example.net"]
    if fmt == 2:
        return [f"app-{i}", "seed", version, domains,
                [[_b64(secret_hex), "secret", None, None], [_b64(publishable_hex), "publishable", None, None]]]
    return {"app_id": f"app-{i}", "tier": "seed", "status": "active", "version": version, "domains": domains,
            "referrers": [f"app-{i}"],
            "keys": [{"id": 2 * i + 1, "kind": "secret", "sha256": secret_hex, "expires_at": None},
                     {"id": 2 * i + 2, "kind": "publishable", "sha256": publishable_hex, "expires_at": None}]}


class Documents:
    """The list in both formats, signed as the bot signs them, and one-change deltas."""

    def __init__(self, grants: int):
        self.grants = grants
        self.secret = [keyformat.generate("bk", "sk") for _ in range(grants)]
        self.publishable = [keyformat.generate("bk", "pk") for _ in range(grants)]
        self.secret_hex = [keyformat.sha256_hex(k) for k in self.secret]
        self.publishable_hex = [keyformat.sha256_hex(k) for k in self.publishable]
        pem, jwk = signing.new_key_material()
        self.key = signing.SigningKey(kid=jwk["kid"], private_pem=pem, public_jwk=jwk)
        self.jwks = {"keys": [jwk]}

    def full(self, fmt: int) -> tuple[bytes, dict]:
        entries = [_entry(i, self.secret_hex[i], self.publishable_hex[i], fmt, i + 1) for i in range(self.grants)]
        return self.answer({**_header(self.grants, fmt=fmt), "grants": entries}, fmt)

    def delta(self, fmt: int, version: int, grant: int) -> tuple[bytes, dict]:
        """A delta from version-1 to version: grant `grant` changed (a new secret key)."""
        secret_hex = hashlib.sha256(f"new-{version}".encode()).hexdigest()
        entry = _entry(grant, secret_hex, self.publishable_hex[grant], fmt, version)
        return self.answer({**_header(version, since=version - 1, fmt=fmt), "grants": [entry]}, fmt)

    def answer(self, doc: dict, fmt: int) -> tuple[bytes, dict]:
        body = json.dumps(doc, separators=(",", ":")).encode()
        if fmt == 2:
            signature = signing.sign_detached(body, self.key).decode()
            return body, {"Content-Type": V2_TYPE, "X-Allowlist-Signature": signature}
        return signing.sign(body, self.key), {"Content-Type": "application/jose"}


def rate(function, inputs: list, repeat: int) -> float:
    """Calls per second of `function` over `inputs`, called directly: f(value), or f(a, b) for a
    list of pairs (the same loop for a floor and a check)."""
    started = time.perf_counter()
    if inputs and isinstance(inputs[0], tuple):
        for _ in range(repeat):
            for a, b in inputs:
                function(a, b)
    else:
        for _ in range(repeat):
            for value in inputs:
                function(value)
    return repeat * len(inputs) / (time.perf_counter() - started)


def polling(client):
    """`client` started as a gateway starts it (start() polls in its thread); returned once the
    list is loaded."""
    client.start()
    deadline = time.monotonic() + 120
    while client.version is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the poller did not load the list: {client.last_error!r}")
        time.sleep(0.02)
    time.sleep(0.1)  # the expiry guard's first round (a client that has one)
    return client


# ---------------------------------------------------------------------------------------------
# load + RSS, in a child process (a fresh heap: RSS figures are the load's own)
# ---------------------------------------------------------------------------------------------


def _rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, KiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def load_child(path: str, trace: bool = False) -> None:
    """Child: load the answer in `path`; print the load time and RSS growth as JSON. Then a
    second full load while the first list is held (a poll after a 410 holds the old index until
    the new one is in force): the peak over both. With `trace`: the Python memory tracemalloc
    counts after the load and at its peak instead (tracing makes the load itself far slower)."""
    with open(path, "rb") as handle:
        answer, jwks = pickle.load(handle)
    gc.collect()
    if trace:
        import tracemalloc

        client = AllowlistClient(URL, None, jwks=jwks, session=StaticSession(answer))
        tracemalloc.start()
        client.poll()
        current, peak = tracemalloc.get_traced_memory()
        print(json.dumps({"traced_mib": current / 2**20, "traced_peak_mib": peak / 2**20}))
        return
    base, _ = _rss_kib()
    client = AllowlistClient(URL, None, jwks=jwks, session=StaticSession(answer))
    started, cpu = time.perf_counter(), time.process_time()
    client.poll()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    after, peak = _rss_kib()
    second = AllowlistClient(URL, None, jwks=jwks, session=StaticSession(answer))
    second.poll()
    _, second_peak = _rss_kib()
    print(json.dumps({"load_s": seconds, "load_cpu_s": cpu, "rss_mib": (after - base) / 1024,
                      "peak_mib": (peak - base) / 1024, "second_peak_mib": (second_peak - base) / 1024}))


def load_in_child(answer: tuple[bytes, dict], jwks: dict, workdir: Path, runs: int, trace: bool) -> dict:
    path = workdir / "answer.pickle"
    with open(path, "wb") as handle:
        pickle.dump((answer, jwks), handle)
    results = []
    for extra in [[]] * runs + ([["--trace-child"]] if trace else []):
        output = subprocess.run([sys.executable, __file__, "--load-child", str(path), *extra], capture_output=True,
                                text=True, check=True, env={**os.environ, "BENCH_CODE": str(CODE)}).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    merged: dict[str, list] = {}
    for result in results:
        for key, value in result.items():
            merged.setdefault(key, []).append(value)
    return merged


# ---------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{min(values):.3g}–{max(values):.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=100, help="passes over the 1000 sample inputs per round")
    parser.add_argument("--load-runs", type=int, default=3, help="child processes per format for load + RSS")
    parser.add_argument("--deltas", type=int, default=20, help="one-change deltas applied")
    parser.add_argument("--no-tracemalloc", action="store_true",
                        help="skip the extra child per format that counts Python memory with tracemalloc")
    parser.add_argument("--code", help="the source tree whose gateway client is measured (default: this one)")
    parser.add_argument("--load-child", help=argparse.SUPPRESS)
    parser.add_argument("--trace-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_child:
        load_child(args.load_child, trace=args.trace_child)
        return 0

    print(f"client under test: {CODE} (reads format 2: {READS_FORMAT_2}); making {args.grants} grants…",
          file=sys.stderr)
    docs = Documents(args.grants)
    formats = (1, 2) if READS_FORMAT_2 else (1,)
    answers = {fmt: docs.full(fmt) for fmt in formats}
    workdir = Path(tempfile.mkdtemp(prefix="bk-gwcheck-"))
    loads = {}
    for fmt in formats:
        print(f"loading format {fmt} ({len(answers[fmt][0]) / 1e6:.1f} MB) in {args.load_runs} child processes…",
              file=sys.stderr)
        loads[fmt] = load_in_child(answers[fmt], docs.jwks, workdir, args.load_runs, not args.no_tracemalloc)
    shutil.rmtree(workdir, ignore_errors=True)

    best = max(formats)
    # Both clients are started as a gateway runs them (start(): the poller thread, and, in a client
    # that has one, the expiry guard that lets check() skip its clock read and check_origin()
    # answer from the exact-Origin index). The poller's first poll loads the list; the interval
    # is long enough that it does not poll again during the measurements.
    client = polling(AllowlistClient(URL, None, jwks=docs.jwks, session=StaticSession(answers[best]),
                                     poll_interval=10**6))
    # memos off: a client loaded with every memo at 0 (first sight of every key and host)
    limits = gateway.WILDCARD_HITS_MAX, gateway.PUBLISHABLE_HITS_MAX
    gateway.WILDCARD_HITS_MAX = gateway.PUBLISHABLE_HITS_MAX = 0
    cold = polling(AllowlistClient(URL, None, jwks=docs.jwks, session=StaticSession(answers[best]),
                                   key_cache_size=0, poll_interval=10**6))
    # ... and one polled by hand (no poller thread, so no expiry guard: every check() reads the clock)
    by_hand = AllowlistClient(URL, None, jwks=docs.jwks, session=StaticSession(answers[best]), key_cache_size=0)
    by_hand.poll()
    for memo_off in (cold, by_hand):
        if hasattr(memo_off, "_hosts"):
            memo_off._hosts.limit = 0
    gateway.WILDCARD_HITS_MAX, gateway.PUBLISHABLE_HITS_MAX = limits

    step = max(args.grants // 1000, 1)
    sample = list(range(0, args.grants, step))[:1000]
    secret = [docs.secret[i] for i in sample]
    pairs = [(docs.publishable[i], f"https://app{i}.example.com") for i in sample]
    hosts = [f"https://app{i}.example.com" for i in sample]
    wildcard_hosts = [f"https://www.app{i}.example.net" for i in sample]
    unknown_keys = [keyformat.generate("bk", "sk") for _ in sample]
    unknown_hosts = [f"https://nobody{i}.example.org" for i in sample]
    every_secret = docs.secret
    every_origin = [f"https://app{i}.example.com" for i in range(args.grants)]
    assert all(client.check(key=k).allowed for k in secret)
    assert all(client.check(key=k, origin=o).allowed for k, o in pairs)
    assert all(client.check(origin=h).allowed for h in wildcard_hosts)
    assert not any(client.check(key=k).allowed for k in unknown_keys)
    has_check_origin = hasattr(client, "check_origin")
    if has_check_origin:
        for origin in hosts + wildcard_hosts + unknown_hosts:
            assert client.check_origin(origin) is client.check(origin=origin)

    # The floors: one SHA-256 and one lookup in a dict as big as the client's key index; one
    # lookup in a dict of every exact Origin. Every case, floors included, is called the same
    # way: directly (no wrapper), with positional arguments, one per element of its input (a
    # string, or a pair unpacked by the loop; a floor called with a pair ignores what it does
    # not need). The Origin floor's dict holds copies of the Origins, not the query strings
    # themselves, as the client's index does: a gateway's header strings are new objects, and
    # an identical object would let the dict skip comparing the strings.
    index = {hashlib.sha256(k.encode()).digest(): True for k in docs.secret + docs.publishable}
    origins = {origin.encode().decode(): True for origin in every_origin}
    assert not any(a is b for a, b in zip(origins, every_origin, strict=True))
    sha256 = hashlib.sha256

    def floor(key: str):
        return index.get(sha256(key.encode()).digest())

    def pair_floor(key: str, _origin: str):  # the key floor, called as check(key, origin) is
        return index.get(sha256(key.encode()).digest())

    def origin_floor(origin: str):
        return origins.get(origin)

    def keyless_origin_floor(_key: None, origin: str):  # called as check(None, origin) is
        return origins.get(origin)

    check, check_cold, check_by_hand = client.check, cold.check, by_hand.check
    keyless = [(None, origin) for origin in hosts]
    keyless_wildcard = [(None, origin) for origin in wildcard_hosts]
    keyless_unknown = [(None, origin) for origin in unknown_hosts]
    keyless_every = [(None, origin) for origin in every_origin]
    # The same 100 000 Origins in a random order (one fixed permutation, for floor and client
    # alike): list order walks the floor's dict and its key strings in the order they were
    # allocated, which the CPU's prefetcher follows; requests do not arrive in list order.
    shuffled_origins = every_origin[:]
    random.Random(18).shuffle(shuffled_origins)
    rotation_repeat = max(1, args.repeat * len(secret) // len(every_secret))
    r, rr = args.repeat, rotation_repeat
    key_f, pair_f, origin_f, keyless_f = ("floor: sha256 + dict", "floor: sha256 + dict, called with (key, Origin)",
                                          "floor: dict of exact Origins",
                                          "floor: dict of exact Origins, called with (None, Origin)")
    rot_key_f, rot_origin_f, rot_keyless_f = ("rotation floor: sha256 + dict", "rotation floor: dict of exact Origins",
                                              "rotation floor: dict of exact Origins, called with (None, Origin)")
    rot_random_f = "rotation floor, random order: dict of exact Origins"
    # name: (function, inputs, repeat, the floor it is compared with)
    cases = {
        key_f: (floor, secret, r, key_f),
        pair_f: (pair_floor, pairs, r, pair_f),
        origin_f: (origin_floor, hosts, r, origin_f),
        keyless_f: (keyless_origin_floor, keyless, r, keyless_f),
        "secret key": (check, secret, r, key_f),
        "publishable key + Origin": (check, pairs, r, pair_f),
        "Origin, exact host": (check, keyless, r, keyless_f),
        "Origin, wildcard": (check, keyless_wildcard, r, keyless_f),
        "miss: unknown key": (check, unknown_keys, r, key_f),
        "miss: unknown Origin": (check, keyless_unknown, r, keyless_f),
        rot_key_f: (floor, every_secret, rr, rot_key_f),
        "rotation: every secret key": (check, every_secret, rr, rot_key_f),
        rot_origin_f: (origin_floor, every_origin, rr, rot_origin_f),
        rot_keyless_f: (keyless_origin_floor, keyless_every, rr, rot_keyless_f),
        "rotation: every exact Origin": (check, keyless_every, rr, rot_keyless_f),
        "first sight: secret key": (check_cold, secret, r, key_f),
        "first sight: publishable key + Origin": (check_cold, pairs, r, pair_f),
        "first sight: unknown key": (check_cold, unknown_keys, r, key_f),
        "first sight: Origin, wildcard": (check_cold, keyless_wildcard, r, keyless_f),
        "first sight, polled by hand: secret key": (check_by_hand, secret, r, key_f),
        "first sight, polled by hand: publishable + Origin": (check_by_hand, pairs, r, pair_f),
    }
    if has_check_origin:
        check_origin, check_origin_by_hand = client.check_origin, by_hand.check_origin
        cases.update({
            "check_origin: exact host": (check_origin, hosts, r, origin_f),
            "check_origin: wildcard": (check_origin, wildcard_hosts, r, origin_f),
            "check_origin: unknown Origin": (check_origin, unknown_hosts, r, origin_f),
            "rotation: every exact Origin, check_origin": (check_origin, every_origin, rr, rot_origin_f),
            "check_origin, polled by hand: exact host": (check_origin_by_hand, hosts, r, origin_f),
            rot_random_f: (origin_floor, shuffled_origins, rr, rot_random_f),
            "rotation, random order: every exact Origin, check_origin": (check_origin, shuffled_origins, rr,
                                                                        rot_random_f),
        })
    for function, inputs, _, _ in cases.values():  # warm the memos (rotation: one pass fills them)
        rate(function, inputs, 1)
    results: dict[str, list[float]] = {name: [] for name in cases}
    for round_number in range(args.rounds):
        print(f"  round {round_number + 1}/{args.rounds}", file=sys.stderr)
        for name, (function, inputs, repeat, _) in cases.items():
            if name.startswith("first sight"):  # the snapshot memos off too (read per call by older clients)
                gateway.WILDCARD_HITS_MAX = gateway.PUBLISHABLE_HITS_MAX = 0
            results[name].append(rate(function, inputs, repeat))
            gateway.WILDCARD_HITS_MAX, gateway.PUBLISHABLE_HITS_MAX = limits
    for started_client in (client, cold):
        started_client.stop()

    # one-change deltas applied to a client holding the whole list (poll path: verify + apply)
    delta_seconds = {}
    for fmt in formats:
        holder = AllowlistClient(URL, None, jwks=docs.jwks, session=StaticSession(answers[fmt]))
        holder.poll()
        deltas = [docs.delta(fmt, args.grants + n + 1, (n * 7919) % args.grants) for n in range(args.deltas)]
        holder._http = StaticSession(*deltas, deltas[-1])
        times = []
        for _ in deltas:
            started = time.perf_counter()
            holder.poll()
            times.append(time.perf_counter() - started)
        assert holder.version == args.grants + args.deltas
        delta_seconds[fmt] = times
        del holder

    medians = {name: statistics.median(values) for name, values in results.items()}

    print(f"\ngateway check benchmark — client of {CODE}, load average {os.getloadavg()[0]:.1f} at the end, "
          f"{args.grants} grants (2 keys, 2 domains each), "
          f"Python {sys.version.split()[0]}, median of {args.rounds} rounds (spread: min–max)")
    for fmt in formats:
        figures = loads[fmt]
        print(f"format {fmt}: {len(answers[fmt][0]) / 1e6:.1f} MB; load (verify + parse + index) "
              f"{statistics.median(figures['load_s']):.2f} s [{spread(figures['load_s'])}] "
              f"(CPU {statistics.median(figures['load_cpu_s']):.2f} s [{spread(figures['load_cpu_s'])}]), "
              f"RSS +{statistics.median(figures['rss_mib']):.0f} MiB [{spread(figures['rss_mib'])}], "
              f"peak +{statistics.median(figures['peak_mib']):.0f} MiB, with a second full load "
              f"+{statistics.median(figures['second_peak_mib']):.0f} MiB"
              + (f"; tracemalloc +{figures['traced_mib'][0]:.0f} MiB (peak +{figures['traced_peak_mib'][0]:.0f})"
                 if "traced_mib" in figures else "")
              + "; one-change delta: median "
              f"{statistics.median(delta_seconds[fmt]) * 1000:.2f} ms "
              f"[{spread([t * 1000 for t in delta_seconds[fmt]])}] over {args.deltas}")
    print(f"{'case':58} {'checks/s':>12} {'ns/check':>9} {'x floor':>8}  spread (x floor)")
    for name, rate_ in medians.items():
        floor_rate = medians[cases[name][3]]
        ratios = [floor_rate / r for r in results[name]]
        print(f"{name:58} {rate_:>12,.0f} {1e9 / rate_:>9.0f} {floor_rate / rate_:>8.2f}  {spread(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
