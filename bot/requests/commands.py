"""Maintainer slash-commands: reading them from a comment, and who may run which.

A command is a line of a new issue comment that starts with `/` (up to three leading spaces),
followed by a name made of ASCII letters, digits, `-` and `_`:

    /approve flower
    /reject The app scrapes personal data.

Commands are found in a CommonMark parse of the comment (markdown-it-py, with GitHub's tables
and strikethrough), so that only what GitHub shows as the author's own text counts: the line
must belong to a top-level paragraph and start it or follow one of its line breaks, outside
emphasis, links, code spans and raw HTML. Block quotes (including a line GitHub pulls into the
quote above it by lazy continuation), lists, headings (setext `===`/`---` underlines too),
tables, fenced and indented code, HTML blocks and comments, and paragraphs inside an HTML
element such as `<details>` hold no commands. Only the ASCII slash counts: look-alikes such as
U+2215 `∕`, U+FF0F `／` or U+2044 `⁄` are ignored, so a pasted or crafted string cannot pass for
a command. Names are case-insensitive; several command lines in one comment run in order.

Commands are registered with `@command(...)`; this module defines the built-in ones (they call
the state machine in bot.requests.applications) and other modules add theirs the same way, e.g.

    @command("rotate", roles={MAINTAINER, APPLICANT}, usage="/rotate", help="Rotate the secret key.")
    def rotate(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome: ...

A module that defines commands must be imported before comments are handled (list it in
bot/intake/handlers.py). `run_comment(ctx, event)` is the whole pipeline for one `issue_comment.created`.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING

from bot.core import audit
from bot.core.comments import Trusted, marker, render
from bot.requests.outcomes import safe_mention  # noqa: F401 - re-exported: commands' users mention people

if TYPE_CHECKING:
    from bot.core.config import Policy
    from bot.core.models import AccessRequest
    from bot.intake.router import Context, Event

log = logging.getLogger("beekeeper.commands")

MAX_COMMANDS_PER_COMMENT = 10
MAINTAINER_PERMISSIONS = frozenset({"admin", "maintain", "write"})

# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

# Commands are read from a CommonMark parse of the comment (markdown-it-py, with GitHub's tables
# and strikethrough), not from line patterns: what counts is what GitHub shows. A command is a
# line of a top-level paragraph, outside any HTML element, whose text starts with the command at
# the paragraph's top level (not inside emphasis, a link, a code span or inline HTML).
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
# The name must be followed by whitespace or the end of the line: "/usr/bin" is not a command.
_COMMAND = re.compile(r"^ {0,3}/([A-Za-z][A-Za-z0-9_-]{0,31})(?=\s|$)(.*)$")
_NAME_AT = re.compile(r"/([A-Za-z][A-Za-z0-9_-]{0,31})(?=\s|$)")
_ANY_COMMAND_LINE = re.compile(r"^ {0,3}/[A-Za-z][A-Za-z0-9_-]{0,31}(?=\s|$)", re.MULTILINE)
# Blocks whose lines are shown as code or quoted text: never commands, and not part of a
# command's text either.
_HIDDEN_BLOCKS = frozenset({"code_block", "fence", "html_block", "blockquote_open"})
_VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                            "source", "track", "wbr"})


@dataclass(frozen=True)
class ParsedCommand:
    """One command line. `args` are the words on its line; `text` is the rest of its line plus
    the lines after it up to the next command (for reasons and messages that span lines)."""

    name: str
    args: tuple[str, ...]
    text: str
    line: int  # 1-based line number in the comment

    @property
    def flags(self) -> set[str]:
        return {a.lower() for a in self.args if a.startswith("--")}

    @property
    def words(self) -> list[str]:
        """The arguments that are not --flags."""
        return [a for a in self.args if not a.startswith("--")]


def _newlines_before(state, pos: int) -> int:
    """Newlines in state.src before pos, counted on from the previous call (no quadratic rescans)."""
    memo = state.env.get("_slash_newlines")
    if memo is None or memo[0] is not state.src or memo[1] > pos:
        memo = (state.src, 0, 0)
    count = memo[2] + state.src.count("\n", memo[1], pos)
    state.env["_slash_newlines"] = (state.src, pos, count)
    return count


def _slash_command_rule(state, silent: bool) -> bool:
    """Inline rule: `/name` where a line of the inline content starts (after at most three
    spaces). Runs before the text rule, so code spans, inline HTML and autolinks that began
    earlier have already consumed their text: a line inside them never reaches this rule."""
    src, pos = state.src, state.pos
    if src[pos] != "/":
        return False
    line_start = src.rfind("\n", 0, pos) + 1
    indent = src[line_start:pos]
    if len(indent) > 3 or indent.strip(" "):
        return False
    match = _NAME_AT.match(src, pos, state.posMax)
    if match is None:
        return False
    if not silent:
        token = state.push("slash_command", "", 0)
        token.content = match.group(1).lower()
        token.meta = {"line_offset": _newlines_before(state, pos)}
    state.pos = match.end()
    return True


def _markdown():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    md.inline.ruler.before("text", "slash_command", _slash_command_rule)
    return md


_MD = _markdown()


class _OpenElements(HTMLParser):
    """Counts the HTML elements left open by the raw HTML of a comment (`<details>` …), so that
    paragraphs inside them (hidden or quoted by the HTML) are not read as commands. Unclosed
    elements hide everything after them: when in doubt, nothing runs."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        if tag not in _VOID_ELEMENTS:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag not in _VOID_ELEMENTS:
            self.depth = max(0, self.depth - 1)


