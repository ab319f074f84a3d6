"""Rebuild ``techdocs.txt.xz`` (the larger shipped corpus) from five Debian documentation packages.

Input: the folders that ``dpkg -x`` unpacks from postgresql-doc-15, python3.11-doc, sqlite3-doc,
python-django-doc and python-sqlalchemy-doc (see README.md here for the exact commands). Each HTML
page becomes one document: the text of its prose blocks (paragraphs, list items, headings, table
cells, definitions), one block per line, inline code kept as text; code blocks (pre), scripts,
styles and navigation are dropped, so are blocks under 8 words and any block that occurs on more than one
page (menus, footers). Index pages (file names containing "index") and pages with under 500
characters left are dropped. Output: documents
separated by one blank line, UTF-8, xz-compressed. Standard library only; deterministic.

Usage: python build_techdocs.py OUT.txt.xz FOLDER [FOLDER ...]
"""

from __future__ import annotations

import collections
import html.parser
import lzma
import re
import sys
from pathlib import Path

BLOCKS = {"p", "li", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "blockquote",
          "caption", "figcaption"}
DROPPED = {"script", "style", "pre", "nav", "head"}
DROPPED_DIV_CLASSES = ("sphinxsidebar", "related", "footer", "navheader", "navfooter", "toc", "highlight")
VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base", "source"}
MIN_WORDS, MIN_CHARS = 8, 500


class ProseExtractor(html.parser.HTMLParser):
    """Collects the text of prose blocks outside dropped elements, one string per block."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._text: list[str] = []
        self._open: list[tuple[str, bool]] = []  # (tag, dropped) for every open element
        self._dropped = 0

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        classes = dict(attrs).get("class") or ""
        dropped = tag in DROPPED or (tag == "div" and any(c in classes for c in DROPPED_DIV_CLASSES))
        self._open.append((tag, dropped))
        self._dropped += dropped
        if tag in BLOCKS:
            self.flush()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if any(t == tag for t, _ in self._open):  # close up to the matching tag (sloppy HTML)
            while self._open:
                t, dropped = self._open.pop()
                self._dropped -= dropped
                if t == tag:
                    break
        if tag in BLOCKS:
            self.flush()

    def handle_data(self, data):
        if not self._dropped:
            self._text.append(data)

    def flush(self):
        block = re.sub(r"\s+", " ", " ".join(self._text)).strip()
        self._text = []
        if len(block.split()) >= MIN_WORDS:
            self.blocks.append(block)


def page_blocks(path: Path) -> list[str]:
    parser = ProseExtractor()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.flush()
    return parser.blocks


def build(folders: list[str]) -> list[str]:
    files = [p for folder in folders for p in sorted(Path(folder).rglob("*.htm*")) if "index" not in p.name]
    pages = [page_blocks(p) for p in files]
    counts = collections.Counter(b for blocks in pages for b in set(blocks))
    docs = []
    for blocks in pages:
        kept = [b for b in blocks if counts[b] == 1]
        if sum(map(len, kept)) >= MIN_CHARS:
            docs.append("\n".join(kept))
    return docs


def main(out: str, folders: list[str]) -> None:
    docs = build(folders)
    text = "\n\n".join(docs) + "\n"
    with lzma.open(out, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
        f.write(text)
    print(f"{len(docs)} documents, {len(text.split())} words, {len(text)} characters -> {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
