"""The executor's one error type: a list of problems, each tied to a node when there is one.

`InvalidWorkflowError` (exit code 2) is raised before anything runs, with every problem found in
the graph at once; `NodeExecutionError` (exit code 1) when a node fails while running. Both are
`WorkflowError`, itself a `SundaeError`, so callers catch one type.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SundaeError, one_line


@dataclass(frozen=True)
class Problem:
    message: str
    node_id: str | None = None
    title: str | None = None

    def __str__(self) -> str:
        if self.node_id is None:
            return self.message
        title = f" ({self.title})" if self.title else ""
        return f"node {self.node_id}{title}: {self.message}"


class WorkflowError(SundaeError):
    """A workflow could not be read, validated or run; `problems` holds one entry per cause."""

    exit_code = 1

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, (str, Problem)):
            problems = [problems if isinstance(problems, Problem) else Problem(problems)]
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def lines(self) -> list[str]:
        """One line per problem, for CLIs: never spanning lines, never sending control characters
        (an ANSI escape in a node title) to the terminal, cut when overlong (errors.one_line)."""
        return [one_line(p) for p in self.problems]


class InvalidWorkflowError(WorkflowError):
    """The workflow is malformed or does not fit the installed nodes; nothing was run."""

    exit_code = 2


class NodeExecutionError(WorkflowError):
    """A node raised while running; the nodes before it did run."""

    exit_code = 1
