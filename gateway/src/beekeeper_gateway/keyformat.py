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


# --------------------------------------------------------------------------------------------
# Finding keys that someone tried to hide or that got mangled on the way (the leak scanner)
# --------------------------------------------------------------------------------------------

# A checksum is a CRC32 (< 2**32) in six base62 digits, so its first digit is 0-4
# (5 * 62**5 > 2**32): a cheap first filter before any CRC is computed.
_BODY_WINDOW = re.compile(rf"(?=([0-9A-Za-z]{{{RANDOM_LENGTH}}}[0-4][0-9A-Za-z]{{{CHECKSUM_LENGTH - 1}}}))")
_NOT_BODY_CHARS = re.compile(r"[^0-9A-Za-z]+")
_BASE62_VALUE = {char: value for value, char in enumerate(BASE62)}
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_WHITESPACE = re.compile(r"\s+")
_ENTITY_OR_ESCAPE = re.compile(r"&#?[0-9A-Za-z]+;?|%[0-9A-Fa-f]{2}")
SCAN_MAX_CHARS = 1_000_000  # text beyond this is not scanned (a GitHub comment holds 65 536)


def normalise_for_scan(text: str) -> str:
    """`text` as a reader would see it: HTML entities and %-escapes decoded (twice, for
    `&amp;#x62;`), invisible format characters (zero-width space/joiner, word joiner, BOM, soft
    hyphen: Unicode category Cf) removed, compatibility forms folded (NFKC: full-width letters)."""
    import html
    import unicodedata
    from urllib.parse import unquote

    text = text[:SCAN_MAX_CHARS]
    for _ in range(2):
        if not _ENTITY_OR_ESCAPE.search(text):
            break
        text = unquote(html.unescape(text), errors="replace")
    text = "".join(c for c in text if unicodedata.category(c) != "Cf") if not text.isascii() else text
    return unicodedata.normalize("NFKC", text)


def _bodies_in(text: str, prefix: str, found: dict[str, None]) -> None:
    """Every key of `prefix` whose checksum-verified 36-character body (30 random characters and
    the checksum) occurs in `text` once everything but `0-9A-Za-z` is removed (what was split by
    lines, spaces, quote markers, hyphens or underscores is joined again; a key written plainly
    is still a run of it), with or without its `<prefix>_<kind>_` in front: the body alone
    identifies the key (the kind is the one whose checksum verifies)."""
    stream = _NOT_BODY_CHARS.sub("", text)
    if len(stream) < RANDOM_LENGTH + CHECKSUM_LENGTH:
        return
    # CRC32 of `<prefix>_<kind>_` once; each window continues it over its random part.
    starts = [(kind, zlib.crc32(f"{prefix}_{kind}_".encode())) for kind in KINDS]
    digit = _BASE62_VALUE
    for window in _BODY_WINDOW.findall(stream):
        expected = 0
        for char in window[RANDOM_LENGTH:]:
            expected = expected * 62 + digit[char]
        if expected > 0xFFFFFFFF:
            continue
        random_part = window[:RANDOM_LENGTH].encode()
        for kind, start in starts:
            if zlib.crc32(random_part, start) == expected:
                found[f"{prefix}_{kind}_{window}"] = None


def find_keys(text: str | None, prefix: str) -> list[str]:
    """Every key of `prefix` in `text` with a valid checksum, however it was written: the plain
    form, glued to other words (`MY_KEY_<key>`), split over lines or by spaces and punctuation,
    with HTML entities (`&#x62;k_…`), %-escapes, zero-width or full-width characters, without its
    `<prefix>_<kind>_`, or base64-encoded (also inside a larger base64 blob such as HTTP Basic
    credentials). The checksum (a CRC32: about one chance in four billion per place looked at)
    is what keeps ordinary text from matching. Keys in order of first appearance."""
    if not text:
        return []
    found: dict[str, None] = {}
    normal = normalise_for_scan(text)
    _bodies_in(normal, prefix, found)
    import base64
    import binascii

    for run in _BASE64_RUN.findall(_WHITESPACE.sub("", normal)):
        run = run.rstrip("=").replace("-", "+").replace("_", "/")
        for offset in range(4):  # the run may begin with a word glued to the base64 (`Basic…`)
            part = run[offset:]
            part = part[: len(part) - len(part) % 4] if len(part) % 4 == 1 else part
            try:
                decoded = base64.b64decode(part + "=" * (-len(part) % 4)).decode("latin-1")
            except (binascii.Error, ValueError):
                continue
            _bodies_in(decoded, prefix, found)
    return list(found)
