"""``process-spec``: the inputs, outputs and exit codes of an AiiDA process, read from its spec at build time.

Usage in MyST::

    ```{process-spec} aiida_deeph.workflows.dataset.DatasetWorkChain
    :depth: 2
    :collapse: cp2k, openmx, abacus
    ```

``depth`` is how many namespace levels are expanded (deeper namespaces list their port names only);
``collapse`` names namespaces (comma-separated, at any level) that are never expanded. The
``metadata`` namespace, ``monitors`` and ``remote_folder`` (generic CalcJob ports) and non-database inputs are left
out, as are aiida-core's generic exit codes below 100. Help texts are shown as plain text with ``code`` spans for
backquoted names, so no port help can break the build. Needs no AiiDA profile; port defaults that are callables
(``lambda: orm.Int(4)``) are evaluated only when a profile is loaded (``conf.py`` loads a temporary one).
"""

from __future__ import annotations

import importlib
import re

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

SKIPPED_PORTS = {"metadata", "monitors", "remote_folder"}
BACKQUOTED = re.compile(r"``?([^`]+)``?")


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _type_name(valid_type) -> str:
    types = valid_type if isinstance(valid_type, tuple) else (valid_type,)
    names = [t.__name__ for t in types if t is not None and t is not type(None)]
    return " | ".join(names) if names else "any"


def _default(port) -> str | None:
    """The default as a short string; None when there is none or it cannot be evaluated here."""
    from aiida import orm
    from aiida.manage import get_manager

    if not getattr(port, "has_default", lambda: False)():
        return None
    value = port.default
    if callable(value):
        if get_manager().get_profile() is None:
            return None
        try:
            value = value()
        except Exception:  # noqa: BLE001 - a default we cannot build is simply not shown
            return None
    if isinstance(value, orm.Dict):
        value = value.get_dict()
    elif isinstance(value, (orm.Int, orm.Float, orm.Str, orm.Bool)):
        value = value.value
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(text: str) -> list[nodes.Node]:
    """Plain text with backquoted names as inline literals."""
    parts: list[nodes.Node] = []
    position = 0
    for match in BACKQUOTED.finditer(text):
        if match.start() > position:
            parts.append(nodes.Text(text[position:match.start()]))
        parts.append(nodes.literal(match.group(1), match.group(1)))
        position = match.end()
    if position < len(text):
        parts.append(nodes.Text(text[position:]))
    return parts


class ProcessSpecDirective(SphinxDirective):
    required_arguments = 1
    option_spec = {"depth": directives.nonnegative_int, "collapse": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        from aiida.engine.processes.ports import PortNamespace

        self._namespace_type = PortNamespace
        process = _import(self.arguments[0])
        spec = process.spec()
        depth = self.options.get("depth", 1)
        self._collapsed = {name.strip() for name in self.options.get("collapse", "").split(",") if name.strip()}
        result: list[nodes.Node] = []
        result += self._section("Inputs", self._ports(spec.inputs, depth, inputs=True))
        result += self._section("Outputs", self._ports(spec.outputs, depth, inputs=False))
        codes = sorted((code for code in spec.exit_codes.values() if code.status >= 100), key=lambda c: c.status)
        if codes:
            result += self._section("Exit codes", [self._exit_codes(spec.exit_codes, codes)])
        return result

    @staticmethod
    def _section(title: str, body: list[nodes.Node]) -> list[nodes.Node]:
        return [nodes.rubric(text=title), *body] if body else []

    def _ports(self, namespace, depth: int, inputs: bool) -> list[nodes.Node]:
        items = []
        for name, port in namespace.items():
            if name in SKIPPED_PORTS or getattr(port, "non_db", False):
                continue
            items.append(self._port_item(name, port, 1 if name in self._collapsed else depth, inputs))
        if not items:
            return []
        listing = nodes.bullet_list()
        listing.extend(items)
        return [listing]

    def _port_item(self, name: str, port, depth: int, inputs: bool) -> nodes.list_item:
        paragraph = nodes.paragraph()
        is_namespace = isinstance(port, self._namespace_type)
        paragraph += nodes.literal(text=f"{name}/" if is_namespace else name)
        facts = ["namespace" if is_namespace else _type_name(port.valid_type)]
        if inputs or not port.required:
            facts.append("required" if port.required else "optional")
        default = None if is_namespace else _default(port)
        if default is not None:
            facts.append(f"default {default}")
        paragraph += nodes.Text(f" ({', '.join(facts)})")
        if port.help:
            paragraph += nodes.Text(": ")
            paragraph.extend(_text(" ".join(port.help.split())))
        item = nodes.list_item()
        item += paragraph
        if is_namespace:
            if depth > 1:
                item.extend(self._ports(port, depth - 1, inputs))
            else:
                names = [n for n, p in port.items() if n not in SKIPPED_PORTS and not getattr(p, "non_db", False)]
                if names:
                    item += nodes.paragraph(text="holds: " + ", ".join(names))
        return item

    @staticmethod
    def _exit_codes(namespace, codes) -> nodes.table:
        labels = {code.status: label for label, code in namespace.items()}
        table = nodes.table()
        group = nodes.tgroup(cols=3)
        table += group
        for width in (8, 36, 56):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        body = nodes.tbody()
        group += body
        for cells, target in ((("status", "label", "message"), head),
                              *(((str(c.status), labels[c.status], c.message), body) for c in codes)):
            row = nodes.row()
            for index, cell in enumerate(cells):
                entry = nodes.entry()
                paragraph = nodes.paragraph()
                if target is body and index == 1:
                    paragraph += nodes.literal(text=cell)
                else:
                    paragraph += nodes.Text(cell)
                entry += paragraph
                row += entry
            target += row
        return table


def setup(app):
    app.add_directive("process-spec", ProcessSpecDirective)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
