"""Rebuild ``kjv.txt.xz`` (the shipped default corpus) from Debian's ``bible-kjv`` packages.

Input: the plain-text dump printed by the ``bible`` program of Debian's ``bible-kjv`` package
reading the data of ``bible-kjv-text`` (see README.md here for the exact commands). Output: one
document per chapter (1,189), one verse per line without its number, documents separated by one
blank line, UTF-8, xz-compressed.

Usage: python build_kjv.py kjv_raw.txt kjv.txt.xz
"""

from __future__ import annotations

import lzma
import re
import sys

VERSE = re.compile(r"^\s+\d+ (.*)$")
HEADING = re.compile(r"^[1-3]? ?[A-Z][A-Za-z ]+ \d+$")


def chapters(lines: list[str]) -> list[list[str]]:
    """Split the dump into chapters, each a list of verses with wrapped lines re-joined."""
    docs: list[list[str]] = []
    for raw in lines:
        line = raw.rstrip()
        if not line:
            continue
        if HEADING.match(line):
            docs.append([])
        elif (verse := VERSE.match(line)) is not None:
            docs[-1].append(verse.group(1).strip())
        else:  # continuation of a verse wrapped by the dump's line width
            docs[-1][-1] += " " + line.strip()
    return docs


def main(src: str, dst: str) -> None:
    with open(src, encoding="ascii") as f:
        docs = chapters(f.readlines())
    text = "\n\n".join("\n".join(doc) for doc in docs) + "\n"
    with lzma.open(dst, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
        f.write(text)
    print(f"{len(docs)} chapters, {sum(map(len, docs))} verses, {len(text)} characters -> {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
