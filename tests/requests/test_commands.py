"""Reading slash-commands out of comment bodies."""

from __future__ import annotations

import pytest

from bot.requests.commands import COMMANDS, MAX_COMMANDS_PER_COMMENT, parse_commands


def names(body: str) -> list[str]:
    return [c.name for c in parse_commands(body)]


def test_a_single_command_with_arguments():
    [cmd] = parse_commands("/approve flower")
    assert (cmd.name, cmd.args, cmd.line) == ("approve", ("flower",), 1)
    assert cmd.words == ["flower"] and cmd.flags == set()


def test_flags_are_separate_from_words():
    [cmd] = parse_commands("/approve nectar --force")
    assert cmd.words == ["nectar"] and cmd.flags == {"--force"}


def test_names_are_case_insensitive_and_leading_spaces_allowed():
    assert names("  /APPROVE\n   /Needs-Info please add a domain") == ["approve", "needs-info"]


def test_several_commands_run_in_order_with_text_between():
    body = "Thanks for applying!\n\n/needs-info Please add your domain.\nAnd a homepage.\n/recheck\n\nCheers"
    cmds = parse_commands(body)
    assert [c.name for c in cmds] == ["needs-info", "recheck"]
    assert cmds[0].text == "Please add your domain.\nAnd a homepage."
    assert cmds[1].text == "Cheers"  # trailing text belongs to the last command's text …
    assert cmds[1].args == ()  # … but never to its arguments


def test_trailing_text_on_the_line_is_the_reason():
    [cmd] = parse_commands("/reject The app scrapes personal data.   ")
    assert cmd.text == "The app scrapes personal data."
    assert cmd.args[:2] == ("The", "app")


def test_a_slash_in_the_middle_of_a_line_is_not_a_command():
    assert names("Could someone /approve this?") == []
    assert names("see https://example.com/approve") == []


def test_paths_and_double_slashes_are_not_commands():
    assert names("/usr/bin/python\n//approve\n/ approve") == []


@pytest.mark.parametrize("fence", ["```", "~~~", "````"])
def test_fenced_code_is_ignored(fence):
    body = f"Example:\n{fence}\n/approve flower\n{fence}\n/help"
    assert names(body) == ["help"]


def test_an_unclosed_fence_hides_the_rest():
    assert names("```\n/approve\n/help") == []


def test_a_shorter_fence_does_not_close_a_longer_one():
    assert names("````\n```\n/approve\n````\n/help") == ["help"]


def test_indented_code_is_ignored_but_a_paragraph_continuation_is_not_code():
    assert names("Text\n\n    /approve flower\n") == []
    assert names("\t/approve") == []
    assert names("/needs-info first line\n    still the message") == ["needs-info"]


def test_block_quotes_are_ignored():
    assert names("> /approve flower\n>/approve\n   > /reject spam") == []


def test_quoted_email_replies_are_ignored():
    body = "I will fix it\n\nOn Mon, Maria wrote:\n> /needs-info add your domain\n"
    assert names(body) == []


def test_html_comments_are_ignored_even_across_lines():
    assert names("<!-- /approve -->\n<!--\n/approve flower\n-->\n/help") == ["help"]
    assert names("<!-- never closed\n/approve") == []


def test_line_numbers_survive_removed_comments():
    [cmd] = parse_commands("<!--\nx\n-->\n/help")
    assert cmd.line == 4


@pytest.mark.parametrize("slash", ["\u2215", "\uff0f", "\u2044", "\u29f8", "\u2f03"])
def test_look_alike_slashes_are_not_commands(slash):
    assert names(f"{slash}approve flower") == []


def test_look_alike_letters_are_not_commands():
    assert names("/\u0430pprove") == []  # Cyrillic а


def test_crlf_bodies():
    assert names("Thanks\r\n/approve seed\r\n") == ["approve"]


def test_unknown_names_are_still_parsed_so_they_can_be_answered():
    assert names("/lgtm") == ["lgtm"]


def test_too_many_commands_are_cut():
    body = "\n".join("/help" for _ in range(MAX_COMMANDS_PER_COMMENT + 5))
    assert len(parse_commands(body)) == MAX_COMMANDS_PER_COMMENT


def test_empty_and_none_bodies():
    assert parse_commands("") == [] and parse_commands(None) == []


def test_the_built_in_commands_are_registered():
    assert {"approve", "reject", "needs-info", "tier", "revoke", "recheck", "withdraw", "help"} <= set(COMMANDS)
    for spec in COMMANDS.values():
        assert spec.usage.startswith("/") and spec.help and spec.roles


# ---------------------------------------------------------------------------------------------
# What GitHub shows decides (a CommonMark parse, not line patterns): attacker cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    "> quoted\n/approve",  # lazy continuation: GitHub shows the line inside the quote
    "> quoted\n/approve flower\n/help",
    "On Mon, Maria wrote:\n> /reject no\n/approve",
    ">> nested\n/approve",
    "> > nested with spaces\n/approve",
    "> a\n>\n> b\n/approve",
    ">     code in a quote\n/approve",  # indented code in a quote does not continue lazily …
])
def test_lazy_continuation_lines_of_a_quote_are_not_commands(body):
    if body.startswith(">     code"):
        assert names(body) == ["approve"]  # … so this one is a paragraph after the quote
    else:
        assert names(body) == []