def _command_lines(tokens, lines: list[str]) -> tuple[dict[int, str], set[int]]:
    """({line index: command name}, {indexes of lines shown as code, quotes or HTML})."""
    commands: dict[int, str] = {}
    hidden: set[int] = set()
    html = _OpenElements()
    for index, token in enumerate(tokens):
        if token.level != 0 or token.map is None:
            continue
        first, end = token.map
        if token.type in _HIDDEN_BLOCKS or html.depth:
            hidden.update(range(first, end))
        if token.type == "html_block":
            html.feed(token.content)
        if token.type != "paragraph_open":
            continue  # headings, lists, tables, rules: shown text, but never commands
        nesting = 0
        for child in tokens[index + 1].children or []:
            if child.type == "html_inline":  # may open an element, or close the one we are in
                html.feed(child.content)
            elif child.type == "slash_command" and nesting == 0 and not html.depth:
                number = first + child.meta["line_offset"]
                match = _COMMAND.match(lines[number]) if number < end else None
                # The raw line must say the same (no tab or look-alike space before the slash).
                if match and match.group(1).lower() == child.content:
                    commands[number] = child.content
            nesting += child.nesting
    return commands, hidden


def parse_commands(body: str | None) -> list[ParsedCommand]:
    """The commands in a comment body, in order (at most MAX_COMMANDS_PER_COMMENT)."""
    text = (body or "").replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
    if not _ANY_COMMAND_LINE.search(text):
        return []  # no line could be a command: most comments skip the parse
    lines = text.split("\n")
    commands, hidden = _command_lines(_MD.parse(text), lines)
    starts = sorted(commands)
    parsed = []
    for position, number in enumerate(starts[:MAX_COMMANDS_PER_COMMENT]):
        rest = _COMMAND.match(lines[number]).group(2).strip()
        following = starts[position + 1] if position + 1 < len(starts) else len(lines)
        continuation = ["" if n in hidden else lines[n] for n in range(number + 1, following)]
        command_text = _HTML_COMMENT.sub("", "\n".join([rest, *continuation])).strip()
        parsed.append(ParsedCommand(name=commands[number], args=tuple(rest.split()), text=command_text,
                                    line=number + 1))
    return parsed


# --------------------------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------------------------


class Role(enum.StrEnum):
    MAINTAINER = "maintainer"
    APPLICANT = "applicant"


MAINTAINER = Role.MAINTAINER
APPLICANT = Role.APPLICANT


def is_policy_maintainer(gh, login: str, policy: Policy, *, user_id: int = 0, session=None) -> bool:
    """Named in maintainers.users (by numeric id; a login counts through the id it was first
    resolved to, see bot.github.identity), or an active member of one of maintainers.teams."""
    from bot.github.identity import is_policy_maintainer as by_id

    return by_id(session, gh, policy, login, user_id)


