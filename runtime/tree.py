"""Search-tree data model and its JSON form (DESIGN.md "Tree").

A tree is a flat list of nodes; node 0 is the root (the question, no step text). Every strategy
writes its whole tree so that offline inference and training-data extraction need no model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)  # thousands of trees × hundreds of nodes stay in memory at once
class Node:
    id: int
    parent: int | None
    depth: int
    text: str = ""  # the full step as it goes into the next prompt, observation included
    code: str | None = None
    observation: str | None = None
    final_answer: str | None = None  # the answer, or a §1.4 sentinel for an invalid terminal
    prior: float | None = None
    value: float | None = None
    visits: int = 0
    value_sum: float = 0.0
    terminal: bool = False
    reward: float | None = None
    code_error: bool = False
    consecutive_errors: int = 0
    children: list[int] = field(default_factory=list)

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["children"]  # derivable from `parent`; keeps the file flat as DESIGN.md says
        out["q"] = self.q
        return out


class Tree:
    """Nodes of one problem's search; append-only."""

    def __init__(self) -> None:
        self.nodes: list[Node] = [Node(id=0, parent=None, depth=0)]

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add_child(self, parent: Node, **fields: Any) -> Node:
        node = Node(id=len(self.nodes), parent=parent.id, depth=parent.depth + 1, **fields)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def path(self, node: Node) -> list[Node]:
        """Root-exclusive list of nodes from the root's first child down to `node`."""
        out: list[Node] = []
        cur: Node | None = node
        while cur is not None and cur.parent is not None:
            out.append(cur)
            cur = self.nodes[cur.parent]
        out.reverse()
        return out

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [n.to_json() for n in self.nodes]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tree:
        tree = cls.__new__(cls)
        tree.nodes = []
        for raw in data["nodes"]:
            raw = dict(raw)
            raw.pop("q", None)
            tree.nodes.append(Node(**raw))
        for node in tree.nodes:
            if node.parent is not None:
                tree.nodes[node.parent].children.append(node.id)
        return tree


def mean_logprob_prior(cumulative_logprob: float | None, n_tokens: int) -> float | None:
    """AlphaMath's prior: exp of the mean token log-probability (ALPHAMATH.md §2)."""
    if cumulative_logprob is None or n_tokens == 0:
        return None
    return math.exp(cumulative_logprob / n_tokens)
