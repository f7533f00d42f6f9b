"""The issue-form template → schema, and the body parser, on bodies shaped like GitHub's."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.config import Policy, load_policy
from bot.github.client import GitHubUnavailable
from bot.rules import forms
from bot.rules.forms import (
    INTERNAL_PROBLEM,
    FormTemplateError,
    bundled_schema,
    load_form_schema,
    parse_form_template,
    parse_issue_body,
    render_issue_body,
    split_list,
)
from tests.conftest import INSTALLATION_ID, REPO

POLICY = load_policy()
SCHEMA = bundled_schema()
TERMS = list(SCHEMA.field("terms").options)

# What GitHub sends for the bundled form filled in on the web: CRLF, `_No response_`, `[X]`.
REAL_BODY = (
    "### App name\r\n\r\nFree AI Chat\r\n\r\n"
    "### What does your app do?\r\n\r\nA chat front-end for students.\r\nOur server calls the API; "
    "browsers call it for streaming.\r\n\r\n"
    "### Homepage URL\r\n\r\nhttps://freeaichat.com\r\n\r\n"
    "### Domains\r\n\r\nfreeaichat.com\r\n*.freeaichat.com\r\n\r\n"
    "### Referrer / app id\r\n\r\nfreeaichat\r\n\r\n"
    "### Contact e-mail\r\n\r\ndev@freeaichat.com\r\n\r\n"
    "### Requested tier\r\n\r\nseed\r\n\r\n"
    "### Expected traffic\r\n\r\nUnder 1,000 requests a day\r\n\r\n"
    "### Source repository\r\n\r\n_No response_\r\n\r\n"
    "### Terms\r\n\r\n- [X] I agree to the API's terms of use.\r\n"
    "- [X] I will keep secret keys out of public places (repositories, client-side code, issues)."
)

GOOD_ANSWERS = {
    "app-name": "Free AI Chat",
    "description": "A chat front-end for students. Our server calls the API.",
    "homepage": "https://freeaichat.com",
    "domains": "freeaichat.com\n*.freeaichat.com",
    "referrer": "freeaichat",
    "contact": "dev@freeaichat.com",
    "tier": "seed",
    "traffic": "Under 1,000 requests a day",
    "terms": TERMS,
}

# A form with every field type, for the parser's own tests.
ALL_TYPES_TEMPLATE = """
name: Everything
description: every field type
labels: [special-access, extra]
body:
  - type: markdown
    attributes: {value: "Hello"}
  - type: input
    id: app-name
    attributes: {label: Name}
    validations: {required: true}
  - type: textarea
    id: description
    attributes: {label: Description}
  - type: textarea
    id: logs
    attributes: {label: Logs, render: shell}
  - type: dropdown
    id: tier
    attributes: {label: Tier, options: [seed, flower, nectar]}
  - type: dropdown
    id: platforms
    attributes:
      label: Platforms
      multiple: true
      options: [Web, "iOS, iPadOS", Android]
  - type: checkboxes
    id: extras
    attributes:
      label: Extras
      options:
        - label: Newsletter
        - label: Beta features
  - type: checkboxes
    id: terms
    attributes:
      label: Terms
      options:
        - label: I agree
          required: true
        - label: Optional thing
