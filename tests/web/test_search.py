"""Dashboard searches: case-insensitive substrings where LIKE's wildcards are literal text."""

from __future__ import annotations

from sqlmodel import Session

from bot.core.models import AuditEvent
from bot.web.search import AuditFilter, audit_query


def test_wildcards_in_a_search_are_literal_and_case_is_ignored(engine):
    with Session(engine) as s:
        for subject in ("grant a_b", "grant axb", "100% done", "1000 done", "path/to", "Back\\slash"):
            s.add(AuditEvent(actor="system", action="test.search", subject=subject))
        s.commit()

        def found(text: str) -> list[str]:
            return sorted(e.subject for e in s.exec(audit_query(AuditFilter(subject=text))).all())

        assert found("a_b") == ["grant a_b"]  # `_` is not "any character"
        assert found("0%") == ["100% done"]  # `%` is not "anything"
        assert found("GRANT A") == ["grant a_b", "grant axb"]
        assert found("h/t") == ["path/to"]  # SQLAlchemy's escape character, itself escaped
        assert found("k\\s") == ["Back\\slash"]
