"""Reading documents: files and folders in, plain-text sections with their locations out.

Supported: ``.txt``, ``.md``/``.markdown``, ``.html``/``.htm``, ``.pdf``, ``.jsonl`` (one named
text field per line). A document is one file; its sections are the units a location points to
(a Markdown or HTML heading, a PDF page, a JSONL line). Text files are UTF-8, or UTF-16/UTF-32
with a byte-order mark. Files that cannot be read (binary, another encoding, encrypted, no
text) are reported as skipped with a reason, never silently dropped; a few stray NUL bytes in
a text file are removed, with a warning, and the rest is kept.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from tuneforge.errors import DataError

SUPPORTED_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl"}
# Byte-order marks, longest first (the UTF-32-LE mark begins with the UTF-16-LE one).
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
# Control bytes that plain text does not hold (tab, newlines, form feed, escape excepted).
_CONTROL_BYTES = bytes(set(range(32)) - {9, 10, 11, 12, 13, 27})
# Above this share of control bytes a "text" file is binary (binary formats are full of them;
# UTF-16 without a byte-order mark is half NULs); below, NULs are stray and removed.
_BINARY_CONTROL_SHARE = 0.10


@dataclass
class Section:
    """A located piece of a document.

    Attributes:
        text: the section's text, heading line included.
        location: where it is in the source, for citations ("page 3", "# Pricing", "line 12").
        offset: character offset of ``text`` inside the document's full text.
    """

    text: str
    location: str
    offset: int = 0


@dataclass
class Document:
    """One source file, parsed.

    Attributes:
        source: absolute path of the file.
        title: the first heading, HTML/PDF title, or the file name.
        content_hash: ``sha256:<hex>`` of the file's bytes and the parse options.
        sections: the text in reading order; ``offset`` values index into ``text``.
        warnings: parts of the file that were left out (a bad JSONL line), for the user.
    """

    source: str
    title: str
    content_hash: str
    sections: list[Section] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The full text: sections joined by a blank line (what section offsets index)."""
        return "\n\n".join(section.text for section in self.sections)


@dataclass
class SkippedFile:
    """A file left out of an ingest, and why (shown to the user as a warning)."""

    path: str
    reason: str


