"""Which message properties a chat template reads, so unmapped fields (tool_calls, name, reasoning_content...)
reach the template only when it uses them.

The rule matches Axolotl's analysis of the template AST: properties read (``.x``, ``['x']``, ``.x is defined``)
on the messages variable, on variables assigned from it, and on the conventional ``message`` loop variable.
"""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, nodes
from jinja2.ext import Extension


class _GenerationTag(Extension):
    """Parses ``{% generation %}...{% endgeneration %}`` (HF assistant-mask markers) as a plain block."""

    tags = {"generation"}

    def parse(self, parser):  # type: ignore[no-untyped-def,unused-ignore]
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _base(node: nodes.Node) -> str | None:
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        node = node.node
    return node.name if isinstance(node, nodes.Name) else None


@cache
def message_vars(template: str, field_messages: str = "messages") -> frozenset[str]:
    env = Environment(extensions=[_GenerationTag, "jinja2.ext.loopcontrols"])
    ast = env.parse(template)
    props: dict[str, set[str]] = {}
    assigned_from: dict[str, str] = {}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Assign, nodes.For)):
        if isinstance(node, nodes.Getattr):
            base = _base(node.node)
            if base:
                props.setdefault(base, set()).add(node.attr)
        elif isinstance(node, nodes.Getitem):
            base = _base(node.node)
            if base and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                props.setdefault(base, set()).add(node.arg.value)
        elif isinstance(node, nodes.Assign):
            source = _base(node.node)
            if isinstance(node.target, nodes.Name) and source:
                assigned_from[node.target.name] = source
    found: set[str] = set()
    seen: set[str] = set()
    todo = [field_messages]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found |= props.get(name, set())
        todo.extend(target for target, source in assigned_from.items() if source == name)
    found |= props.get("message", set())
    return frozenset(found)
