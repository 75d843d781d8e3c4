"""Small building blocks of the report's HTML pages: a page, a table, formatted numbers.

Every page is self-contained (inline CSS, no JavaScript, no external resources), because
Snakemake embeds each one into the single report file. Every piece of text that comes from an
input file goes through :func:`escape`; only :class:`Html` values, built here from escaped
parts, are inserted as they are.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from segflow import __version__

__all__ = [
    "MISSING",
    "Html",
    "escape",
    "format_number",
    "format_vector",
    "heading",
    "page",
    "paragraph",
    "table",
]

#: What a table shows for a value that is absent or undefined (NaN).
MISSING = "n/a"

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 14px;
       color: #222; margin: 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.highlight td { background: #e3f4e1; font-weight: bold; }
span.n { color: #777; font-size: 0.85em; margin-left: 0.4em; }
p.note { color: #555; }
""".strip()


class Html(str):
    """Markup that is inserted as it is: build it only from escaped parts."""

    __slots__ = ()


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML elements and attribute values."""
    return html.escape(str(value), quote=True)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Real) and math.isnan(value))


def format_number(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (integers as they are); ``n/a`` for None or NaN."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.{digits}f}"
    return str(value)


def format_vector(values: Iterable[Any] | None, digits: int = 3) -> str:
    """``0.989 × 0.989`` for a spacing, ``24 × 56 × 56`` for a shape (whole floats as ints)."""
    if values is None:
        return MISSING
    parts = []
    for value in values:
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        parts.append(format_number(value, digits))
    return " × ".join(parts) if parts else MISSING


def _cell(value: Any, tag: str = "td", digits: int = 3) -> str:
    if isinstance(value, Html):
        return f"<{tag}>{value}</{tag}>"
    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
    text = escape(format_number(value, digits))
    return f'<{tag} class="num">{text}</{tag}>' if numeric else f"<{tag}>{text}</{tag}>"


def table(
    header: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    caption: str | None = None,
    highlight: Iterable[int] = (),
    digits: Sequence[int] | None = None,
) -> Html:
    """An HTML table; cells are escaped unless they are :class:`Html`, numbers are formatted
    by :func:`format_number` with ``digits[column]`` decimals (3 by default). Rows whose index
    is in ``highlight`` are emphasized."""
    marked = set(highlight)
    decimals = list(digits or [])
    lines = ["<table>"]
    if caption:
        lines.append(f"<caption>{escape(caption)}</caption>")
    lines.append("<thead><tr>" + "".join(_cell(h, "th") for h in header) + "</tr></thead>")
    lines.append("<tbody>")
    for index, row in enumerate(rows):
        opening = '<tr class="highlight">' if index in marked else "<tr>"
        cells = [
            _cell(value, digits=decimals[i] if i < len(decimals) else 3)
            for i, value in enumerate(row)
        ]
        lines.append(opening + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return Html("\n".join(lines))


def heading(text: str, level: int = 2) -> Html:
    return Html(f"<h{level}>{escape(text)}</h{level}>")


def paragraph(text: str | Html, note: bool = False) -> Html:
    body = text if isinstance(text, Html) else escape(text)
    return Html(f'<p class="note">{body}</p>' if note else f"<p>{body}</p>")


def page(title: str, parts: Iterable[str]) -> str:
    """A whole HTML document: ``title`` as its title and first heading, then ``parts`` (each
    already markup, e.g. from :func:`table`), and last the segflow version that wrote it."""
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>\n{_STYLE}\n</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n{body}\n"
        f'<p class="note">Written by segflow {escape(__version__)}.</p>\n</body>\n</html>\n'
    )
