"""References in the repository's text files resolve inside the repository.

Docstrings, comments, help texts, README and benchmark records cite the method and the reference
settings as ``docs/<file>.md``, ``docs/<file>.md#<anchor>`` or ``docs/<file>.md, section N``. These
tests fail when such a citation names a file, anchor or section that does not exist, when a relative
Markdown link is dead, when a ``*.md`` file is named that the repository does not hold, when a file
points at the folder shared by the machines this project was developed on (outside the repository,
absent on a user's machine), or when a file cites a tracker number instead of saying what it means.

The scan covers the tracked text files (``git ls-files``; a walk of the tree where git is absent, as in
an unpacked sdist), except this file, and reads each file once: well under a second.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SKIP_DIRS = {".git", "build", "dist", "runs", "__pycache__", ".venv", ".eggs", ".pytest_cache", ".hypothesis"}
_MAX_BYTES = 4 << 20

# This file itself is not scanned: its examples of what the scans catch would be reported.
_SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()
_OUTSIDE = re.compile(r"\.\./shared\b|/work/shared\b")
_TRACKER = re.compile(r"\bissues?\s*#?\s*\d+\b|(?<![\w&/#])#\d{1,5}(?![\w#])", re.IGNORECASE)
_DOCS_REF = re.compile(r"(?<![\w/.-])(docs/[\w./-]*?\.md)(#[\w-]+)?")
_SECTION_REF = re.compile(r"(docs/[\w./-]*?\.md),?\s+sections?\s+(\d+(?:\.\d+)*(?:\s*(?:-|and|,)\s*\d+(?:\.\d+)*)*)")
# Project documents are named in capitals (README.md, CONTRIBUTING.md); lower-case names are mostly outputs.
_MD_NAME = re.compile(r"(?<![\w.-])((?:[\w.-]+/)*[A-Z][A-Z0-9_-]*\.md)\b(?![\w-])")
_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_EXPLICIT_ANCHOR = re.compile(r"""<a\s+(?:id|name)\s*=\s*["']([^"']+)["']|\{#([\w-]+)\}""")
_SECTION_NUMBER = re.compile(r"^(\d+(?:\.\d+)*)\.?\s")


@cache
def text_files() -> tuple[tuple[str, str], ...]:
    """``(path relative to ROOT, text)`` of every tracked text file."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
        paths = [p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.is_file() and not _SKIP_DIRS.intersection(p.relative_to(ROOT).parts)]
    files = []
    for rel in sorted(paths):
        path = ROOT / rel
        if rel == _SELF or not path.is_file() or path.stat().st_size > _MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (images, compiled extensions)
        files.append((rel, data.decode("utf-8", errors="replace")))
    assert files, f"no text files found under {ROOT}"
    return tuple(files)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def markdown_targets(rel: str) -> tuple[frozenset, frozenset]:
    """``(anchors, section numbers)`` of a Markdown file: explicit ids, heading slugs, numbered headings."""
    text = (ROOT / rel).read_text(encoding="utf-8")
    anchors, sections, seen = set(), set(), {}
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        for explicit in _EXPLICIT_ANCHOR.finditer(line):
            anchors.add(explicit.group(1) or explicit.group(2))
        heading = _HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
            number = _SECTION_NUMBER.match(heading.group(2))
            if number:
                sections.add(number.group(1))
    return frozenset(anchors), frozenset(sections)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _tracked_names() -> tuple[set, set]:
    rels = {rel for rel, _ in text_files()}
    return rels, {Path(rel).name for rel in rels}


def _check_target(rel_target: str, anchor: str | None, where: str, problems: list) -> None:
    target = ROOT / rel_target
    if not target.is_file():
        problems.append(f"{where}: {rel_target} does not exist")
    elif anchor and rel_target.endswith(".md") and anchor not in markdown_targets(rel_target)[0]:
        problems.append(f"{where}: {rel_target} has no anchor #{anchor}")


def test_no_paths_outside_the_repository():
    problems = [f"{rel}:{_line_of(text, m.start())}: {m.group(0)!r}"
                for rel, text in text_files() for m in _OUTSIDE.finditer(text)]
    assert not problems, ("files point at a folder outside the repository (absent on a user's machine); "
                          "name the data set or the setting instead:\n" + "\n".join(problems))


def test_no_tracker_numbers():
    problems = [f"{rel}:{_line_of(text, m.start())}: {m.group(0)!r}"
                for rel, text in text_files() for m in _TRACKER.finditer(text)]
    assert not problems, ("files cite tracker numbers; say what the requirement is, or cite docs/ instead:\n"
                          + "\n".join(problems))


def test_docs_references_resolve():
    problems: list[str] = []
    cited = 0
    for rel, text in text_files():
        for m in _DOCS_REF.finditer(text):
            cited += 1
            anchor = m.group(2)[1:] if m.group(2) else None
            _check_target(m.group(1), anchor, f"{rel}:{_line_of(text, m.start())}", problems)
        for m in _SECTION_REF.finditer(text):
            target, where = m.group(1), f"{rel}:{_line_of(text, m.start())}"
            if not (ROOT / target).is_file():
                continue  # reported above
            sections = markdown_targets(target)[1]
            for number in re.findall(r"\d+(?:\.\d+)*", m.group(2)):
                if number not in sections:
                    problems.append(f"{where}: {target} has no section {number}")
    assert cited, "no docs/ citations found: the scan is not reading the files it should"
    assert not problems, "dead references to docs/:\n" + "\n".join(problems)


def test_markdown_links_resolve():
    problems: list[str] = []
    for rel, text in text_files():
        if not rel.endswith(".md"):
            continue
        base = Path(rel).parent
        for m in _MD_LINK.finditer(text):
            link = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.IGNORECASE):
                continue  # http:, https:, mailto:
            path, _, anchor = link.partition("#")
            target = rel if not path else str((base / path).as_posix())
            target = str(Path(target).as_posix())
            where = f"{rel}:{_line_of(text, m.start())}"
            resolved = (ROOT / target).resolve()
            if ROOT not in resolved.parents and resolved != ROOT:
                problems.append(f"{where}: link {link!r} leaves the repository")
                continue
            _check_target(str(resolved.relative_to(ROOT)), anchor or None, where, problems)
    assert not problems, "dead Markdown links:\n" + "\n".join(problems)


def test_named_markdown_files_exist():
    """A project document named anywhere (``README.md``, ``docs/X.md``) is a file of the repository."""
    rels, names = _tracked_names()
    problems = []
    for rel, text in text_files():
        for m in _MD_NAME.finditer(text):
            name = m.group(1)
            if "/" in name:
                found = (name in rels or (Path(rel).parent / name).as_posix() in rels
                         or any(r.endswith("/" + name) for r in rels))
            else:
                found = name in names
            if not found:
                problems.append(f"{rel}:{_line_of(text, m.start())}: {name}")
    assert not problems, "files name Markdown files the repository does not hold:\n" + "\n".join(problems)


@pytest.mark.parametrize("heading, slug", [
    ("2.5 Collaborative regularizer `L_CF`", "25-collaborative-regularizer-l_cf"),
    ("1. Pipeline", "1-pipeline"),
    ("Notes: a, b & c", "notes-a-b--c"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_checks_catch_what_they_should(tmp_path):
    """The patterns flag the references they exist for (so the scans above can fail)."""
    assert _OUTSIDE.search("data in .." + "/shared/data") and _OUTSIDE.search("/work/" + "shared/data/x")
    assert not _OUTSIDE.search("shared/data next to the checkout")
    # the examples are built from parts so that this file itself holds no tracker or outside-file reference
    word, number = "".join(("is", "sue")), "#" + str(12)
    for text in (f"see {word} 5", f"({word.capitalize()} {number})", f"fixed in {number}."):
        assert _TRACKER.search(text), text
    for text in ('color="#999999"', "&#123;", "# 1. heading", "row #"):
        assert not _TRACKER.search(text), text
    assert _DOCS_REF.search("(docs/method.md#sinkhorn)").groups() == ("docs/method.md", "#sinkhorn")
    assert _SECTION_REF.search("docs/method.md, sections 2.5-2.6").group(2) == "2.5-2.6"
    name = "METH" + "OD.md"
    assert _MD_NAME.search(f"cite {name} section 2").group(1) == name
    assert not _MD_NAME.search("writes metrics.md")


def test_dead_anchor_and_section_are_reported():
    anchors, sections = markdown_targets("docs/method.md")
    assert {"sinkhorn", "cf-regularizer", "2-the-item-tokenizer"} <= anchors and "2.5" in sections
    problems: list[str] = []
    _check_target("docs/method.md", "no-such-anchor", "here", problems)
    _check_target("docs/no_such_file.md", None, "there", problems)
    _check_target("docs/method.md", "sinkhorn", "fine", problems)
    assert problems == ["here: docs/method.md has no anchor #no-such-anchor",
                        "there: docs/no_such_file.md does not exist"]
