"""Make the package's docstrings render as reST without changing what they say (``autodoc-process-docstring``).

The docstrings are written for readers of the source, with a little reST. Three habits of that style are not reST:

1. ``|x|`` for an absolute value or a norm: reST reads it as a substitution. Every ``|`` outside inline literals is
   escaped (rows and borders of grid tables are left alone).
2. ``:func:`.name``` meaning the sibling module's ``name`` (Python's relative-import sense): Sphinx instead searches
   every object whose name ends in ``.name`` and may find several. Such references are made absolute when the
   sibling exists.
3. Layout slips that docutils rejects: continuation lines of the first paragraph indented differently from its first
   line, and a simple table whose text runs into a column gap. The first are joined into the paragraph; such a table
   is shown as preformatted text.

Click help texts (``sphinx-click``) are plain text: ``*`` and ``|`` are escaped there too, and single-backquoted
names become inline literals.
"""

from __future__ import annotations

import importlib
import re
import sys

from docutils.core import publish_doctree
from docutils.utils import SystemMessage

LITERAL = re.compile(r"(``.+?``)")
RELATIVE_REF = re.compile(r"(:(?:mod|func|class|meth|attr|data|exc|obj):`)(~?)\.([A-Za-z_][\w.]*)`")
GRID_BORDER = re.compile(r"^\+[-=+]+\+$")
TABLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _escape_bars(line: str) -> str:
    stripped = line.strip()
    if (stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1) or GRID_BORDER.match(stripped):
        return line
    parts = LITERAL.split(line)
    return "".join(part if index % 2 else part.replace("|", r"\|") for index, part in enumerate(parts))


def _package_of(what: str, name: str, obj) -> str:
    module = name if what == "module" else getattr(obj, "__module__", None) or name.rpartition(".")[0]
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__path__", None) is not None:  # a package's own __init__
        return module
    return module.rpartition(".")[0]


def _exists(path: str) -> bool:
    module, attributes = path, []
    while module:
        try:
            target = importlib.import_module(module)
        except ImportError:
            module, _, last = module.rpartition(".")
            attributes.insert(0, last)
            continue
        for attribute in attributes:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def _absolute_refs(line: str, package: str) -> str:
    def replace(match: re.Match) -> str:
        target = f"{package}.{match.group(3)}"
        return f"{match.group(1)}~{target}`" if _exists(target) else match.group(0)

    return RELATIVE_REF.sub(replace, line)


def _join_first_paragraph(lines: list[str]) -> list[str]:
    end = next((index for index, line in enumerate(lines) if not line.strip()), len(lines))
    paragraph = lines[:end]
    if len(paragraph) < 2 or paragraph[0].startswith((" ", "\t")) or paragraph[0].rstrip().endswith("::"):
        return lines
    if all(not line.startswith((" ", "\t")) for line in paragraph):
        return lines
    return [line.strip() for line in paragraph] + lines[end:]


def _table_is_valid(block: list[str]) -> bool:
    try:
        publish_doctree("\n".join(block), settings_overrides={"report_level": 5, "halt_level": 3, "warning_stream": False})
    except SystemMessage:
        return False
    return True


def _preformat_bad_tables(lines: list[str]) -> list[str]:
    result: list[str] = []
    index = 0
    while index < len(lines):
        if not TABLE_BORDER.match(lines[index]):
            result.append(lines[index])
            index += 1
            continue
        borders = [index]
        end = index + 1
        while end < len(lines) and len(borders) < 3 and lines[end].strip():
            if TABLE_BORDER.match(lines[end]):
                borders.append(end)
            end += 1
        block = lines[index:end]
        if len(borders) == 3 and _table_is_valid([line.strip() and line for line in block]):
            result.extend(block)
        else:
            result.extend(["::", ""] + ["    " + line for line in block] + [""])
        index = end
    return result


def _literal_mask(lines: list[str]) -> list[bool]:
    """True for the lines of literal blocks (after a line ending in ``::``), which are shown as written."""
    mask, opener = [], None  # indent of the line that opened the current literal block
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if opener is not None and line.strip() and indent <= opener:
            opener = None
        mask.append(opener is not None)
        if opener is None and line.rstrip().endswith("::"):
            opener = indent
    return mask


def process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    package = _package_of(what, name, obj)
    fixed = _preformat_bad_tables(_join_first_paragraph(list(lines)))
    mask = _literal_mask(fixed)
    lines[:] = [line if literal else _absolute_refs(_escape_bars(line), package)
                for line, literal in zip(fixed, mask)]


SINGLE_BACKQUOTED = re.compile(r"(?<![`:])`([^`]+)`(?!`)")


def process_click_text(app, ctx, lines: list[str]) -> None:
    """Click help is plain text: ``*`` and ``|`` are literal there, and `name` means code."""
    fixed = []
    for line in lines:
        line = SINGLE_BACKQUOTED.sub(r"``\1``", line)
        parts = LITERAL.split(line)
        fixed.append("".join(part if index % 2 else part.replace("*", r"\*").replace("|", r"\|")
                             for index, part in enumerate(parts)))
    lines[:] = fixed


def setup(app):
    app.connect("autodoc-process-docstring", process_docstring)
    for part in ("description", "options", "arguments", "epilog"):
        app.connect(f"sphinx-click-process-{part}", process_click_text)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
