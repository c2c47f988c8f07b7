"""Reading records from JSONL, JSON, CSV and Parquet files, folders of them, or a hub data set.

Every record comes with its source, ``file:line`` (or ``file:row N`` for Parquet), so a problem
found later is reported where the user can fix it.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_HUB_NAME = re.compile(r"^(hub:)?[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Problems:
    """Invalid records: raised at once, or (``skip=True``) counted and a few kept for display."""

    skip: bool = False
    count: int = 0
    samples: list[str] = field(default_factory=list)

    def report(self, where: str, problem: str) -> None:
        """Record that the record at ``where`` is invalid because of ``problem``.

        Raises:
            DataError: unless ``skip`` is set.
        """
        message = f"{where}: {problem}"
        if not self.skip:
            raise DataError(f"{message} (fix the record, or pass --skip-invalid to skip it)")
        self.count += 1
        if len(self.samples) < 10:
            self.samples.append(message)


@dataclass(frozen=True)
class Record:
    """One raw record, where it came from (``file:line``), and its file (or data set name)."""

    source: str
    data: dict
    file: str = ""


def read_records(path: str, problems: Problems) -> Iterator[Record]:
    """Yield the records of a file, a folder of files, or a hub data set name.

    Args:
        path: a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file, a folder holding such files
            (read recursively, in sorted order), or a hub data set name (``owner/name`` or
            ``hub:owner/name``, train split) when no such local path exists.
        problems: where invalid records go (raised or counted).

    Raises:
        DataError: the path does not exist, a file is empty or unreadable, or (unless skipping)
            a record is invalid.
    """
    local = Path(path).expanduser()
    if local.is_dir():
        files = data_files(local)
        if not files:
            raise DataError(
                f"{local}: the folder holds no data files ({', '.join(SUFFIXES)}); "
                "point --data at a file or a folder of them"
            )
        for file in files:
            yield from read_file(file, problems)
    elif local.is_file():
        yield from read_file(local, problems)
    elif _HUB_NAME.match(path) and not path.lower().endswith(SUFFIXES):
        yield from read_hub(path.removeprefix("hub:"))
    else:
        raise DataError(f"{path}: no such file or folder; check the path")


def data_files(folder: Path) -> list[Path]:
    """The data files a folder holds, as ``read_records`` reads them: files with a data suffix
    (``SUFFIXES``), in sorted order, recursively, skipping hidden files and anything inside a
    hidden folder (``.git``, ``.ipynb_checkpoints`` copies would otherwise be read twice).
    """
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_file(path: Path, problems: Problems) -> Iterator[Record]:
    """Yield the records of one file, chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _read_parquet(path)
        return
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err})") from err
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; add records or remove the file")
    if suffix == ".jsonl":
        yield from _read_jsonl(path, raw, problems)
    elif suffix == ".json":
        yield from _read_json(path, _decode_whole(path, raw), problems)
    elif suffix == ".csv":
        yield from _read_csv(path, _decode_whole(path, raw))
    else:
        raise DataError(
            f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}"
        )


def _decode_whole(path: Path, raw: bytes) -> str:
    """Decode a whole file as UTF-8 (a BOM is allowed), naming the line of a bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: invalid UTF-8 (byte 0x{raw[err.start]:02x}); re-save the file as UTF-8"
        ) from err


def _read_jsonl(path: Path, raw: bytes, problems: Problems) -> Iterator[Record]:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.report(where, f"invalid UTF-8 (byte 0x{line[err.start]:02x})")
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            problems.report(where, f"invalid JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(data, dict):
            problems.report(where, f"expected a JSON object, got {type(data).__name__}")
            continue
        yield Record(where, data, str(path))


def _read_json(path: Path, text: str, problems: Problems) -> Iterator[Record]:
    """A JSON array of objects (or ``{"data": [...]}``), each reported at its starting line."""
    newlines = [match.start() for match in re.finditer("\n", text)]

    def line_of(offset: int) -> int:
        return bisect.bisect_left(newlines, offset) + 1

    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        items = document["data"]
        starts = [None] * len(items)
    elif isinstance(document, list):
        items = document
        starts = _item_offsets(text)
    else:
        raise DataError(
            f"{path}:1: expected a JSON array of records (or an object with a 'data' array); "
            "for one record per line use a .jsonl file"
        )
    for index, item in enumerate(items):
        offset = starts[index] if index < len(starts) else None
        where = f"{path}:{line_of(offset)}" if offset is not None else f"{path}:item {index + 1}"
        if not isinstance(item, dict):
            problems.report(where, f"expected a JSON object, got {type(item).__name__}")
            continue
        yield Record(where, item, str(path))


def _item_offsets(text: str) -> list[int]:
    """Character offsets where each top-level array item starts (the array is valid JSON)."""
    decoder = json.JSONDecoder()
    offsets = []
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return offsets
        offsets.append(position)
        _, position = decoder.raw_decode(text, position)


def _read_csv(path: Path, text: str) -> Iterator[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise DataError(f"{path}:1: no header row; the first line must name the columns")
    start = 2
    for row in reader:
        where = f"{path}:{start}"
        start = reader.line_num + 1
        if None in row:
            raise DataError(f"{where}: more values than header columns; quote fields with commas")
        yield Record(where, {k: v for k, v in row.items() if v is not None}, str(path))


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the Parquet file ({err})") from err
    if table.num_rows == 0:
        raise DataError(f"{path}: the file is empty; add records or remove the file")
    for index, row in enumerate(table.to_pylist(), start=1):
        yield Record(f"{path}:row {index}", row, str(path))


def read_hub(name: str, split: str = "train") -> Iterator[Record]:
    """Yield the records of a hub data set (needs the ``datasets`` package and network access).

    Raises:
        DataError: ``datasets`` is missing, or the data set cannot be fetched (offline, unknown).
    """
    try:
        import datasets
    except ImportError as err:
        raise DataError(
            f"{name}: not a local file or folder; to load it as a hub data set install the "
            "'hub' extra (pip install 'tuneforge[hub]')"
        ) from err
    try:
        dataset = datasets.load_dataset(name, split=split)
    except (OSError, ValueError, ConnectionError, FileNotFoundError) as err:
        raise DataError(
            f"{name}: not a local file or folder, and the hub data set cannot be loaded "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check the "
            "path, or the name and network access (HF_HUB_OFFLINE must be unset)"
        ) from err
    for index, row in enumerate(dataset, start=1):
        yield Record(f"{name}:row {index}", dict(row), name)
