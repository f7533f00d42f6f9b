"""Reading slash-commands out of comment bodies."""

from __future__ import annotations

import pytest

from bot.commands import COMMANDS, MAX_COMMANDS_PER_COMMENT, parse_commands


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
