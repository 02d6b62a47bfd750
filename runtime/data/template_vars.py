"""Which message properties a chat template reads, so unmapped fields (tool_calls, name, reasoning_content...)
reach the template only when it uses them.

The rule is what Axolotl's analysis of the template AST yields (see ``message_vars``).
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
    """Properties read on a variable named ``message`` (``.x``, ``['x']``, ``.x is defined``).

    That is what Axolotl's analyzer yields in practice: it traces ``messages`` and the variables assigned from
    it only after its first pass has filled its tables, so on the single call its chat-template strategy makes
    just the conventional ``message`` loop variable counts (a template looping ``for msg in messages`` gets no
    extra fields there, e.g. exaone4's ``tool_calls``). Following it keeps rendered rows equal to Axolotl's.
    ``field_messages`` is accepted for the caller's sake and, as there, does not change the answer.
    """
    del field_messages
    env = Environment(extensions=[_GenerationTag, "jinja2.ext.loopcontrols"])
    found: set[str] = set()
    for node in env.parse(template).find_all((nodes.Getattr, nodes.Getitem)):
        if _base(node.node) != "message":
            continue
        if isinstance(node, nodes.Getattr):
            found.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.add(node.arg.value)
    return frozenset(found)
