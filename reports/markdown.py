"""The Markdown subset that our report templates write, turned into HTML.

Blocks: ``#``..``####`` headings, paragraphs, ``- `` lists, ``> `` quotes, pipe tables, images. Inline:
``**bold**``, ```code```, ``[text](http…)`` links, ``![alt](src)`` images, backslash escapes.

Why by hand: no Markdown library is in requirements.lock, and the subset is small. Safety: every character that is
not part of one of these constructs is HTML-escaped; entities already present are kept (the templates' autoescape
writes run names as ``&lt;…&gt;``, which Markdown viewers show as text too); links accept only http(s)
addresses; an image source becomes whatever ``image_src`` returns (build.py: a data: URI of a checked PNG).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SPECIAL = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);|[&<>\"']")
_REPLACE = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
_INLINE = re.compile(
    r"\\([\\`*_\[\]()#|!<>&{}.+-])"          # 1: backslash escape
    r"|`([^`]+)`"                              # 2: code
    r"|\*\*(.+?)\*\*"                          # 3: bold
    r"|!\[([^\]]*)\]\(([^)\s]+)\)"             # 4, 5: image
    r"|\[((?:\\.|[^\]])+)\]\(([^)\s]+)\)")     # 6, 7: link
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")

ImageSrc = Callable[[str], str]


def escape(text: str) -> str:
    """HTML-escape, keeping entities that are already there (so nothing is escaped twice)."""
    return _SPECIAL.sub(lambda m: _REPLACE.get(m.group(0), m.group(0)), text)


def inline(text: str, image_src: ImageSrc) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append(escape(m.group(1)))
        elif m.group(2) is not None:
            out.append(f"<code>{escape(m.group(2))}</code>")
        elif m.group(3) is not None:
            out.append(f"<strong>{inline(m.group(3), image_src)}</strong>")
        elif m.group(5) is not None:
            out.append(f'<img alt="{escape(m.group(4))}" src="{escape(image_src(m.group(5)))}">')
        else:
            label, url = inline(m.group(6), image_src), m.group(7)
            linked = re.match(r"https?://", url) or re.fullmatch(r"#[a-z0-9-]+", url)  # a page, or a heading here
            out.append(f'<a href="{escape(url)}">{label}</a>' if linked else label)
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip() for c in _CELL_SPLIT.split(line)]


def _starts_block(lines: list[str], i: int) -> bool:
    line = lines[i]
    return (bool(re.match(r"#{1,4}\s", line)) or line.startswith(("- ", ">", "![")) or
            (line.startswith("|") and i + 1 < len(lines) and bool(_TABLE_RULE.match(lines[i + 1]))))


def slug(heading: str) -> str:
    """The anchor of a heading: lower-case ASCII letters and digits joined by dashes (GitHub's, for ASCII titles)."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")[:60]


CONTENTS_MARKER = "[[contents]]"


def with_contents(md: str) -> str:
    """Replace the line ``[[contents]]`` by a list of links to the ``##`` headings that follow it."""
    lines = md.splitlines()
    if CONTENTS_MARKER not in lines:
        return md
    at = lines.index(CONTENTS_MARKER)
    headings = [line[3:].strip() for line in lines[at + 1:] if line.startswith("## ")]
    entries = [f"- [{h}](#{slug(h)})" for h in headings]
    return "\n".join(lines[:at] + entries + lines[at + 1:]) + ("\n" if md.endswith("\n") else "")


def to_html(md: str, image_src: ImageSrc) -> str:
    """HTML body for the Markdown subset above."""
    lines, out, i = md.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif m := re.match(r"(#{1,4})\s+(.*)", line):
            level = len(m.group(1))
            out.append(f'<h{level} id="{escape(slug(m.group(2)))}">{inline(m.group(2), image_src)}</h{level}>')
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            head = "".join(f"<th>{inline(c, image_src)}</th>" for c in _cells(line))
            body, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                body.append("<tr>" + "".join(f"<td>{inline(c, image_src)}</td>" for c in _cells(lines[i])) + "</tr>")
                i += 1
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and (lines[i].startswith("- ") or (items and lines[i].startswith("  "))):
                if lines[i].startswith("- "):
                    items.append(lines[i][2:])
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append("<ul>" + "".join(f"<li>{inline(t, image_src)}</li>" for t in items) + "</ul>")
        elif line.startswith(">"):
            quoted = []
            while i < len(lines) and lines[i].startswith(">"):
                quoted.append(lines[i][1:].removeprefix(" "))
                i += 1
            out.append(f"<blockquote>{to_html(chr(10).join(quoted), image_src)}</blockquote>")
        else:
            para = [line]
            i += 1
            while i < len(lines) and lines[i].strip() and not _starts_block(lines, i):
                para.append(lines[i])
                i += 1
            text = " ".join(p.strip() for p in para)
            tag = "figure" if re.fullmatch(r"!\[[^\]]*\]\([^)\s]+\)", text) else "p"
            out.append(f"<{tag}>{inline(text, image_src)}</{tag}>")
    return "\n".join(out)