def test_a_blank_line_ends_the_quote_and_the_command_after_it_runs():
    assert names("> quoted\n\n/approve") == ["approve"]
    assert names("> quoted\n\n/approve flower")[0] == "approve"


@pytest.mark.parametrize("body", [
    "- item\n/approve",  # lazy continuation of a list item
    "1. item\n/approve",
    "- /approve",
    "* /approve",
    "1) /approve",
    "- item\n\n  /approve",  # a paragraph of the list item
    "- [ ] /approve",
])
def test_lines_in_lists_are_not_commands(body):
    assert names(body) == []


@pytest.mark.parametrize("body", [
    "/approve\n===",
    "/approve\n---",
    "Text\n/approve\n---",
    "# /approve",
    "### /approve flower",
])
def test_headings_are_not_commands_setext_underlines_included(body):
    assert names(body) == []


def test_a_thematic_break_after_a_blank_line_leaves_the_command():
    assert names("/approve\n\n---") == ["approve"]


@pytest.mark.parametrize("body", [
    "```\n/approve\n```",
    "~~~ text\n/approve\n~~~",
    "  ```\n  /approve\n  ```",
    "````\n```\n/approve\n```\n",  # the inner fence does not close the outer one: still code
    "Text\n```\n/approve\n```",  # a fence interrupts a paragraph
    "\n    /approve",
    "    /approve",
    "Para\n\n        /approve",
])
def test_fenced_and_indented_code_never_hold_commands(body):
    assert names(body) == []


@pytest.mark.parametrize("body", [
    "<!-- /approve -->",
    "<!--\n/approve\n-->",
    "<!-- x -->/approve",  # the HTML block runs to the end of its line
    "Text <!--\n/approve\n-->",  # inline HTML comment across lines
    "<details>\n/approve\n</details>",
    "<details><summary>Old</summary>\n\n/approve\n\n</details>",  # a paragraph inside an HTML element
    "<details>\n\n/approve",  # an unclosed element hides the rest
    "<div>\n\n/approve\n\n</div>",
    "<blockquote>\n\n/approve\n\n</blockquote>",
    "Text <details>\n\n/approve\n\n</details>",  # an element opened inline
    "Text <span title=\"\n/approve\">x</span>",  # inside an attribute
    "<pre>\n/approve\n</pre>",
])
def test_html_comments_and_elements_hide_commands(body):
    assert names(body) == []


def test_closed_html_elements_do_not_hide_what_follows():
    assert names("<details><summary>Log</summary>\n\nold text\n\n</details>\n\n/approve") == ["approve"]
    assert names("Thanks <b>a lot</b>\n/approve") == ["approve"]
    assert names("<br>\n\n/approve") == ["approve"]


@pytest.mark.parametrize("body", [
    "`code\n/approve flower`",  # a code span across lines
    "``x\n/approve flower``",
    "*emphasis\n/approve flower*",
    "~~struck out\n/approve flower~~",
    "[a link\n/approve flower](https://example.com)",
    "![alt\n/approve flower](https://example.com/x.png)",
    "Text <span>\n/approve flower</span>",  # inside an element opened inline
])
def test_inline_constructs_spanning_lines_hide_commands(body):
    assert names(body) == []


def test_tables_are_not_paragraphs():
    assert names("| a |\n| --- |\n/approve") == []  # a table row, as GitHub shows it
    assert names("/approve | x\n--- | ---") == []


def test_escapes_and_entities_are_not_commands():
    assert names("\\/approve") == []
    assert names("&#47;approve") == []
    assert names("&sol;approve") == []


def test_tabs_and_unicode_spaces_before_the_slash_are_not_commands():
    assert names("Text\n\t/approve") == []
    assert names("\u00a0/approve") == []
    assert names("Text\n\u3000/approve") == []
    assert names("Text\n    /approve") == []  # four spaces: more than a command's indent


def test_hard_and_soft_line_breaks_both_start_a_line():
    assert names("Looks good.  \n/approve") == ["approve"]
    assert names("Looks good.\\\n/approve") == ["approve"]
    assert names("Looks good.\n/approve") == ["approve"]


def test_a_command_text_stops_at_quotes_and_code_but_keeps_lists():
    [cmd] = parse_commands("/reject Reasons:\n- scraping\n- no domain\n\n> quoted\n```\ncode\n```\nBye")
    assert cmd.text == "Reasons:\n- scraping\n- no domain\n\n\n\n\n\nBye"
    [cmd] = parse_commands("/reject spam <!-- note to self -->")
    assert cmd.text == "spam"


def test_line_numbers_are_the_source_lines():
    cmds = parse_commands("> q\n\n```\n/x\n```\n\nHello\n/approve flower\n\n/help")
    assert [(c.name, c.line) for c in cmds] == [("approve", 8), ("help", 10)]


def test_a_mixed_comment_runs_only_its_visible_commands():
    body = ("Thanks!\n\n> @applicant wrote:\n> /approve\n/approve\n\n<details>\n\n/tier nectar\n\n</details>\n\n"
            "```\n/revoke x\n```\n\n/needs-info Please add your domain.")
    assert names(body) == ["needs-info"]


def test_an_element_closed_inside_a_paragraph_frees_what_follows_it():
    assert names("<details>\n\nold news </details>\n\n/approve") == ["approve"]
    assert names("<details>\n\nold news\n/approve </details>") == []
