"""The key format: `<prefix>_<kind>_<30 base62><6-char base62 CRC32>`, as documented in docs/keys.md
for gateways and secret-scanning programs."""

from __future__ import annotations

import hashlib
import re
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beekeeper_gateway import keyformat

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The regular expression docs/keys.md gives scanners for the default prefix.
DOCUMENTED_REGEX = re.compile(r"\bbk_(sk|pk|gw)_[0-9A-Za-z]{36}\b")


def reference_checksum(body: str) -> str:
    """The checksum as docs/keys.md describes it, written independently of beekeeper_gateway.keyformat."""
    value, digits = zlib.crc32(body.encode("ascii")), ""
    while value:
        digits = BASE62[value % 62] + digits
        value //= 62
    return digits.rjust(6, "0")


@pytest.mark.parametrize("kind", ["sk", "pk", "gw"])
def test_round_trip(kind):
    key = keyformat.generate("bk", kind)
    assert len(key) == len("bk_") + 3 + 36
    assert keyformat.parse(key) == ("bk", kind)
    assert keyformat.parse(key, "bk") == ("bk", kind)
    assert keyformat.is_valid(key, "bk", kind) and not keyformat.is_valid(key, "bk", "xx")
    assert key[-6:] == reference_checksum(key[:-6])
    assert DOCUMENTED_REGEX.fullmatch(key)


def test_published_test_vectors():
    # docs/keys.md lists these so that a scanner can check its implementation.
    assert keyformat.checksum("bk_sk_" + "0" * 30) == reference_checksum("bk_sk_" + "0" * 30) == "3DB2SP"
    assert keyformat.parse("bk_sk_" + "0" * 30 + "3DB2SP") == ("bk", "sk")
    assert keyformat.parse("bk_sk_AbCdEfGhIjKlMnOpQrStUvWxYz01231DG0pZ") == ("bk", "sk")


def test_every_single_changed_character_is_caught():
    key = keyformat.generate("bk", "sk")
    for position in range(len(key)):
        for replacement in BASE62 + "_":
            if replacement == key[position]:
                continue
            changed = key[:position] + replacement + key[position + 1:]
            assert keyformat.parse(changed) is None, (position, replacement)


def test_swapping_the_kind_breaks_the_checksum():
    key = keyformat.generate("bk", "pk")
    assert keyformat.parse(key.replace("_pk_", "_sk_", 1)) is None


@given(st.text(alphabet=BASE62, min_size=30, max_size=30))
def test_any_random_part_round_trips(random_part):
    body = f"bk_sk_{random_part}"
    assert keyformat.parse(body + keyformat.checksum(body)) == ("bk", "sk")


def test_malformed_keys_are_refused():
    key = keyformat.generate("bk", "sk")
    for bad in ["", key[:-1], key + "A", key.upper(), " " + key, key.replace("_", "-"), "bk_xx_" + key[6:],
                "b_sk_" + key[6:]]:
        assert keyformat.parse(bad) is None, bad


def test_prefix_comes_from_the_policy():
    key = keyformat.generate("acme", "sk")
    assert key.startswith("acme_sk_") and keyformat.parse(key) == ("acme", "sk")
    assert keyformat.parse(key, "bk") is None
    with pytest.raises(ValueError):
        keyformat.generate("bk", "xx")


def test_random_part_is_not_repeated():
    assert len({keyformat.generate("bk", "sk") for _ in range(500)}) == 500


def test_hash_and_display_form():
    key = keyformat.generate("bk", "sk")
    assert keyformat.sha256_hex(key) == hashlib.sha256(key.encode()).hexdigest()
    shown = keyformat.display(key)
    assert shown == f"bk_sk_{key[6:10]}…{key[-4:]}"
    assert key[10:-4] not in shown and len(shown) <= 32


def test_find_candidates_in_free_text():
    sk, pk = keyformat.generate("bk", "sk"), keyformat.generate("bk", "pk")
    forged = sk[:-1] + ("A" if sk[-1] != "A" else "B")
    other_prefix = keyformat.generate("zz", "sk")
    text = (f"here: `{sk}`, and in a URL https://x.example/?key={pk}&a=1\n"
            f"a typo {forged}, someone else's {other_prefix}, glued x{sk} and {sk}x, again {sk}.")
    assert keyformat.find_candidates(text, "bk") == [sk, pk]
    assert keyformat.find_candidates("", "bk") == [] and keyformat.find_candidates(None, "bk") == []
