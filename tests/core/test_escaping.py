"""Applicant text echoed by the bot stays inert: no pings, no HTML, no markdown, no images, cut.

Comments are rendered with a CommonMark renderer (markdown-it-py, tables and strikethrough on,
as on GitHub) to check what a reader would really see, not just the markdown source.
"""

from __future__ import annotations

import html
import re
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from bot.core import comments
from bot.core.comments import escape_user_text
from bot.intake.router import Event
from bot.requests.review import review_issue
from tests.conftest import INSTALLATION_ID, REPO
from tests.rules.test_forms import GOOD_ANSWERS, body

MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
ALICE = {"login": "alice", "id": 1001, "type": "User"}
WORD_JOINER = "\u2060"


def rendered(markdown: str) -> str:
    return MD.render(markdown)


def visible_text(markdown: str) -> str:
    """What a reader sees: the rendered HTML without tags, entities decoded, joiners dropped."""
    text = re.sub(r"<[^>]+>", "", rendered(markdown))
    return html.unescape(text).replace(WORD_JOINER, "").strip()


def only_paragraphs(markdown: str) -> bool:
    tags = set(re.findall(r"<(/?[a-z0-9]+)", rendered(markdown)))
    return tags <= {"p", "/p", "br"}


# ---------------------------------------------------------------------------------------------
# escape_user_text
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "@octocat please look", "cc @acme/security-team", "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>", "![tracker](https://evil.example/pixel.png)", "[click](javascript:alert(1))",
    "**bold** _it_ ~~gone~~ `code`", "# Heading", "> quote", "- item", "1. item", "| a | b |",
    "<!-- beekeeper:status -->", "&lt;b&gt; &#64;octocat", "$\\color{red}{HUGE}$", "x = y", "a < b > c & d",
    "\\*not bold\\*", "<https://evil.example>", "#123 owner/repo#4",
])
def test_single_line_text_shows_exactly_what_was_typed(text):
    escaped = escape_user_text(text)
    assert only_paragraphs(escaped), rendered(escaped)
    assert visible_text(escaped) == text


def test_mentions_do_not_ping():
    escaped = escape_user_text("hi @octocat and @acme/team")
    assert "@octocat" not in escaped and f"@{WORD_JOINER}octocat" in escaped
    assert f"@{WORD_JOINER}acme/team" in escaped


def test_control_bidi_and_invisible_characters_are_removed():
    text = "ok\x00\x07\x1b[31m\x7f\x85\u200b\u202egnp.exe\u2066\ufeff\U000e0041\u00ad!"
    escaped = escape_user_text(text)
    assert visible_text(escaped) == "ok[31mgnp.exe!"
    for char in "\x00\x07\x1b\x7f\u200b\u202e\u2066\ufeff\U000e0041\u00ad":
        assert char not in escaped


def test_long_text_is_cut_with_an_ellipsis():
    escaped = escape_user_text("A" * 1_000_000, 200)
    assert escaped == "A" * 200 + "…"
    assert escape_user_text("short", 200) == "short"


def test_multiline_keeps_lines_but_no_blocks():
    text = "Title\n===\n\n    indented?\n- item\n```\ncode\n```\n<b>bold</b>"
    escaped = escape_user_text(text, 2000, multiline=True)
    assert "<b>" not in rendered(escaped) and "<h1>" not in rendered(escaped) and "<ul>" not in rendered(escaped)
    assert "<pre>" not in rendered(escaped.replace("    ", ""))  # only indentation could make code


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120))
def test_any_single_line_text_renders_as_plain_text(text):
    escaped = escape_user_text(text, 500)
    assert only_paragraphs(escaped), (text, rendered(escaped))
    assert "@" not in escaped.replace(f"@{WORD_JOINER}", "")
    shown = visible_text(escaped)
    expected_chars = [c for c in " ".join(comments._CONTROL.sub("", text).split()) if c != WORD_JOINER]
    assert shown == unicodedata.normalize("NFC", "".join(expected_chars)).strip()


# ---------------------------------------------------------------------------------------------
# a hostile request, end to end through the review
# ---------------------------------------------------------------------------------------------

HOSTILE_NAME = "@octocat <img src=x onerror=alert(1)> ![p](https://evil.example/p.png) \x1b[2J\u202e\x00"
HOSTILE = {
    **GOOD_ANSWERS,
    "app-name": HOSTILE_NAME,
    "description": "@everyone look <script>alert(1)</script>\n### Not a field\n" + "A" * 1_000_000 + "\x00",
    "domains": "<b>evil</b>.com\n@admin.com\n" + "x" * 300 + ".com\n[a](http://b.c)",
    "referrer": "<script>",
    "homepage": "javascript:alert(document.cookie)",
    "contact": "victim@example.org",
}


@pytest.fixture
def hostile_comment(runtime, session, fake_github):
    fake_github.add_user("alice", ALICE["id"],
                         created_at=(datetime.now(UTC) - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    ctx = runtime.make_context(session, Event(name="issues", action="opened", payload={}, delivery_id="d",
                                              installation_id=INSTALLATION_ID))
    issue = fake_github.add_issue(REPO, 1, body=body(HOSTILE), user=dict(ALICE), labels=["special-access"])
    request = review_issue(ctx, REPO, issue, reason="opened")
    [comment] = fake_github.bot_comments(REPO, 1)
    return request, comment["body"]


def test_hostile_body_pings_nobody(hostile_comment):
    _, text = hostile_comment
    assert not re.search(r"@(?!\u2060)\w", text)


def test_hostile_body_has_no_html_or_images(hostile_comment):
    _, text = hostile_comment
    html_out = rendered(text)
    assert "<img" not in html_out and "<script" not in html_out and "<b>" not in html_out
    assert 'href="javascript' not in html_out and "evil.example/p.png" not in re.findall(r'src="([^"]*)"', html_out)
    # only our own markup: headings, lists, emphasis, the details block, the footer
    assert set(re.findall(r"<([a-z0-9]+)", html_out)) <= {"h3", "p", "ul", "li", "strong", "em", "sub", "br",
                                                          "details", "summary"}


def test_hostile_body_is_cut_and_cleaned(hostile_comment):
    request, text = hostile_comment
    assert len(text) < 10_000
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", text)
    assert text.count(comments.STATUS_MARKER) == 1 and text.startswith(comments.STATUS_MARKER)
    assert len(request.values["description"]) == 8000  # stored, but capped
    assert "\x00" not in request.app_name  # PostgreSQL refuses NUL in text columns


def test_hostile_body_never_shows_the_contact(hostile_comment):
    request, text = hostile_comment
    assert request.contact == "victim@example.org"
    assert "victim" not in text and "example.org" not in text.replace("\\", "")