"""
ALL_TYPES = parse_form_template(ALL_TYPES_TEMPLATE, source="test")


def body(answers: dict | None = None, *, schema=SCHEMA, newline: str = "\r\n") -> str:
    """A body as GitHub renders it for `answers` (field id → value), default: a good request."""
    return render_issue_body(schema, GOOD_ANSWERS if answers is None else answers, newline=newline)


def parse(text: str | None, schema=SCHEMA, policy: Policy = POLICY):
    return parse_issue_body(text, schema, policy)


# ---------------------------------------------------------------------------------------------
# the bundled form and the schema
# ---------------------------------------------------------------------------------------------


def test_bundled_form_ids_match_the_default_policy_roles():
    ids = {f.id for f in SCHEMA.fields}
    assert set(POLICY.form.roles.values()) <= ids
    for role in POLICY.form.required_roles:
        assert SCHEMA.field_for_role(role, POLICY) is not None, role


def test_bundled_form_lists_the_policy_tiers_and_applies_the_trigger_label():
    assert list(SCHEMA.field("tier").options) == POLICY.tier_names == ["seed", "flower", "nectar"]
    assert POLICY.labels.trigger in SCHEMA.labels
    assert SCHEMA.field("terms").required_options == SCHEMA.field("terms").options
    assert any("secret keys" in option for option in SCHEMA.field("terms").options)


def test_template_parses_every_field_type():
    assert [f.type for f in ALL_TYPES.fields] == ["input", "textarea", "textarea", "dropdown", "dropdown",
                                                  "checkboxes", "checkboxes"]
    assert ALL_TYPES.field("logs").render == "shell"
    assert ALL_TYPES.field("platforms").multiple
    assert ALL_TYPES.field("terms").required_options == ("I agree",)
    assert ALL_TYPES.labels == ("special-access", "extra")


@pytest.mark.parametrize("text, error", [
    ("just text", "body"),
    ("body: [{type: input, attributes: {}}]", "label"),
    ("body: [{type: slider, attributes: {label: X}}]", "unknown type"),
    ("body: [{type: input, id: a, attributes: {label: A}}, {type: input, id: a, attributes: {label: B}}]", "unique"),
    ("body: [{type: dropdown, id: a, attributes: {label: A}}]", "options"),
    ("body: [{type: markdown, attributes: {value: hi}}]", "no input fields"),
    ("body: [unclosed", "YAML"),
])
def test_template_errors_name_the_problem(text, error):
    with pytest.raises(FormTemplateError, match=error):
        parse_form_template(text)


# ---------------------------------------------------------------------------------------------
# loading the template from the repository
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def gh(github, fake_github):
    return github.for_installation(INSTALLATION_ID)


def test_template_is_read_from_the_repo_and_cached(gh, fake_github):
    path = POLICY.form.template_path
    fake_github.files[(REPO, path)] = ALL_TYPES_TEMPLATE
    now = [1000.0]
    first = load_form_schema(gh, REPO, POLICY, clock=lambda: now[0])
    assert first.source == f"{REPO}:{path}" and first.field("platforms") is not None
    now[0] += 10
    assert load_form_schema(gh, REPO, POLICY, clock=lambda: now[0]) is first
    assert fake_github.count("GET", r"/contents/") == 1
    now[0] += forms.SCHEMA_TTL_SECONDS
    fake_github.files[(REPO, path)] = ALL_TYPES_TEMPLATE.replace("label: Name", "label: App title")
    refreshed = load_form_schema(gh, REPO, POLICY, clock=lambda: now[0])
    assert refreshed.field("app-name").label == "App title"
    assert fake_github.count("GET", r"/contents/") == 2


def test_missing_template_falls_back_to_the_bundled_form(gh, fake_github):
    assert load_form_schema(gh, REPO, POLICY).source == "bundled"
    assert load_form_schema(None, REPO, POLICY).source == "bundled"


def test_invalid_template_in_the_repo_falls_back_to_the_bundled_form(gh, fake_github):
    fake_github.files[(REPO, POLICY.form.template_path)] = "body: [{type: slider}]"
    assert load_form_schema(gh, REPO, POLICY).source == "bundled"


def test_forbidden_template_falls_back_but_an_outage_is_retried_later(gh, fake_github, sleeps):
    fake_github.fail("GET", r"/contents/", 403, body={"message": "Resource not accessible by integration"})
    assert load_form_schema(gh, REPO, POLICY).source == "bundled"
    forms.clear_schema_cache()
    fake_github.fail("GET", r"/contents/", 502, times=10)
    with pytest.raises(GitHubUnavailable):
        load_form_schema(gh, REPO, POLICY)


# ---------------------------------------------------------------------------------------------
# the parser: what GitHub really sends
# ---------------------------------------------------------------------------------------------


def test_real_crlf_body_gives_typed_values_per_role():
    parsed = parse(REAL_BODY)
    assert parsed.from_form and parsed.problems == [] and parsed.missing == []
    assert parsed.values == {
        "app_name": "Free AI Chat",
        "description": "A chat front-end for students.\nOur server calls the API; browsers call it for streaming.",
        "homepage": "https://freeaichat.com",
        "domains": ["freeaichat.com", "*.freeaichat.com"],
        "referrer": "freeaichat",
        "contact": "dev@freeaichat.com",
        "tier": "seed",
        "traffic": "Under 1,000 requests a day",
        "repository": "",
        "terms": True,
    }


def test_lf_body_parses_like_crlf():
    assert parse(REAL_BODY.replace("\r\n", "\n")).values == parse(REAL_BODY).values


def test_no_response_is_empty():
    parsed = parse(body({**GOOD_ANSWERS, "homepage": "", "referrer": "", "domains": ""}))
    assert "_No response_" in body({**GOOD_ANSWERS, "homepage": ""})
    assert parsed.values["homepage"] == "" and parsed.values["referrer"] == "" and parsed.values["domains"] == []


def test_empty_code_fences_are_empty():
    text = body(schema=ALL_TYPES, answers={"app-name": "X"}).replace(
        "### Description\r\n\r\n_No response_", "### Description\r\n\r\n```\r\n\r\n```").replace(
        "### Logs\r\n\r\n_No response_", "### Logs\r\n\r\n```shell\r\n```")
    parsed = parse(text, ALL_TYPES)
    assert parsed.fields["description"] == "" and parsed.fields["logs"] == ""


def test_render_fence_is_unwrapped_and_its_content_kept():
    logs = "$ curl https://api.example.com\n### not a heading\n```inner```"
    parsed = parse(body({"app-name": "X", "logs": logs}, schema=ALL_TYPES), ALL_TYPES)
    assert "```shell\r\n$ curl" in body({"app-name": "X", "logs": logs}, schema=ALL_TYPES)
    assert parsed.fields["logs"] == logs


def test_multi_select_dropdown_gives_a_list_and_keeps_options_with_commas():
    parsed = parse(body({"app-name": "X", "platforms": ["Web", "iOS, iPadOS"]}, schema=ALL_TYPES), ALL_TYPES)
    assert parsed.fields["platforms"] == ["Web", "iOS, iPadOS"]
    assert parse(body({"app-name": "X"}, schema=ALL_TYPES), ALL_TYPES).fields["platforms"] == []


@pytest.mark.parametrize("mark, ticked", [("X", True), ("x", True), (" ", False)])
def test_checkbox_marks(mark, ticked):
    text = REAL_BODY.replace("- [X] I agree", f"- [{mark}] I agree")
    parsed = parse(text)
    assert parsed.values["terms"] is ticked
    assert (parsed.unticked["terms"] == []) is ticked


def test_checkboxes_every_option_is_read():
    answers = {"app-name": "X", "extras": ["Beta features"], "terms": ["I agree"]}
    parsed = parse(body(answers, schema=ALL_TYPES), ALL_TYPES)
    assert parsed.fields["extras"] == ["Beta features"] and parsed.fields["terms"] == ["I agree"]
    assert parsed.unticked["terms"] == []  # only the required box must be ticked


def test_trailing_spaces_after_a_label_and_label_case_do_not_matter():
    text = REAL_BODY.replace("### App name\r\n", "### App name   \r\n")
    text = text.replace("### Domains\r\n", "###  domains \t\r\n")
    parsed = parse(text)
    assert parsed.values["app_name"] == "Free AI Chat"
    assert parsed.values["domains"] == ["freeaichat.com", "*.freeaichat.com"]


def test_unknown_heading_typed_inside_a_textarea_is_text():
    description = "Our app.\n\n### Features\n\n- chat\n- search"
    parsed = parse(body({**GOOD_ANSWERS, "description": description}))
    assert parsed.values["description"] == description
    assert parsed.values["homepage"] == "https://freeaichat.com"


def test_later_field_heading_typed_inside_a_textarea_is_text():
    description = "We use two domains:\n### Domains\nsee below\n```\n### Terms\n```"
    parsed = parse(body({**GOOD_ANSWERS, "description": description}))
    assert parsed.values["description"] == description
    assert parsed.values["domains"] == ["freeaichat.com", "*.freeaichat.com"]
    assert parsed.values["terms"] is True


def test_own_label_typed_inside_its_textarea_is_text():
    domains = "### Domains\nfreeaichat.com"
    parsed = parse(body({**GOOD_ANSWERS, "domains": domains}))
    assert parsed.fields["domains"] == domains
    assert parsed.values["domains"] == ["freeaichat.com"]  # `#` lines are comments in the list
    assert parsed.values["referrer"] == "freeaichat"


def test_lists_fences_and_emoji_inside_a_textarea_are_kept():
    description = "🐝 Buzz 👩‍💻\n\n1. one\n2. two\n\n```python\nprint('### Terms')\n```\n> quote"
    parsed = parse(body({**GOOD_ANSWERS, "description": description}))
    assert parsed.values["description"] == description
    assert parsed.values["terms"] is True


def test_fields_missing_because_the_template_changed():
    old_body = REAL_BODY.split("### Contact e-mail")[0] + REAL_BODY[REAL_BODY.index("### Requested tier"):]
    parsed = parse(old_body)
    assert parsed.from_form and "contact" in parsed.missing and "contact" not in parsed.values
    assert any('"Contact e-mail" field is missing' in p for p in parsed.problems)
    assert parsed.values["tier"] == "seed"


def test_optional_field_missing_is_not_a_problem():
    without_traffic = REAL_BODY.replace("### Expected traffic\r\n\r\nUnder 1,000 requests a day\r\n\r\n", "")
    parsed = parse(without_traffic)
    assert parsed.missing == ["traffic"] and parsed.problems == []


def test_free_text_issue_is_not_from_the_form():
    parsed = parse("Hi! Please give me access for my app freeaichat.com, thanks.\r\n\r\n### Domains\r\n\r\nx.com")
    assert not parsed.from_form
    assert parsed.problems[0] == "This issue was not made from the Special access request form."


@pytest.mark.parametrize("text", [None, "", "   ", "_No response_", "###", "### \r\n"])
def test_empty_bodies(text):
    parsed = parse(text)
    assert not parsed.from_form and parsed.problems and INTERNAL_PROBLEM not in parsed.problems


def test_a_form_whose_labels_changed_is_parsed_by_its_own_labels():
    template = yaml.safe_load((forms.issue_form_path()).read_text())
    relabel = {"app-name": "Application name", "description": "Describe the application",
               "contact": "Maintainer e-mail", "tier": "Access level"}
    for item in template["body"]:
        if item.get("id") in relabel:
            item["attributes"]["label"] = relabel[item["id"]]
        if item.get("id") == "contact":
            item["id"] = "email"  # the platform kept its own id: the policy maps the role to it
    custom = parse_form_template(yaml.safe_dump(template), source="custom")
    policy = POLICY.model_copy(update={"form": POLICY.form.model_copy(
        update={"roles": {**POLICY.form.roles, "contact": "email"}})})
    answers = {**GOOD_ANSWERS, "email": "dev@freeaichat.com"}
    parsed = parse(body(answers, schema=custom), custom, policy)
    assert "### Application name" in body(answers, schema=custom)
    assert parsed.values["app_name"] == "Free AI Chat" and parsed.values["contact"] == "dev@freeaichat.com"
    assert parsed.values["tier"] == "seed" and parsed.problems == []
    # An issue filed with the old labels: headings whose words hold a field's id ("App name" →
    # app-name, "Contact e-mail" → email, "Requested tier" → tier) are matched; the others are
    # reported missing until the policy lists the old label as an alias.
    stale = parse(REAL_BODY, custom, policy)
    assert stale.from_form and stale.missing == ["description"]
    assert stale.values["contact"] == "dev@freeaichat.com" and stale.values["tier"] == "seed"
    assert stale.problems == ['The "Describe the application" field is missing (the form may have changed since '
                              'this issue was opened): add a line "### Describe the application" followed by your '
                              'answer.']
    aliased = policy.model_copy(update={"form": policy.form.model_copy(
        update={"aliases": {"description": ["What does your app do?"]}})})
    old = parse(REAL_BODY, custom, aliased)
    assert old.missing == [] and old.problems == [] and old.values["app_name"] == "Free AI Chat"
    assert old.values["description"].startswith("A chat front-end for students.")


def test_a_role_whose_field_the_template_lacks_is_said_once_in_the_log_not_in_the_report(caplog):
    template = ALL_TYPES  # no contact field
    forms._warned_missing.clear()
    with caplog.at_level("WARNING", logger="beekeeper.forms"):
        for _ in range(2):
            parsed = parse(body({"app-name": "X", "terms": ["I agree"]}, schema=template), template)
            assert not any("contact" in p for p in parsed.problems)
    assert [r.getMessage() for r in caplog.records].count(
        "form special-access.yml (test) has no field 'contact' for the required role 'contact': run "
        "`beekeeper doctor` or `beekeeper policy check`") == 1


def test_split_list_accepts_bullets_commas_and_spaces():
    assert split_list("- a.com\n* b.com, c.com\n1. d.com e.com\n# comment\n`f.com`\n\n") == [
        "a.com", "b.com", "c.com", "d.com", "e.com", "f.com"]


def test_hostile_body_parses_quickly_and_keeps_the_text():
    huge = "A" * 1_000_000
    text = body({**GOOD_ANSWERS, "description": huge + "\x00\x1b[31m\u202e"})
    parsed = parse(text)  # how fast: benchmarks/bench_forms.py ("parse 1 MB body", with its budget)
    assert parsed.values["description"].startswith("A" * 1000) and parsed.values["tier"] == "seed"


def test_many_heading_lines_do_not_blow_up():
    text = REAL_BODY.replace("A chat front-end", "### App name\n### Terms\n" * 20_000)
    parsed = parse(text)  # how fast: benchmarks/bench_forms.py ("parse 40k heading lines", with its budget)
    assert parsed.values["tier"] == "seed"


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

_LABEL_LINES = [f"### {f.label}" for f in SCHEMA.fields]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=60), st.sampled_from(_LABEL_LINES + [
    "_No response_", "```", "```shell", "~~~", "- [X] I agree to the API's terms of use.", "- [ ] x", "",
    "### ", "###", "\r", "\r\n"])), max_size=40))
def test_parser_never_raises(lines):
    for separator in ("\n", "\r\n", ""):
        parsed = parse(separator.join(lines))
        assert INTERNAL_PROBLEM not in parsed.problems
        assert isinstance(parsed.values, dict) and isinstance(parsed.problems, list)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parser_never_raises_on_any_text(text):
    assert INTERNAL_PROBLEM not in parse(text).problems
    assert INTERNAL_PROBLEM not in parse(text, ALL_TYPES).problems


def _clean_line(text: str) -> str:
    return " ".join(text.split())


_heading_labels = {forms.normalize_label(f.label) for f in ALL_TYPES.fields}
_single_line = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40).map(
    _clean_line).filter(lambda s: s != "_No response_")
_textarea_line = st.one_of(
    _single_line, st.sampled_from(["### Notes", "```", "```python", "~~~", "- item", "1. step", "🐝", "> quote",
                                    "### Logs", "### Name"]))


def _textarea(lines: list[str]) -> str:
    return "\n".join(lines).strip()


def _round_trippable(text: str) -> bool:
    if text in ("", "_No response_"):
        return text == ""
    inside, fenced = forms._strip_fence(text)
    return not (fenced and not inside.strip())


answers_strategy = st.fixed_dictionaries({
    "app-name": _single_line,
    "description": st.lists(_textarea_line, max_size=8).map(_textarea).filter(_round_trippable),
    # A bare ``` line inside a render: field ends GitHub's own fence early: not round-trippable.
    "logs": st.lists(_textarea_line.filter(lambda line: line != "```"), max_size=5).map(_textarea).filter(
        lambda t: t.strip() not in ("", "_No response_")) | st.just(""),
    "tier": st.sampled_from(["", "seed", "flower", "nectar"]),
    "platforms": st.lists(st.sampled_from(["Web", "iOS, iPadOS", "Android"]), unique=True).map(
        lambda chosen: [o for o in ["Web", "iOS, iPadOS", "Android"] if o in chosen]),
    "extras": st.lists(st.sampled_from(["Newsletter", "Beta features"]), unique=True).map(
        lambda chosen: [o for o in ["Newsletter", "Beta features"] if o in chosen]),
    "terms": st.lists(st.sampled_from(["I agree", "Optional thing"]), unique=True).map(
        lambda chosen: [o for o in ["I agree", "Optional thing"] if o in chosen]),
})


@settings(max_examples=300, deadline=None)
@given(answers_strategy, st.sampled_from(["\r\n", "\n"]))
def test_rendering_parsed_answers_back_gives_the_same_values(answers, newline):
    parsed = parse(render_issue_body(ALL_TYPES, answers, newline=newline), ALL_TYPES)
    assert parsed.fields == answers
    again = parse(render_issue_body(ALL_TYPES, parsed.fields, newline=newline), ALL_TYPES)
    assert again.fields == parsed.fields and again.values == parsed.values


@settings(max_examples=100, deadline=None)
@given(st.fixed_dictionaries({
    "app-name": _single_line, "description": st.lists(_textarea_line, max_size=6).map(_textarea).filter(
        _round_trippable), "tier": st.sampled_from(["seed", "flower", "nectar"]),
    "domains": st.lists(st.from_regex(r"[a-z]{1,10}\.(com|org|io)", fullmatch=True), max_size=4).map("\n".join),
}))
def test_bundled_form_round_trip_by_role(answers):
    answers = {**GOOD_ANSWERS, **answers}
    parsed = parse(render_issue_body(SCHEMA, answers))
    assert parsed.values["app_name"] == answers["app-name"]
    assert parsed.values["description"] == answers["description"]
    assert parsed.values["domains"] == answers["domains"].split()
    assert parsed.values["tier"] == answers["tier"] and parsed.values["terms"] is True


def test_headings_in_another_order_are_read_field_by_field():
    sections = body().removeprefix("### ").split("\r\n\r\n### ")
    assert sections[5].startswith("Contact e-mail") and sections[1].startswith("What does your app do?")
    moved = [sections[5], sections[1], sections[0], *sections[2:5], *sections[6:]]
    parsed = parse("\r\n\r\n".join("### " + section for section in moved))
    assert parsed.problems == [] and parsed.missing == []
    assert parsed.values == parse(body()).values


def test_id_like_heading_matching_is_used_only_when_unambiguous():
    from bot.rules.forms import recognised_fields

    # "App name and description" holds the words of two ids that do not contain each other.
    text = body().replace("### App name", "### App name and description").replace(
        "### What does your app do?", "### Tell us more")
    assert "app-name" not in recognised_fields(text, SCHEMA)
    # "Requested access tier" holds only the id `tier`: matched (the field's label is "Requested tier").
    assert SCHEMA.field("tier").label == "Requested tier"
    renamed = body().replace("### Requested tier", "### Requested access tier")
    assert parse(renamed).values["tier"] == "seed"