def document_id(source: str) -> str:
    """A stable id for a document: 16 hex digits of the SHA-256 of its absolute path."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def iter_files(paths: Iterable[Path | str]) -> Iterator[tuple[Path, Path | None]]:
    """Every file under ``paths``, as ``(file, root)``; ``root`` is the folder it was found in.

    Hidden files and folders (names starting with '.') inside a folder are not visited.

    Raises:
        DataError: a path does not exist.
    """
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if child.is_file() and not any(p.startswith(".") for p in relative.parts):
                    yield child, path
        elif path.exists():
            yield path, None
        else:
            raise DataError(f"{raw}: no such file or folder; check the path")


def parse_file(path: Path, text_field: str = "text") -> Document | SkippedFile:
    """Parse one file into a Document, or say why it was skipped.

    Args:
        path: the file (absolute).
        text_field: for ``.jsonl`` files, the field holding each line's text.
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
        return SkippedFile(str(path), f"unsupported file type {suffix or '(none)'}; use {kinds}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        return SkippedFile(str(path), f"unreadable ({err.strerror or err})")
    notes: list[str] = []
    options = json.dumps({"text_field": text_field}) if suffix == ".jsonl" else ""
    content_hash = "sha256:" + hashlib.sha256(raw + options.encode()).hexdigest()
    if suffix == ".pdf":
        result = _parse_pdf(path, raw)
    else:
        text = _decode_text(raw, path, notes)
        if isinstance(text, SkippedFile):
            return text
        if suffix in (".md", ".markdown"):
            result = _parse_markdown(text, path)
        elif suffix in (".html", ".htm"):
            result = _parse_html(text, path)
        elif suffix == ".jsonl":
            result = _parse_jsonl(text, path, text_field, notes)
        else:
            result = _parse_plain(text, path)
    if isinstance(result, SkippedFile):
        return result
    title, sections = result
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        return SkippedFile(str(path), "no text found")
    offset = 0
    for section in sections:
        section.offset = offset
        offset += len(section.text) + 2  # the "\n\n" that Document.text puts between sections
    return Document(str(path), title, content_hash, sections, [f"{path}: {n}" for n in notes])


def _decode_text(raw: bytes, path: Path, notes: list[str]) -> str | SkippedFile:
    """The text of a text file: UTF-8, or UTF-16/32 with a byte-order mark.

    A file whose bytes are more than 10% control characters is binary. Below that, NUL bytes
    are stray (a crashed editor, a log written by a C program): they are removed with a note,
    rather than losing the whole file.
    """
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError as err:
                return SkippedFile(str(path), f"not valid {codec.upper()} text (byte {err.start})")
    controls = len(raw) - len(raw.translate(None, _CONTROL_BYTES))
    if controls > _BINARY_CONTROL_SHARE * len(raw):
        return SkippedFile(
            str(path),
            "binary content (NUL or other control bytes) in a text file; if it is UTF-16 "
            "text without a byte-order mark, convert it to UTF-8",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return SkippedFile(str(path), f"not UTF-8 text (byte {err.start}); convert it to UTF-8")
    nuls = text.count("\x00")
    if nuls:
        notes.append(
            f"{nuls} NUL byte{'s' if nuls > 1 else ''} removed (the rest of the file is text)"
        )
        text = text.replace("\x00", "")
    return text


def _first_line_title(text: str, path: Path) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:120]
    return path.stem


def _parse_plain(text: str, path: Path) -> tuple[str, list[Section]]:
    return _first_line_title(text, path), [Section(text.strip(), "text")]


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _parse_markdown(text: str, path: Path) -> tuple[str, list[Section]]:
    """Split at ATX headings (``#`` .. ``######``); each section starts with its heading line."""
    headings = list(_HEADING.finditer(text))
    title = next((m.group(2) for m in headings if len(m.group(1)) == 1), None)
    sections = []
    if not headings or headings[0].start() > 0:
        end = headings[0].start() if headings else len(text)
        sections.append(Section(text[:end].strip(), "top"))
    for i, match in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        sections.append(Section(text[match.start() : end].strip(), f"§ {match.group(2)}"))
    return title or _first_line_title(text, path), sections


class _HTMLText(HTMLParser):
    """Collects visible text, starting a new section at every h1-h6."""

    BLOCKS = frozenset(
        {"p", "div", "li", "br", "tr", "section", "article", "pre", "blockquote", "table"}
    )
    SKIP = frozenset({"script", "style", "noscript", "template", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.sections: list[list[str]] = [["", "top"]]
        self._skip = 0
        self._in_title = False
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = []
        elif tag in self.BLOCKS:
            self.sections[-1][0] += "\n\n"

    def handle_endtag(self, tag) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            heading = " ".join("".join(self._heading).split())
            self.sections.append([heading + "\n\n", f"§ {heading}"])
            self._heading = None
        elif tag in self.BLOCKS:
            self.sections[-1][0] += "\n\n"

    def handle_data(self, data) -> None:
        if self._in_title:
            self.title += data
        elif self._skip:
            return
        elif self._heading is not None:
            self._heading.append(data)
        else:
            self.sections[-1][0] += data


def _tidy(text: str) -> str:
    """Collapse runs of spaces inside lines and runs of blank lines (HTML/PDF extraction)."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _parse_html(text: str, path: Path) -> tuple[str, list[Section]]:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    sections = [Section(_tidy(body), location) for body, location in parser.sections]
    headings = [s.location[2:] for s in sections if s.location != "top"]
    title = " ".join(parser.title.split()) or (headings[0] if headings else path.stem)
    return title, sections


def _parse_pdf(path: Path, raw: bytes) -> tuple[str, list[Section]] | SkippedFile:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            return SkippedFile(str(path), "encrypted PDF; decrypt it first")
        pages = [_tidy(page.extract_text() or "") for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, OSError) as err:
        return SkippedFile(str(path), f"unreadable PDF ({err})")
    sections = [Section(text, f"page {i}") for i, text in enumerate(pages, start=1)]
    return meta_title.strip() or path.stem, sections


def _parse_jsonl(
    text: str, path: Path, text_field: str, problems: list[str]
) -> tuple[str, list[Section]] | SkippedFile:
    """One section per line holding a string ``text_field``; bad lines go to ``problems``."""
    sections = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"line {number}: invalid JSON ({err.msg})")
            continue
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            problems.append(f"line {number}: no string field {text_field!r}")
            continue
        sections.append(Section(value.strip(), f"line {number}"))
    if not sections and problems:
        return SkippedFile(
            str(path), f"{problems[0]}; pass the text field's name with --text-field"
        )
    return path.stem, sections
