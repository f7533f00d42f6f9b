"""Issue forms: the form template → a field schema; an issue body → typed values per role.

The parser is driven by the template itself (read from the issue's repository, so a platform
may reword labels or use its own form), never by guessing at headings. GitHub renders a form
submission as `### <label>`, a blank line and the value for every field, in template order:

- empty optional fields are `_No response_`; a `render:` textarea is wrapped in a code fence;
- a multi-select dropdown is `a, b`; checkboxes are `- [X] text` / `- [ ] text` (`[x]` after an
  edit in the web editor);
- bodies from the web form use CRLF.

Applicants can type anything inside a textarea, including `###` lines. So headings are not
split on blindly: a heading is a candidate only when its label is a field of the template, and
the fields are the longest run of candidates in template order (a heading typed inside a
textarea can only stand in for a real one, never add a field). Ties are settled by GitHub's
shape; see `_accepted_headings`.

Forms change over time (issue 12): a heading also matches a field by the policy's `aliases`
(older labels), or by holding every word of exactly one field's id; a field the in-order
reading left out (an edited body with its sections moved) starts at its heading's first
occurrence outside a code block. Which policy form an issue belongs to is `select_form`.

`parse_issue_body` never raises on user input: whatever it cannot read becomes a problem.
"""

from __future__ import annotations

import logging
import math
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from bot.core.config import Form, Policy, form_key
from bot.core.errors import RetryLater
from bot.core.form_templates import (  # noqa: F401 - re-exported: the schema is part of this module's interface
    FIELD_TYPES,
    FormField,
    FormSchema,
    FormTemplateError,
    bundled_schema,
    normalize_label,
    parse_form_template,
)
from bot.core.resources import issue_form_path  # noqa: F401 - read as forms.issue_form_path
from bot.github.client import GitHubError, GitHubUnavailable

log = logging.getLogger("beekeeper.forms")

NO_RESPONSE = "_No response_"
SCHEMA_TTL_SECONDS = 300.0
INTERNAL_PROBLEM = "Beekeeper could not read this issue's body; a maintainer has been told in the logs."

# Markdown ATX heading of level 3, as GitHub writes field labels (trailing spaces ignored).
_HEADING = re.compile(r"^ {0,3}###[ \t]+(.+?)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^`\n]*?)[ \t]*$")
_CHECKBOX = re.compile(r"^\s*[-*+]\s+\[([ xX])\]\s?(.*?)\s*$")
_LIST_BULLET = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")


# Per GitHub client (so a test's fresh client never sees another test's form), then per
# (repo, path): (expires at, schema). One GitHubApp lives for the whole process in production.
_schema_cache: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], tuple[float, FormSchema]]] = (
    weakref.WeakKeyDictionary()
)


def clear_schema_cache() -> None:
    _schema_cache.clear()


