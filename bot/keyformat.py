"""The credential format, shared by the bot and the gateway client (no Flask, no database).

    <prefix>_<kind>_<30 random base62 chars><6-char base62 CRC32>

kind is `sk` (secret key), `pk` (publishable key, browser use, bound to the grant's domains) or
`gw` (gateway credential). The checksum is the CRC32 of everything before it
(`<prefix>_<kind>_<random>`), written in base62 and left-padded with `0` to 6 characters. It lets a
gateway or a secret scanner reject a mistyped or invented key without a lookup. Regular expression
for scanners (prefix `bk`): `\\bbk_(sk|pk|gw)_[0-9A-Za-z]{36}\\b`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 30
CHECKSUM_LENGTH = 6
KINDS = ("sk", "pk", "gw")


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(BASE62[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def checksum(body: str) -> str:
    """6-char base62 CRC32 of `body` (the key without its checksum)."""
    return _base62(zlib.crc32(body.encode()) & 0xFFFFFFFF, CHECKSUM_LENGTH)


def generate(prefix: str, kind: str) -> str:
    """A new random key of `kind` ("sk", "pk" or "gw")."""
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}")
    random_part = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    body = f"{prefix}_{kind}_{random_part}"
    return body + checksum(body)


def pattern(prefix: str) -> re.Pattern:
    """Matches keys of this prefix inside free text (checksum not yet verified)."""
    return re.compile(
        rf"(?<![0-9A-Za-z_]){re.escape(prefix)}_(?:{'|'.join(KINDS)})_[0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}}"
        r"(?![0-9A-Za-z_])"
    )


def parse(key: str, prefix: str | None = None) -> tuple[str, str] | None:
    """(prefix, kind) when `key` is well formed with a valid checksum, else None."""
    match = re.fullmatch(r"([a-z][a-z0-9]{1,9})_(sk|pk|gw)_([0-9A-Za-z]{36})", key or "")
    if not match or (prefix is not None and match.group(1) != prefix):
        return None
    body, check = key[:-CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
    if checksum(body) != check:
        return None
    return match.group(1), match.group(2)


def is_valid(key: str, prefix: str | None = None, kind: str | None = None) -> bool:
    parsed = parse(key, prefix)
    return parsed is not None and (kind is None or parsed[1] == kind)


def sha256_hex(key: str) -> str:
    """What is stored and published: the hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode()).hexdigest()


def display(key: str) -> str:
    """A short, non-secret form for pages and lists: `bk_sk_AbC1…wxYz`."""
    prefix, kind, rest = key.split("_", 2)
    return f"{prefix}_{kind}_{rest[:4]}…{rest[-4:]}"


def find_candidates(text: str, prefix: str) -> list[str]:
    """Every well-formed key with a valid checksum in `text` (e.g. a leaked key in a comment)."""
    return [m for m in dict.fromkeys(pattern(prefix).findall(text or "")) if parse(m, prefix)]
