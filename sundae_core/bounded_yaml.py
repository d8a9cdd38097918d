"""YAML from files and flags we did not write: aliases bounded, so a few bytes cannot expand.

`yaml.safe_load` shares the object an alias (`*a`) points to, so parsing a "billion laughs"
document is cheap, but everything that walks the result afterwards (config building, JSON
dumps, error messages) walks every path through the shared objects: a 364-byte file took 1.7 GB
and printed a 52 MB error line. `safe_load` here is `yaml.safe_load` that refuses a document
using more than MAX_ALIASES aliases or whose fully expanded form would have more than
MAX_EXPANDED_NODES nodes; configs this project reads use few anchors, if any. Nesting is bounded
like bounded_json's. Refusals raise `YAMLShapeError`, a `yaml.YAMLError`, so callers that already
turn YAML errors into one line need no change.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_ALIASES = 100
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64


class YAMLShapeError(yaml.YAMLError):
    """Valid YAML that this project refuses: too many aliases, too large expanded, too deep."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader counting alias events while the document is composed (before any construction)."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise YAMLShapeError(f"refused: uses more than {MAX_ALIASES} aliases (*name)")
        return super().compose_node(parent, index)


def safe_load(text: str | bytes) -> Any:
    """`yaml.safe_load` with aliases, expanded size and nesting bounded (see the module docstring)."""
    loader = _BoundedLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLShapeError(f"refused: nested too deeply (over {MAX_DEPTH} levels)") from None
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes of the document with every alias expanded, without expanding it: a depth-
    first walk that sizes each distinct node once, from its children's sizes. A node that contains
    itself (`&a [*a]`) would expand forever and is refused."""
    sizes: dict[int, int] = {}
    on_path = {id(root)}
    stack = [(root, iter(_children(root)))]
    while stack:
        node, pending = stack[-1]
        child = next(pending, None)
        if child is None:
            stack.pop()
            on_path.discard(id(node))
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > MAX_EXPANDED_NODES:
                raise YAMLShapeError(f"refused: its aliases expand to more than {MAX_EXPANDED_NODES:,} values")
            sizes[id(node)] = total
        elif id(child) in on_path:
            raise YAMLShapeError("refused: an alias refers to a collection that contains it")
        elif id(child) not in sizes:
            if len(stack) >= MAX_DEPTH:
                raise YAMLShapeError(f"refused: nested too deeply (over {MAX_DEPTH} levels)")
            on_path.add(id(child))
            stack.append((child, iter(_children(child))))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