def resolve_role(gh, repo: str, login: str, user_id: int, is_bot: bool, request: AccessRequest | None,
                 policy: Policy, *, session=None) -> set[Role]:
    """What `login` is on this request: maintainer (write/maintain/admin on the repository, or
    named in the policy), applicant (the issue's author, by numeric id), both, or nothing.
    Bots are nothing: no bot may decide or act for an applicant."""
    if is_bot:
        return set()
    roles: set[Role] = set()
    if request is not None and user_id == request.applicant_id:
        roles.add(Role.APPLICANT)
    if gh.permission(repo, login) in MAINTAINER_PERMISSIONS or is_policy_maintainer(
            gh, login, policy, user_id=user_id, session=session):
        roles.add(Role.MAINTAINER)
    return roles


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass
class CommandContext:
    """What a command function gets: the handler Context, where it was typed and by whom."""

    ctx: Context
    repo: str
    issue: dict
    comment: dict
    actor: str  # the commenter's login
    actor_id: int
    roles: set[Role]
    request: AccessRequest
    source: str  # the comment's URL: the audit trail points at it

    @property
    def policy(self) -> Policy:
        return self.ctx.policy

    @property
    def session(self):
        return self.ctx.session


@dataclass
class Outcome:
    """What a command did. `message` (plain text, escaped when shown) goes into the reply;
    `details` are listed under it; `markdown` is a block Beekeeper rendered itself (e.g. /help)."""

    status: str  # done | noop | refused | failed
    message: str | None = None
    details: list[str] = field(default_factory=list)
    markdown: Trusted | None = None

    DONE = "done"
    NOOP = "noop"
    REFUSED = "refused"
    FAILED = "failed"

    @classmethod
    def done(cls, message: str | None = None, **kwargs) -> Outcome:
        return cls(cls.DONE, message, **kwargs)

    @classmethod
    def refused(cls, message: str, **kwargs) -> Outcome:
        return cls(cls.REFUSED, message, **kwargs)

    @classmethod
    def from_result(cls, result) -> Outcome:
        """From a bot.requests.applications.Result. A change posts its own decision comment, so it
        needs no reply; a no-op or a refusal says why."""
        if result.status == "done":
            return cls(cls.DONE, None)
        return cls(result.status, result.message, list(result.problems))

    @property
    def ok(self) -> bool:
        return self.status in (self.DONE, self.NOOP)


CommandFunc = Callable[[CommandContext, ParsedCommand], Outcome]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    func: CommandFunc
    roles: frozenset[Role]
    usage: str
    help: str
    # True for commands that give access: the applicant may not run them on their own request
    # (policy maintainers.forbid_self_approval), whatever their permission on the repository.
    grants_access: bool = False


COMMANDS: dict[str, CommandSpec] = {}


def command(name: str, *, roles: Iterable[Role], usage: str, help: str,  # noqa: A002 - the help text
            grants_access: bool = False) -> Callable[[CommandFunc], CommandFunc]:
    """Register a slash-command. `roles`: who may run it (any one of them suffices)."""

    def register(func: CommandFunc) -> CommandFunc:
        key = name.lower()
        COMMANDS[key] = CommandSpec(key, func, frozenset(roles), usage, help, grants_access)
        return func

    return register


def permission_refusal(spec: CommandSpec, roles: set[Role], policy: Policy) -> str | None:
    """Why this person may not run `spec` here, or None when they may."""
    if spec.grants_access and Role.APPLICANT in roles and policy.maintainers.forbid_self_approval:
        return (f"/{spec.name} can't be used on your own request, even by a maintainer: "
                "another maintainer has to decide.")
    if roles & spec.roles:
        return None
    if spec.roles == {Role.APPLICANT}:
        return f"Only the person who opened this request can use /{spec.name}."
    if Role.APPLICANT in spec.roles:
        return f"Only maintainers of this repository and the applicant can use /{spec.name}."
    return f"Only maintainers of this repository can use /{spec.name}."


def commands_for(roles: set[Role], policy: Policy) -> list[CommandSpec]:
    """The commands this person may run (for /help)."""
    return [spec for spec in COMMANDS.values() if permission_refusal(spec, roles, policy) is None]


# --------------------------------------------------------------------------------------------
# The pipeline for one comment
# --------------------------------------------------------------------------------------------

REACTION_READ = "eyes"
REACTION_DONE = "+1"
REACTION_REFUSED = "confused"