def load_form_schema(gh, repo: str | None, policy: Policy, *, spec: Form | None = None,
                     ttl: float = SCHEMA_TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> FormSchema:
    """The form template of `repo` (default branch), cached `ttl` seconds; the fallback form (the
    policy's local `template_file`, else the bundled form) when the repository has none, it
    cannot be read, or it is not a valid issue form. Rate limits and GitHub outages propagate
    (the delivery is retried) rather than parse with the wrong form."""
    spec = spec or policy.default_form
    path = spec.template_path
    if gh is None or not repo:
        return fallback_schema(spec)
    owner = getattr(gh, "app", gh)
    try:
        per_client = _schema_cache.setdefault(owner, {})
    except TypeError:  # not weak-referenceable: no caching
        per_client = {}
    cached = per_client.get((repo, path))
    now = clock()
    if cached and cached[0] > now:
        return cached[1]
    schema = _fetch_schema(gh, repo, path, spec)
    per_client[(repo, path)] = (now + ttl, schema)
    return schema


@lru_cache(maxsize=32)
def _local_schema(path: str) -> FormSchema:
    with open(path, encoding="utf-8") as handle:
        return parse_form_template(handle.read(), source=path)


def fallback_schema(spec: Form | None) -> FormSchema:
    """The policy's local copy of the form when it names one (checked at start-up), else the bundled form."""
    if spec is not None and spec.template_file:
        try:
            return _local_schema(spec.template_file)
        except (OSError, FormTemplateError) as exc:
            log.warning("form %s: cannot use %s (%s); using the bundled form", form_key(spec), spec.template_file, exc)
    return bundled_schema()


def _fetch_schema(gh, repo: str, path: str, spec: Form | None = None) -> FormSchema:
    try:
        text = gh.get_file(repo, path)
    except (RetryLater, GitHubUnavailable):
        raise
    except GitHubError as exc:  # e.g. 403 when the app may not read contents
        log.warning("cannot read form template %s:%s (%s); using the fallback form", repo, path, exc.status)
        return fallback_schema(spec)
    if text is None:
        return fallback_schema(spec)
    try:
        return parse_form_template(text, source=f"{repo}:{path}")
    except FormTemplateError as exc:
        log.warning("form template %s:%s is not a usable issue form (%s); using the fallback form", repo, path, exc)
        return fallback_schema(spec)


def select_form(gh, repo: str | None, policy: Policy, issue: dict) -> tuple[Form, FormSchema, bool]:
    """Which request form an issue belongs to: (form, its schema, labelled-or-titled).

    A trigger label decides; else a title starting with a form's `title_prefix`; else the form
    whose headings the body holds most of (the first form when none)."""
    names = [label["name"] if isinstance(label, dict) else str(label) for label in issue.get("labels") or []]
    spec = policy.form_for_labels(names)
    if spec is not None:
        return spec, load_form_schema(gh, repo, policy, spec=spec), True
    title = normalize_label(str(issue.get("title") or ""))
    forms = policy.request_forms
    for spec in forms:
        if spec.title_prefix.strip() and title.startswith(normalize_label(spec.title_prefix)):
            return spec, load_form_schema(gh, repo, policy, spec=spec), True
    if len(forms) == 1:
        return forms[0], load_form_schema(gh, repo, policy, spec=forms[0]), False
    body = str(issue.get("body") or "")
    best = None
    for spec in forms:
        schema = load_form_schema(gh, repo, policy, spec=spec)
        count = len(recognised_fields(body, schema, spec))
        if best is None or count > best[2]:
            best = (spec, schema, count)
    return best[0], best[1], False


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


@dataclass
class ParsedForm:
    values: dict[str, Any] = field(default_factory=dict)  # role -> str | list[str] | bool
    fields: dict[str, Any] = field(default_factory=dict)  # field id -> str | list[str]
    problems: list[str] = field(default_factory=list)
    from_form: bool = False
    missing: list[str] = field(default_factory=list)  # field ids whose heading is not in the body
    unticked: dict[str, list[str]] = field(default_factory=dict)  # field id -> required boxes not ticked
    missing_roles: list[str] = field(default_factory=list)  # required roles whose heading is absent (one ❌ each)
    form: str = ""  # the policy's name for the form (`form_key`)


_STOP_WORDS = {"the", "a", "an", "your", "you", "to", "for", "of", "or", "and", "please", "optional",
               "required", "if", "any", "is", "are", "this", "be", "in", "on", "we"}


def _tokens(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", normalize_label(text).replace("e-mail", "email"))
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in _STOP_WORDS}


def heading_index(schema: FormSchema, spec: Form | None = None) -> dict[str, int]:
    """normalised heading -> field index: the current labels, then the policy's older labels."""
    index = dict(schema.label_index)
    for field_id, old_labels in (spec.aliases if spec is not None else {}).items():
        field_ = schema.field(field_id)
        if field_ is None:
            continue
        for old in old_labels:
            index.setdefault(normalize_label(str(old)), schema.fields.index(field_))
    return index


def _similar_field(heading: str, schema: FormSchema, exclude: set[int]) -> int | None:
    """The one field whose id's words all appear in `heading` ("Domain/Referrer to Approve" →
    `domain-referrer`), or None when no field or more than one does."""
    words = _tokens(heading)
    matches = []
    for i, field_ in enumerate(schema.fields):
        if i in exclude:
            continue
        id_words = _tokens(field_.id.replace("_", "-"))
        if id_words and id_words <= words:
            matches.append(i)
    # The most specific id wins when one id's words contain another's (domain ⊂ domain-referrer).
    if len(matches) > 1:
        words_of = {i: _tokens(schema.fields[i].id.replace("_", "-")) for i in matches}
        widest = max(matches, key=lambda i: len(words_of[i]))
        if all(words_of[i] < words_of[widest] for i in matches if i != widest):
            return widest
        return None
    return matches[0] if matches else None


def _find_headings(lines: list[str], schema: FormSchema, spec: Form | None = None) -> list[tuple[int, int]]:
    """(line number, field index) of every line that looks like a known field heading: a label,
    an alias, or (for a field whose heading is not in the body) an unambiguous id-like match."""
    index = heading_index(schema, spec)
    found = []
    unknown: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        if "###" not in line:
            continue
        match = _HEADING.match(line)
        if match:
            field_index = index.get(normalize_label(match.group(1)))
            if field_index is not None:
                found.append((number, field_index))
            else:
                unknown.append((number, match.group(1)))
    if unknown:
        present = {i for _, i in found}
        guessed = [(number, i) for number, text in unknown
                   if (i := _similar_field(text, schema, present)) is not None]
        counts: dict[int, int] = {}
        for _, i in guessed:
            counts[i] = counts.get(i, 0) + 1
        found.extend((number, i) for number, i in guessed if counts[i] == 1)  # one heading per field
        found.sort()
    return found


def _inside_fence(lines: list[str], start: int, positions: list[int]) -> dict[int, bool]:
    """For each line number in `positions` (ascending, >= start): is it inside a code fence that
    opens at or after line `start` and is closed later? An unclosed fence (a stray ``` typed in
    a textarea) protects nothing."""
    open_at: dict[int, int | None] = {}  # position -> line where its enclosing fence opened
    closed: set[int] = set()
    fence: str | None = None
    fence_line = -1
    targets = set(positions)
    last = positions[-1] if positions else start - 1
    number = start
    while number < len(lines) and (number <= last or fence is not None):
        if number in targets:
            open_at[number] = fence_line if fence is not None else None
        line = lines[number]
        match = _FENCE.match(line) if ("``" in line or "~~" in line) else None
        if match is not None:
            marker, info = match.group(1), match.group(2)
            if fence is None:
                fence, fence_line = marker, number
            elif marker[0] == fence[0] and len(marker) >= len(fence) and not info:
                closed.add(fence_line)
                fence = None
        number += 1
    return {p: open_at.get(p) is not None and open_at[p] in closed for p in positions}


def _render_shaped(lines: list[str], line_no: int, field_: FormField) -> bool:
    """GitHub writes a `render:` field as its heading, a blank line and a fence in that language
    (or `_No response_`): a heading typed inside the value is rarely followed by the same."""
    for line in lines[line_no + 1: line_no + 4]:
        if line.strip():
            fence = _FENCE.match(line)
            return line.strip() == NO_RESPONSE or bool(fence and fence.group(2) == field_.render)
    return False


def _accepted_headings(lines: list[str], candidates: list[tuple[int, int]],
                       schema: FormSchema) -> list[tuple[int, int]]:
    """Choose which candidate headings really start fields (see the module docstring).

    The real headings are the longest chain of candidates in template order (a heading typed
    inside a textarea can only replace a real one, never add to the chain). When two chains
    are equally long, an occurrence is text typed inside a textarea: for a `render:` field the
    real heading is followed by GitHub's fence; one inside a code fence opened (and closed) in
    the current field is text; otherwise, after a multi-line field the real heading
    is the last occurrence, and after a single-line field (which cannot hold a heading) before
    a textarea, it is the first.
    """
    if not candidates:
        return []
    fields = schema.fields
    count = len(fields)
    best = [0] * len(candidates)  # longest chain starting at each candidate
    best_from_field = [0] * (count + 1)  # longest chain starting at a later candidate of field >= f
    for position in range(len(candidates) - 1, -1, -1):
        field_index = candidates[position][1]
        best[position] = 1 + best_from_field[field_index + 1]
        for f in range(field_index, -1, -1):
            if best_from_field[f] >= best[position]:
                break
            best_from_field[f] = best[position]
    accepted: list[tuple[int, int]] = []
    remaining = best_from_field[0]
    current, after = -1, -1
    while remaining > 0:
        options = [p for p in range(after + 1, len(candidates))
                   if candidates[p][1] > current and best[p] == remaining]
        field_index = min(candidates[p][1] for p in options)
        options = [p for p in options if candidates[p][1] == field_index]
        if len(options) > 1 and fields[field_index].render:
            options = [p for p in options if _render_shaped(lines, candidates[p][0], fields[field_index])] or options
        if len(options) > 1:
            section_start = candidates[after][0] + 1 if after >= 0 else 0
            fenced = _inside_fence(lines, section_start, [candidates[p][0] for p in options])
            options = [p for p in options if not fenced[candidates[p][0]]] or options
        previous_single_line = current >= 0 and not fields[current].multiline
        chosen = options[0] if previous_single_line and fields[field_index].multiline else options[-1]
        accepted.append(candidates[chosen])
        current, after, remaining = field_index, chosen, remaining - 1
    return accepted


def _out_of_order(lines: list[str], candidates: list[tuple[int, int]],
                  accepted: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Headings of fields the in-order chain left out (the applicant moved a section, or an old
    form had another order): the first occurrence outside a code block starts the field."""
    taken = {i for _, i in accepted}
    extra: dict[int, int] = {}
    rest = [(n, i) for n, i in candidates if i not in taken]
    if not rest:
        return accepted
    fenced = _inside_fence(lines, 0, [n for n, _ in rest])
    for number, field_index in rest:
        if not fenced[number] and field_index not in extra:
            extra[field_index] = number
    return sorted(accepted + [(n, i) for i, n in extra.items()])


def _strip_fence(text: str) -> tuple[str, bool]:
    """(inside, True) when `text` is exactly one fenced code block, else (text, False)."""
    lines = text.split("\n")
    if len(lines) < 2:
        return text, False
    opener, closer = _FENCE.match(lines[0]), _FENCE.match(lines[-1])
    if not opener or not closer or closer.group(2):
        return text, False
    fence = opener.group(1)
    if closer.group(1)[0] != fence[0] or len(closer.group(1)) < len(fence):
        return text, False
    return "\n".join(lines[1:-1]), True


def _raw_value(lines: list[str], field_: FormField) -> str:
    text = "\n".join(lines).strip("\n")
    if text.strip() == NO_RESPONSE:
        return ""
    inside, fenced = _strip_fence(text.strip())
    if fenced and (field_.render or not inside.strip()):
        return "" if inside.strip() in ("", NO_RESPONSE) else inside.strip("\n")
    if field_.multiline or field_.type == "checkboxes":
        return text.strip()
    return " ".join(text.split())


def _split_multi(raw: str, options: tuple[str, ...]) -> list[str]:
    """`a, b` → [a, b], keeping options that themselves contain ", " whole."""
    if not raw:
        return []
    known = {normalize_label(o): o for o in options}
    parts = [p.strip() for p in raw.split(", ")]
    chosen: list[str] = []
    i = 0
    while i < len(parts):
        for j in range(len(parts), i, -1):  # longest known option first
            candidate = ", ".join(parts[i:j])
            if normalize_label(candidate) in known:
                chosen.append(known[normalize_label(candidate)])
                i = j
                break
        else:
            if parts[i]:
                chosen.append(parts[i])
            i += 1
    return chosen


def _checkbox_states(raw: str, field_: FormField) -> dict[str, bool]:
    known = {normalize_label(o): o for o in field_.options}
    states = dict.fromkeys(field_.options, False)
    for line in raw.split("\n"):
        match = _CHECKBOX.match(line)
        if match:
            option = known.get(normalize_label(match.group(2)))
            if option is not None:
                states[option] = states[option] or match.group(1) in "xX"
    return states


def split_list(raw: str) -> list[str]:
    """A textarea holding one item per line (bullets, commas and spaces also separate; lines
    starting with `#` are comments)."""
    items = []
    for line in raw.split("\n"):
        line = _LIST_BULLET.sub("", line).strip()
        if line.startswith("#"):
            continue  # a heading or a comment line, not an item
        for part in re.split(r"[,\s]+", line):
            part = part.strip().strip("`'\"<>")
            if part and part != NO_RESPONSE:
                items.append(part)
    return items


def _typed(raw: str, field_: FormField) -> Any:
    if field_.type == "checkboxes":
        return [option for option, ticked in _checkbox_states(raw, field_).items() if ticked]
    if field_.type == "dropdown" and field_.multiple:
        return _split_multi(raw, field_.options)
    return raw


def split_entries(raw: str) -> list[str]:
    """A field holding several values that may contain spaces ("ImgGen Bot"): one per line,
    commas and semicolons also separate; a line of space-separated hosts is split too."""
    items = []
    for line in raw.split("\n"):
        line = _LIST_BULLET.sub("", line).strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"[,;]+", line):
            part = part.strip().strip("`'\"<>").strip()
            if not part or part == NO_RESPONSE:
                continue
            words = part.split()
            if len(words) > 1 and all("." in w or "://" in w for w in words):
                items.extend(words)
            else:
                items.append(part)
    return items


def _role_value(role: str, raw: str, field_: FormField) -> Any:
    if field_.type == "checkboxes":
        states = _checkbox_states(raw, field_)
        needed = field_.required_options or field_.options
        return all(states[o] for o in needed)
    if role == "domains":
        return split_list(raw)
    if role == "domain_or_referrer":
        return split_entries(raw)
    if field_.type == "dropdown" and field_.multiple:
        return _split_multi(raw, field_.options)
    return raw


def _enough_headings(found: int, schema: FormSchema) -> bool:
    """Clearly made from the form: at least half of its fields (and at least two) are there."""
    total = len(schema.fields)
    return found >= min(total, max(2, math.ceil(total / 2)))


def _lines(body: str | None) -> list[str]:
    text = body if isinstance(body, str) else ("" if body is None else str(body))
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _sections(lines: list[str], schema: FormSchema, spec: Form | None) -> list[tuple[int, int]]:
    candidates = _find_headings(lines, schema, spec)
    return _out_of_order(lines, candidates, _accepted_headings(lines, candidates, schema))


def recognised_fields(body: str | None, schema: FormSchema, spec: Form | None = None) -> list[str]:
    """Ids of the fields whose heading the body holds (labels, aliases, id-like matches)."""
    return [schema.fields[i].id for _, i in _sections(_lines(body), schema, spec)]


_warned_missing: set[tuple[str, str, str]] = set()


def _warn_missing_field_once(schema: FormSchema, spec: Form, role: str, field_id: str) -> None:
    """A required role whose field the form lacks is the operator's to fix (doctor FAILs it):
    said once in the log, never in an applicant's report."""
    key = (schema.source, form_key(spec), role)
    if key not in _warned_missing:
        _warned_missing.add(key)
        log.warning("form %s (%s) has no field %r for the required role %r: run `beekeeper doctor` or "
                    "`beekeeper policy check`", form_key(spec), schema.source, field_id, role)


def _parse(body: str | None, schema: FormSchema, policy: Policy, spec: Form | None = None,
           labelled: bool = False) -> ParsedForm:
    spec = spec or policy.default_form
    lines = _lines(body)
    accepted = _sections(lines, schema, spec)
    # With the trigger label (or the form's title prefix) one recognised heading is enough.
    from_form = len(accepted) >= 1 if labelled else _enough_headings(len(accepted), schema)
    parsed = ParsedForm(from_form=from_form, form=form_key(spec))

    raw_by_index: dict[int, str] = {}
    for n, (line_no, field_index) in enumerate(accepted):
        end = accepted[n + 1][0] if n + 1 < len(accepted) else len(lines)
        raw_by_index[field_index] = _raw_value(lines[line_no + 1:end], schema.fields[field_index])

    for index, field_ in enumerate(schema.fields):
        if index not in raw_by_index:
            parsed.missing.append(field_.id)
            continue
        raw = raw_by_index[index]
        parsed.fields[field_.id] = _typed(raw, field_)
        if field_.type == "checkboxes":
            states = _checkbox_states(raw, field_)
            parsed.unticked[field_.id] = [o for o in (field_.required_options or field_.options) if not states[o]]

    for role, field_id in spec.role_map.items():
        field_ = schema.field(field_id)
        required = role in spec.required_roles
        if field_ is None:
            if required:
                _warn_missing_field_once(schema, spec, role, field_id)
            continue
        index = schema.fields.index(field_)
        if index not in raw_by_index:
            if required and parsed.from_form:
                parsed.missing_roles.append(role)
                parsed.problems.append(
                    f'The "{field_.label}" field is missing (the form may have changed since this issue '
                    f'was opened): add a line "### {field_.label}" followed by your answer.')
            continue
        parsed.values[role] = _role_value(role, raw_by_index[index], field_)

    if not parsed.from_form:
        parsed.problems.insert(0, f"This issue was not made from the {schema.display_name} form.")
    return parsed


def parse_issue_body(body: str | None, schema: FormSchema, policy: Policy, *, spec: Form | None = None,
                     labelled: bool = False) -> ParsedForm:
    """Typed values per role, plus problems; never raises on user input. `labelled`: the issue
    carries the form's trigger label or title prefix (one recognised heading then suffices)."""
    try:
        return _parse(body, schema, policy, spec, labelled)
    except Exception:  # noqa: BLE001 - a parser bug must not stop the bot; it is logged and reported
        log.exception("issue form parser failed on a body of %d characters", len(body or ""))
        return ParsedForm(problems=[INTERNAL_PROBLEM])


# --------------------------------------------------------------------------------------------
# Rendering (what GitHub writes for a submitted form)
# --------------------------------------------------------------------------------------------


def render_issue_body(schema: FormSchema, answers: dict[str, Any], *, newline: str = "\r\n") -> str:
    """The body GitHub would write for these answers (field id → str, list[str] for multi-select
    dropdowns and ticked checkboxes). Used by tests and to show applicants the expected shape."""
    sections = []
    for field_ in schema.fields:
        value = answers.get(field_.id)
        if field_.type == "checkboxes":
            ticked = set(value or [])
            text = "\n".join(f"- [{'X' if o in ticked else ' '}] {o}" for o in field_.options)
        elif field_.type == "dropdown" and field_.multiple:
            text = ", ".join(value or []) or NO_RESPONSE
        elif not value:
            text = NO_RESPONSE
        elif field_.render:
            text = f"```{field_.render}\n{value}\n```"
        else:
            text = str(value)
        sections.append(f"### {field_.label}\n\n{text}")
    return "\n\n".join(sections).replace("\n", newline)
