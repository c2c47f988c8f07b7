"""Parsing files into located sections; bad files are skipped with a reason."""

from __future__ import annotations

import json

import pytest
from rag_samples import minimal_pdf, write_docs

from tuneforge.errors import DataError
from tuneforge.rag.parsing import Document, SkippedFile, iter_files, parse_file


def test_markdown_sections_follow_headings(tmp_path):
    path = tmp_path / "guide.md"
    path.write_text("Intro line.\n\n# Guide\n\nHello.\n\n## Pricing\n\nIt costs 5 euros.\n")
    doc = parse_file(path)
    assert isinstance(doc, Document)
    assert doc.title == "Guide"
    assert [s.location for s in doc.sections] == ["top", "§ Guide", "§ Pricing"]
    assert doc.sections[2].text == "## Pricing\n\nIt costs 5 euros."
    for section in doc.sections:  # offsets index the document's full text
        assert doc.text[section.offset : section.offset + len(section.text)] == section.text


def test_html_drops_scripts_and_keeps_headings(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>The Page</title><style>p {}</style></head><body>"
        "<h1>Top</h1><p>First  para.</p><script>var x = 1;</script><h2>Part B</h2><p>Second.</p>"
        "</body></html>"
    )
    doc = parse_file(path)
    assert doc.title == "The Page"
    assert [s.location for s in doc.sections] == ["§ Top", "§ Part B"]
    assert "First para." in doc.text and "var x" not in doc.text and "p {}" not in doc.text


def test_pdf_pages_become_sections(tmp_path):
    path = tmp_path / "manual.pdf"
    path.write_bytes(minimal_pdf(["The pump runs at 40 bar.", "Service every 90 days."]))
    doc = parse_file(path)
    assert [s.location for s in doc.sections] == ["page 1", "page 2"]
    assert "40 bar" in doc.sections[0].text and "90 days" in doc.sections[1].text


def test_jsonl_uses_the_named_field_and_reports_bad_lines(tmp_path):
    path = tmp_path / "notes.jsonl"
    lines = [json.dumps({"body": "Alpha fact."}), "{not json", json.dumps({"other": 1}), ""]
    path.write_text("\n".join(lines))
    doc = parse_file(path, text_field="body")
    assert [s.location for s in doc.sections] == ["line 1"]
    assert any("line 2" in w and "invalid JSON" in w for w in doc.warnings)
    assert any("line 3" in w and "'body'" in w for w in doc.warnings)
    skipped = parse_file(path, text_field="missing")
    assert isinstance(skipped, SkippedFile) and "--text-field" in skipped.reason


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("blob.txt", b"abc\x00\x01\x02def", "binary"),
        ("latin.md", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("empty.txt", b"   \n\n", "no text"),
        ("image.png", b"\x89PNG\r\n", "unsupported file type .png"),
        ("broken.pdf", b"%PDF-1.4 garbage", "PDF"),
    ],
)
def test_bad_files_are_skipped_with_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    result = parse_file(path)
    assert isinstance(result, SkippedFile)
    assert reason in result.reason


def test_hash_changes_with_content_only(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one")
    first = parse_file(path).content_hash
    assert parse_file(path).content_hash == first
    path.write_text("two")
    assert parse_file(path).content_hash != first


def test_folder_walk_skips_hidden_and_missing_path_is_an_error(tmp_path):
    write_docs(tmp_path, {"a.md": "# A", ".git/x.md": "# X", "sub/b.txt": "b"})
    names = sorted(path.name for path, _ in iter_files([tmp_path]))
    assert names == ["a.md", "b.txt"]
    with pytest.raises(DataError, match="no such file"):
        list(iter_files([tmp_path / "nope"]))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_are_decoded(tmp_path, encoding):
    """A UTF-16 file (Windows Notepad's "Unicode") used to be skipped as binary."""
    path = tmp_path / "notes.txt"
    text = "Garantie\n\nDie Pumpe hat zwei Jahre Garantie. 保修期为两年。"
    bom = {"utf-16-be": "\ufeff"}.get(encoding, "")  # utf-16 and utf-32 write their own BOM
    path.write_bytes((bom + text).encode(encoding))
    doc = parse_file(path)
    assert isinstance(doc, Document), doc
    assert doc.text == text and doc.title == "Garantie" and not doc.warnings


def test_nul_bytes_in_utf8_text_are_dropped_with_a_warning(tmp_path):
    """One NUL byte used to skip a whole UTF-8 file as binary."""
    path = tmp_path / "log.md"
    body = "# Log\n\n" + "The pump ran fine today. " * 400
    path.write_bytes(body.encode()[:500] + b"\x00" + body.encode()[500:])
    doc = parse_file(path)
    assert isinstance(doc, Document)
    assert doc.text == body.strip()
    assert doc.warnings == [f"{path}: 1 NUL byte removed (the rest of the file is text)"]