def run_comment(ctx: Context, event: Event) -> list[Outcome]:
    """Run the commands of a new comment on a request issue; returns their outcomes.

    Exactly once per comment: the first run records an audit row keyed by the comment id, in
    the same transaction as everything the commands change, so a redelivered or retried event
    finds it and does nothing (no second reply, no second decision).
    """
    from bot.requests import applications

    payload = event.payload
    comment = payload.get("comment") or {}
    issue = payload.get("issue") or {}
    repo = event.repo
    user = comment.get("user") or {}
    if not repo or "pull_request" in issue or not comment.get("id"):
        return []
    if user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]"):
        return []
    parsed = parse_commands(comment.get("body"))
    if not parsed:
        return []
    request = applications.request_for_issue(ctx, repo, issue)
    if request is None:
        return []  # not a special-access request: commands here are none of our business
    if not audit.claim_once(ctx.session, f"comment:{comment['id']}", user.get("login", "?"), "command.comment",
                            request_id=request.id, subject=f"{repo}#{issue.get('number')}",
                            source=comment.get("html_url"), details={"commands": [c.name for c in parsed]}):
        log.info("comment %s on %s#%s already handled", comment["id"], repo, issue.get("number"))
        return []
    gh = ctx.github
    _react(gh, repo, comment["id"], REACTION_READ)
    roles = resolve_role(gh, repo, user.get("login", ""), int(user.get("id") or 0), False, request, ctx.policy,
                         session=ctx.session)
    cmd_ctx = CommandContext(ctx=ctx, repo=repo, issue=issue, comment=comment, actor=user.get("login", ""),
                             actor_id=int(user.get("id") or 0), roles=roles, request=request,
                             source=comment.get("html_url") or f"comment:{comment['id']}")
    outcomes = [_run_one(cmd_ctx, cmd) for cmd in parsed]
    _reply(cmd_ctx, parsed, outcomes)
    _react(gh, repo, comment["id"], REACTION_DONE if all(o.ok for o in outcomes) else REACTION_REFUSED)
    return outcomes


def _react(gh, repo: str, comment_id: int, content: str) -> None:
    """Reactions are an acknowledgement, not an effect: a comment deleted meanwhile (404) or a
    refused reaction must not undo the commands. Outages (5xx, rate limits) still retry."""
    from bot.github.client import GitHubError, GitHubUnavailable

    try:
        gh.add_reaction(repo, comment_id, content)
    except GitHubUnavailable:
        raise
    except GitHubError as exc:
        log.info("could not react %s on comment %s in %s: %s", content, comment_id, repo, exc)


