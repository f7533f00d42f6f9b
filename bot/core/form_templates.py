"""The issue form's template (GitHub issue-form YAML) as a field schema.

Core because two layers read it: the policy loader checks that a form's roles and aliases name
fields the template has (bot.core.config), and bot.rules.forms parses issue bodies with it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import yaml

from bot.core.resources import issue_form_path

if TYPE_CHECKING:
    from bot.core.config import Form, Policy

FIELD_TYPES = ("input", "textarea", "dropdown", "checkboxes")


class FormTemplateError(ValueError):
    """The form template is not a usable GitHub issue form (the message says why)."""


def normalize_label(text: str) -> str:
    """How labels are compared: NFC, whitespace collapsed, case folded."""
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormField:
    id: str
    type: str  # input | textarea | dropdown | checkboxes
    label: str
    required: bool = False
    options: tuple[str, ...] = ()  # dropdown options, or checkbox option labels
    required_options: tuple[str, ...] = ()  # checkbox options marked `required: true`
    multiple: bool = False  # multi-select dropdown
    render: str | None = None  # textarea rendered in a code fence of this language
    description: str = ""  # the form's own help text for the field (wording of hints)

    @property
    def multiline(self) -> bool:
        return self.type == "textarea"


@dataclass(frozen=True)
class FormSchema:
    fields: tuple[FormField, ...]
    source: str = "bundled"  # "bundled" or "<owner/name>:<path>"
    name: str = ""
    labels: tuple[str, ...] = ()  # labels the form applies to new issues

    def field(self, field_id: str) -> FormField | None:
        return next((f for f in self.fields if f.id == field_id), None)

    def field_for_role(self, role: str, policy: Policy, spec: Form | None = None) -> FormField | None:
        field_id = (spec or policy.default_form).role_map.get(role)
        return self.field(field_id) if field_id else None

    def role_of(self, field_id: str, policy: Policy, spec: Form | None = None) -> str | None:
        return next((r for r, fid in (spec or policy.default_form).role_map.items() if fid == field_id), None)

    def roles_present(self, policy: Policy, spec: Form | None = None) -> set[str]:
        """Roles the policy maps to a field this form really has (only those are checked)."""
        return {role for role, fid in (spec or policy.default_form).role_map.items() if self.field(fid)}

    @property
    def display_name(self) -> str:
        return self.name.strip() or "request"

    @property
    def label_index(self) -> dict[str, int]:
        return {normalize_label(f.label): i for i, f in enumerate(self.fields)}


def _options(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise FormTemplateError(f"{where}: options must be a non-empty list")
    return raw


def _field_from_item(item: Any, index: int) -> FormField | None:
    where = f"body[{index}]"
    if not isinstance(item, dict):
        raise FormTemplateError(f"{where}: must be a mapping")
    kind = item.get("type")
    if kind == "markdown":
        return None  # not rendered into the issue body
    if kind not in FIELD_TYPES:
        raise FormTemplateError(f"{where}: unknown type {kind!r}")
    attributes = item.get("attributes") or {}
    label = attributes.get("label") if isinstance(attributes, dict) else None
    if not isinstance(label, str) or not label.strip():
        raise FormTemplateError(f"{where}: attributes.label is required")
    label = label.strip()
    description = attributes.get("description") if isinstance(attributes, dict) else None
    description = " ".join(str(description).split()) if description else ""
    validations = item.get("validations") or {}
    required = bool(validations.get("required")) if isinstance(validations, dict) else False
    field_id = str(item.get("id") or "").strip() or re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    if kind == "dropdown":
        options = tuple(str(o).strip() for o in _options(attributes.get("options"), where))
        return FormField(field_id, kind, label, required, options, multiple=bool(attributes.get("multiple")),
                         description=description)
    if kind == "checkboxes":
        labels, needed = [], []
        for option in _options(attributes.get("options"), where):
            text = str(option.get("label") if isinstance(option, dict) else option).strip()
            labels.append(text)
            if isinstance(option, dict) and option.get("required"):
                needed.append(text)
        return FormField(field_id, kind, label, required or bool(needed), tuple(labels), tuple(needed),
                         description=description)
    render = attributes.get("render") if kind == "textarea" else None
    return FormField(field_id, kind, label, required, render=str(render).strip() if render else None,
                     description=description)


def parse_form_template(text: str, source: str = "bundled") -> FormSchema:
    """A GitHub issue-form YAML → FormSchema; FormTemplateError when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormTemplateError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("body"), list):
        raise FormTemplateError("an issue form needs a `body` list")
    try:
        fields = [f for i, item in enumerate(data["body"]) if (f := _field_from_item(item, i)) is not None]
    except (AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, FormTemplateError):
            raise
        raise FormTemplateError(f"malformed field: {exc}") from None
    if not fields:
        raise FormTemplateError("the form has no input fields")
    ids = [f.id for f in fields]
    if len(set(ids)) != len(ids):
        raise FormTemplateError(f"field ids must be unique, got {ids}")
    labels = data.get("labels") or []
    if isinstance(labels, str):
        labels = [part.strip() for part in labels.split(",")]
    return FormSchema(tuple(fields), source=source, name=str(data.get("name") or ""),
                      labels=tuple(str(label) for label in labels if str(label).strip()))


@lru_cache(maxsize=1)
def bundled_schema() -> FormSchema:
    """The form shipped with Beekeeper (.github/ISSUE_TEMPLATE/special-access.yml)."""
    return parse_form_template(issue_form_path().read_text(encoding="utf-8"), source="bundled")
