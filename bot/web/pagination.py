"""Pages of long lists (queue, grants, audit trail): LIMIT/OFFSET with a total count.

Offsets are fine at dashboard sizes (tens of pages); the audit CSV export does not paginate,
it streams every matching row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100


@dataclass(frozen=True)
class Page:
    items: list[Any]
    number: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def first_index(self) -> int:
        """1-based position of the first item on this page (0 when empty), for "21–40 of 95"."""
        return (self.number - 1) * self.per_page + 1 if self.items else 0

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.items) - 1 if self.items else 0


def page_number(raw: str | None) -> int:
    """The `page` query parameter as a positive integer; anything else is page 1."""
    try:
        return max(1, int(raw or 1))
    except ValueError:
        return 1


def paginate(session: Session, statement, number: int, per_page: int = DEFAULT_PER_PAGE) -> Page:
    """One page of `statement` (a select with an ORDER BY) and the count of all its rows."""
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    total = session.execute(select(func.count()).select_from(statement.order_by(None).subquery())).scalar_one()
    last = max(1, -(-total // per_page))
    number = min(max(1, number), last)
    rows = session.exec(statement.limit(per_page).offset((number - 1) * per_page)).all()
    return Page(items=list(rows), number=number, per_page=per_page, total=total)
