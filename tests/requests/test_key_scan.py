"""keyformat.find_keys, the leak scanner's search: keys however they were written, and nothing
in ordinary text."""

from __future__ import annotations

import base64
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from beekeeper_gateway import keyformat

ROOT = Path(__file__).resolve().parents[2]
SK, PK, GW = keyformat.generate("bk", "sk"), keyformat.generate("bk", "pk"), keyformat.generate("bk", "gw")


def _entities(key: str) -> str:
    return "".join(f"&#x{ord(c):x};" if i % 3 == 0 else c for i, c in enumerate(key))


FORMS = {
    "plain": lambda k: f"curl -H 'Authorization: Bearer {k}'",
    "glued before": lambda k: f"MY_KEY_{k}",
    "glued after": lambda k: f"{k}xyz",
    "glued both sides": lambda k: f"export KEY=abc{k}def",
    "split over two lines": lambda k: f"{k[:20]}\n{k[20:]}",
    "split in a quote": lambda k: f"> {k[:20]}\n> {k[20:]}",
    "split by spaces": lambda k: " ".join(k[i:i + 7] for i in range(0, len(k), 7)),
    "split with a hyphen": lambda k: f"{k[:25]}-\n{k[25:]}",
    "underscores inserted": lambda k: "_".join(k[i:i + 6] for i in range(0, len(k), 6)),
    "hex entities": _entities,
    "decimal entities": lambda k: "".join(f"&#{ord(c)};" for c in k),
    "double-encoded entity": lambda k: "&amp;#x62;" + k[1:],
    "percent-escaped": lambda k: "".join(f"%{ord(c):02X}" for c in k),
    "zero-width space": lambda k: "\u200b".join(k),
    "zero-width joiner and BOM": lambda k: k[:10] + "\u200d" + k[10:20] + "\ufeff" + k[20:],
    "soft hyphen": lambda k: k[:15] + "\u00ad" + k[15:],
    "full-width": lambda k: "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in k),
    "body only": lambda k: f"token {k[6:]}",
    "base64": lambda k: base64.b64encode(k.encode()).decode(),
    "base64url": lambda k: base64.urlsafe_b64encode(f"??{k}".encode()).decode().rstrip("="),
    "base64 in Basic auth": lambda k: "Authorization: Basic " + base64.b64encode(f"user:{k}".encode()).decode(),
    "base64 wrapped at 20": lambda k: "\n".join(base64.b64encode(f"key={k}".encode()).decode()[i:i + 20]
                                                for i in range(0, 80, 20)),
}


def test_every_form_of_every_kind_is_found():
    missed = [(form, key[:6]) for form, write in FORMS.items() for key in (SK, PK, GW)
              if keyformat.find_keys(write(key), "bk") != [key]]
    assert missed == []


def test_several_keys_in_order_of_appearance_and_once_each():
    text = f"{PK} then MY_KEY_{SK}, and {PK} again, " + base64.b64encode(GW.encode()).decode()
    assert keyformat.find_keys(text, "bk") == [PK, SK, GW]


def test_a_wrong_checksum_another_prefix_and_short_keys_are_not_keys():
    forged = SK[:-1] + ("A" if SK[-1] != "A" else "B")
    other = keyformat.generate("zz", "sk")
    text = f"{forged} {other} bk_sk_short {SK[:-6]} " + base64.b64encode(forged.encode()).decode()
    assert keyformat.find_keys(text, "bk") == []
    assert keyformat.find_keys(other, "zz") == [other]
    assert keyformat.find_keys("", "bk") == [] and keyformat.find_keys(None, "bk") == []


def test_ordinary_text_has_no_false_positives():
    """The repository's own docs, code and tests: prose, hashes, base64, long identifiers. The
    only keys found are the examples written out literally (docs/keys.md's format examples)."""
    files = [p for pattern in ("docs/*.md", "README.md", "bot/**/*.py", "tests/**/*.py", "templates/**/*")
             for p in ROOT.glob(pattern) if p.is_file()]
    assert len(files) > 50
    found = {}
    for path in files:
        text = path.read_text(errors="replace")
        beyond_literal = set(keyformat.find_keys(text, "bk")) - set(keyformat.find_candidates(text, "bk"))
        if beyond_literal:
            found[str(path.relative_to(ROOT))] = beyond_literal
    assert found == {}


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=2000))
def test_random_text_has_no_false_positives(text):
    assert keyformat.find_keys(text, "bk") == []


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=40, max_size=600))
def test_random_base64_has_no_false_positives(blob):
    assert keyformat.find_keys(base64.b64encode(blob).decode(), "bk") == []


def test_a_key_inside_random_surroundings_is_found():
    for surrounding in ("", "x", "_", "é", "\u200b", "&nbsp;", "9"):
        assert keyformat.find_keys(f"{surrounding}{SK}{surrounding}", "bk") == [SK], repr(surrounding)
