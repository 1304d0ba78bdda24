"""The problem record every dataset yields and every strategy solves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One question. `answer` holds the accepted final answers (several where the source lists
    more than one; any of them counts as correct). `meta` keeps source fields such as `human_type`.
    """

    id: str
    question: str
    answer: tuple[str, ...]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        answer: str | list[str] = self.answer[0] if len(self.answer) == 1 else list(self.answer)
        return {"id": self.id, "question": self.question, "answer": answer,
                "source": self.source, "meta": self.meta}
