"""``tuneforge rag ingest|search|ask|remove|stats``: a document store for grounded answers.

Everything printed from a document (text, paths, headings) passes through ``_printable``:
documents are untrusted, and an ANSI escape sequence in one must not drive the terminal.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from tuneforge.cli.options import HelpFormatter, add_model_options, add_sampling_options


def register(subparsers) -> None:
    rag = subparsers.add_parser(
        "rag",
        help="retrieval-augmented answers: ingest documents, search, ask with sources",
        formatter_class=HelpFormatter,
        epilog="examples:\n"
        "  tuneforge rag ingest --store kb docs/\n"
        '  tuneforge rag ask --store kb "How long is the warranty?"\n'
        "  tuneforge rag stats --store kb",
    )
    commands = rag.add_subparsers(dest="rag_command", metavar="COMMAND")
    rag.set_defaults(func=lambda args: (rag.print_help(), 2)[1])

    ingest = _command(
        commands,
        "ingest",
        "add or update documents (.txt .md .html .pdf .jsonl); unchanged ones are skipped",
        "tuneforge rag ingest --store kb docs/ notes.md\n"
        "  tuneforge rag ingest --store kb --text-field body data.jsonl",
    )
    ingest.add_argument("paths", nargs="+", help="files and folders to ingest")
    ingest.add_argument(
        "--embedding-model",
        default=None,
        help="embedding model for a new store: 'default' (bundled all-MiniLM-L6-v2), a "
        "sentence-transformers folder or a hub id; an existing store keeps its own",
    )
    ingest.add_argument(
        "--chunk-size", type=int, default=None, help="tokens per chunk (new store; 160)"
    )
    ingest.add_argument(
        "--overlap", type=int, default=None, help="overlap in tokens (new store; 32)"
    )
    ingest.add_argument("--text-field", default="text", help="text field of .jsonl files")
    ingest.set_defaults(func=run_ingest)

    search = _command(
        commands,
        "search",
        "show the chunks that best match a query",
        'tuneforge rag search --store kb --mode bm25 --top-k 3 "warranty claim form"',
    )
    _add_retrieval_options(search)
    search.add_argument("query", help="the search text")
    search.set_defaults(func=run_search)

    ask = _command(
        commands,
        "ask",
        "answer a question from the store, citing numbered sources",
        'tuneforge rag ask --store kb "How long is the warranty?"\n'
        '  tuneforge rag ask --store kb --adapter runs/x/adapter --top-k 3 "Who is the CTO?"',
    )
    _add_retrieval_options(ask)
    add_model_options(ask)
    ask.add_argument("--adapter", default=None, help="a LoRA adapter folder (PEFT format)")
    ask.add_argument(
        "--min-similarity",
        type=float,
        default=None,
        help="answer \"I don't know.\" without generating when no source's cosine similarity "
        "reaches this (default 0.3)",
    )
    add_sampling_options(ask)
    ask.add_argument("question", help="the question")
    ask.set_defaults(func=run_ask)

    remove = _command(
        commands,
        "remove",
        "delete a document (by path or id), or every document under a folder",
        "tuneforge rag remove --store kb docs/old-price-list.md",
    )
    remove.add_argument("target", help="a document path, a folder, or a document id")
    remove.set_defaults(func=run_remove)

    stats = _command(
        commands, "stats", "counts, embedding model and settings", "tuneforge rag stats --store kb"
    )
    stats.add_argument("--documents", action="store_true", help="also list every document")
    stats.set_defaults(func=run_stats)


def _command(commands, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name, help=help_text, formatter_class=HelpFormatter, epilog=f"example:\n  {example}"
    )
    parser.add_argument("--store", required=True, help="the store folder")
    return parser


def _add_retrieval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top-k", type=int, default=5, help="how many sources to retrieve")
    parser.add_argument(
        "--mode", default="hybrid", choices=["dense", "bm25", "hybrid"], help="retrieval mode"
    )
    parser.add_argument("--source", default=None, help="only search this file or folder")
    parser.add_argument(
        "--reranker", default=None, help="a cross-encoder folder or hub id to rerank with"
    )
    parser.add_argument(
        "--embedding-model",
        default=None,
        help="check that the store was built with this embedding model (default: use the "
        "store's own)",
    )


# C0 and C1 control characters (ESC starts ANSI sequences) and the bidirectional overrides
# that make text display in another order than it reads.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_LAYOUT = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _printable(text: str, keep_layout: bool = False) -> str:
    """``text`` safe to print: control characters shown as escapes (``\\x1b``, ``\\u202e``).

    Args:
        keep_layout: keep newlines and tabs (an answer's paragraphs).
    """
    return (_CONTROL_BUT_LAYOUT if keep_layout else _CONTROL).sub(_escape, text)


def _display_path(source: str) -> str:
    """A printable source path, relative to the working directory when it lies under it."""
    try:
        shown = os.path.relpath(source) if Path(source).is_relative_to(Path.cwd()) else source
    except ValueError:
        shown = source
    return _printable(shown)


def run_ingest(args: argparse.Namespace) -> int:
    from tuneforge.rag import RagStore

    store = RagStore(
        args.store,
        embedding_model=args.embedding_model,
        chunk_size=args.chunk_size,
        overlap=args.overlap,
    )
    # A bar on a terminal, a line every 10 s in a log.
    report = store.ingest(args.paths, text_field=args.text_field, progress=True)
    for line in report.warnings:
        print(f"warning: {_printable(line)}", file=sys.stderr)
    print(f"{report.summary()} · store: {store.stats().documents} documents")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from tuneforge.rag import RagStore

    store = RagStore.open(args.store, embedding_model=args.embedding_model, reranker=args.reranker)
    hits = store.search(args.query, top_k=args.top_k, mode=args.mode, source_filter=args.source)
    if not hits:
        print("no matches")
    for n, hit in enumerate(hits, start=1):
        text = _printable(" ".join(hit.text.split()))
        print(
            f"[{n}] {_display_path(hit.source)} ({_printable(hit.location)})  "
            f"score {hit.score:.4f}  similarity {hit.similarity:.3f}"
        )
        print(f"    {text[:300]}{'...' if len(text) > 300 else ''}")
    return 0


def run_ask(args: argparse.Namespace) -> int:
    from tuneforge.cli.options import load_model_from_options, settings_from_options
    from tuneforge.rag import MIN_SIMILARITY, RagStore, answer, parse_citations
    from tuneforge.rag.retrieval import check_query

    check_query(args.question)  # before a model loads for nothing
    store = RagStore.open(args.store, embedding_model=args.embedding_model, reranker=args.reranker)
    model, tokenizer, _ = load_model_from_options(args)
    result = answer(
        args.question,
        store,
        model,
        tokenizer,
        top_k=args.top_k,
        settings=settings_from_options(args),
        mode=args.mode,
        min_similarity=MIN_SIMILARITY if args.min_similarity is None else args.min_similarity,
        source_filter=args.source,
        client_system=args.system,
    )
    print(_printable(result.text, keep_layout=True))
    if not result.hits:
        print("\n(no source in the store is close enough to this question)")
        return 0
    cited = parse_citations(result.text, len(result.hits))
    print("\nSources:")
    for n, hit in enumerate(result.hits, start=1):
        mark = "*" if n in cited else " "
        print(f"{mark}[{n}] {_display_path(hit.source)} ({_printable(hit.location)})")
    if cited:
        print("(* cited in the answer)")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from tuneforge.rag import RagStore

    store = RagStore.open(args.store)
    for record in store.remove(args.target):
        print(
            f"removed {_display_path(record.source)} ({record.chunks} chunks, id {record.doc_id})"
        )
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from tuneforge.rag import RagStore

    store = RagStore.open(args.store)
    stats = store.stats()
    incomplete = (
        f" ({stats.incomplete} incomplete: an ingest was interrupted; ingest the same files "
        "again to finish them)"
        if stats.incomplete
        else ""
    )
    print(f"store:           {_printable(stats.folder)}")
    print(f"documents:       {stats.documents}{incomplete}")
    print(f"chunks:          {stats.chunks}")
    print(
        f"embedding model: {stats.embedding_model} ({stats.dimension} dims, {stats.embedding_identity[:19]})"
    )
    print(f"chunking:        {stats.chunk_size} tokens, overlap {stats.overlap}")
    print(f"size on disk:    {stats.disk_bytes / 2**20:.1f} MiB")
    if args.documents:
        for record in store.documents():
            state = "" if record.complete else "  (incomplete)"
            print(
                f"  {record.doc_id}  {record.chunks:>4} chunks  "
                f"{_display_path(record.source)}{state}"
            )
    return 0