def _run_one(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    spec = COMMANDS.get(cmd.name)
    if spec is None:
        outcome = Outcome.refused(f"I don't know the command /{cmd.name}. Type /help to see the commands you "
                                  "can use here.")
    else:
        why_not = permission_refusal(spec, cmd_ctx.roles, cmd_ctx.policy)
        outcome = Outcome.refused(why_not) if why_not else spec.func(cmd_ctx, cmd)
    audit.record(cmd_ctx.session, cmd_ctx.actor, f"command.{cmd.name}"[:64], request_id=cmd_ctx.request.id,
                 subject=f"{cmd_ctx.repo}#{cmd_ctx.request.issue_number}", source=cmd_ctx.source,
                 details={"status": outcome.status, "args": list(cmd.args)[:10], "message": outcome.message})
    return outcome


def _reply(cmd_ctx: CommandContext, parsed: list[ParsedCommand], outcomes: list[Outcome]) -> None:
    """One reply per comment, for everything that was not a decision (refusals, no-ops, help)."""
    items = [(cmd, o) for cmd, o in zip(parsed, outcomes, strict=True) if o.message or o.markdown]
    if not items:
        return
    body = render(
        "command_reply.md",
        marker=Trusted(marker("reply", cmd_ctx.comment["id"])),
        mention=safe_mention(cmd_ctx.actor),
        items=[{"name": cmd.name, "status": o.status, "message": o.message or "", "details": o.details,
                "markdown": o.markdown} for cmd, o in items],
    )
    cmd_ctx.ctx.github.post_comment_once(cmd_ctx.repo, cmd_ctx.request.issue_number,
                                         marker("reply", cmd_ctx.comment["id"]), body)


# --------------------------------------------------------------------------------------------
# Built-in commands
# --------------------------------------------------------------------------------------------


def _applications():
    from bot.requests import applications

    return applications


@command("approve", roles={MAINTAINER}, usage="/approve [tier] [--force]", grants_access=True,
         help="Approve the request, on the requested tier or the one named. --force approves despite "
              "failed checks.")
def approve_command(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    apps = _applications()
    unknown_flags = cmd.flags - {"--force"}
    if unknown_flags:
        return Outcome.refused(f"I don't know the option {sorted(unknown_flags)[0]}. Usage: /approve [tier] [--force]")
    words = cmd.words
    if len(words) > 1:
        return Outcome.refused("/approve takes at most one tier name. Usage: /approve [tier] [--force]")
    result = apps.approve(cmd_ctx.ctx, cmd_ctx.request, cmd_ctx.actor, tier=words[0] if words else None,
                          force="--force" in cmd.flags, source=cmd_ctx.source, actor_id=cmd_ctx.actor_id)
    return Outcome.from_result(result)


@command("reject", roles={MAINTAINER}, usage="/reject <reason>",
         help="Decline the request and close the issue; the reason is shown to the applicant.")
def reject_command(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    if not cmd.text:
        return Outcome.refused("Please give the applicant a reason: /reject <reason>")
    return Outcome.from_result(_applications().reject(cmd_ctx.ctx, cmd_ctx.request, cmd_ctx.actor, cmd.text,
                                                      source=cmd_ctx.source))


@command("needs-info", roles={MAINTAINER}, usage="/needs-info <message>",
         help="Ask the applicant for changes; the issue stays open.")
def needs_info_command(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    if not cmd.text:
        return Outcome.refused("Please say what is missing: /needs-info <message>")
    return Outcome.from_result(_applications().needs_info(cmd_ctx.ctx, cmd_ctx.request, cmd_ctx.actor, cmd.text,
                                                          source=cmd_ctx.source))


def _grant_or_refusal(cmd_ctx: CommandContext):
    from bot.access import grants

    grant = grants.grant_for_request(cmd_ctx.session, cmd_ctx.request)
    if grant is None:
        return None, Outcome.refused("This request has no grant yet: there is nothing to change. "
                                     "Approve it first with /approve.")
    return grant, None


@command("tier", roles={MAINTAINER}, usage="/tier <tier>", grants_access=True,
         help="Move the approved grant to another tier.")
def tier_command(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    words = cmd.words
    if len(words) != 1:
        return Outcome.refused(f"Please name one tier: /tier <tier> (tiers: {', '.join(cmd_ctx.policy.tier_names)})")
    grant, refusal = _grant_or_refusal(cmd_ctx)
    if refusal:
        return refusal
    return Outcome.from_result(_applications().change_tier(cmd_ctx.ctx, grant, cmd_ctx.actor, words[0],
                                                           source=cmd_ctx.source, actor_id=cmd_ctx.actor_id))


@command("revoke", roles={MAINTAINER}, usage="/revoke <reason>",
         help="Revoke the approved grant (its keys stop working); the reason is shown to the applicant.")
def revoke_command(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    if not cmd.text:
        return Outcome.refused("Please give the applicant a reason: /revoke <reason>")
    grant, refusal = _grant_or_refusal(cmd_ctx)
    if refusal:
        return refusal
    return Outcome.from_result(_applications().revoke(cmd_ctx.ctx, grant, cmd_ctx.actor, cmd.text,
                                                      source=cmd_ctx.source))


@command("recheck", roles={MAINTAINER, APPLICANT}, usage="/recheck",
         help="Run the checks again (after a fix outside the issue, e.g. a DNS change).")
def recheck_command(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    return Outcome.from_result(_applications().recheck(cmd_ctx.ctx, cmd_ctx.request, cmd_ctx.actor))


@command("withdraw", roles={APPLICANT}, usage="/withdraw",
         help="Cancel your request and close the issue.")
def withdraw_command(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    return Outcome.from_result(_applications().withdraw(cmd_ctx.ctx, cmd_ctx.request, cmd_ctx.actor,
                                                        source=cmd_ctx.source))


@command("help", roles={MAINTAINER, APPLICANT}, usage="/help", help="List the commands you can use here.")
def help_command(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    specs = commands_for(cmd_ctx.roles, cmd_ctx.policy)
    block = render("help.md", commands=[{"usage": s.usage, "help": s.help} for s in specs],
                   tiers=cmd_ctx.policy.tier_names)
    return Outcome.done(markdown=Trusted(block))
