"""The `rag` command: models pull, index, search, ask, eval, ui."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rag.config import CACHE_DIR, Config, load_config
from rag.errors import RagError


def _question(words: list[str]) -> str:
    """The question from the command line, or from stdin when it is '-' (bytes decoded leniently)."""
    if words == ["-"]:
        return sys.stdin.buffer.read().decode("utf-8", errors="replace")
    # Arguments that were not valid UTF-8 arrive as surrogate escapes: turn them into replacement marks.
    return " ".join(words).encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def cmd_models(args, config: Config) -> None:
    from rag.models import MODELS, pull

    names = args.names or [config.embedder, config.generator, *[n for n in MODELS if n not in
                                                                (config.embedder, config.generator)]]
    for name in names:
        if name in MODELS:
            pull(name, config.models_dir, CACHE_DIR / "downloads")


def cmd_index(args, config: Config) -> None:
    from rag.embed import SentenceTransformerEmbedder
    from rag.index import build_index
    from rag.models import resolve

    embedder = SentenceTransformerEmbedder(resolve(config.embedder, config.models_dir, "embedder"))
    report = build_index(config.seeds_dir, config.index_dir, embedder, config.chunk_size, config.chunk_overlap,
                         log=lambda msg: print(f"warning: {msg}", file=sys.stderr))
    print(f"index {config.index_dir}: {report.chunks} chunks ({report.faiss_type}) from "
          f"{len(report.added) + len(report.changed) + len(report.unchanged)} articles in {report.seconds}s; "
          f"added {len(report.added)}, changed {len(report.changed)}, removed {len(report.removed)}, "
          f"unchanged {len(report.unchanged)}; embedded {report.embedded} chunks")


def cmd_search(args, config: Config) -> None:
    from rag.assistant import Assistant, check_question

    question = check_question(_question(args.question), config.max_question_chars)
    passages = Assistant.load(config).search(question, args.k)
    if args.json:
        print(json.dumps([p.to_dict() for p in passages], ensure_ascii=False, indent=2))
        return
    for rank, p in enumerate(passages, 1):
        c = p.chunk
        print(f"[{rank}] {c.article_id} {c.date or ''} (rrf {p.score:.4f}, cos {p.dense:.3f}, bm25 {p.bm25:.2f})")
        print(f"    {c.title}")
        print(f"    {c.text[:300]}{'…' if len(c.text) > 300 else ''}\n")


def cmd_ask(args, config: Config) -> None:
    from rag.assistant import Answer, Assistant, check_question

    question = check_question(_question(args.question), config.max_question_chars)
    assistant = Assistant.load(config)
    answer = None
    for piece in assistant.stream(question):
        if isinstance(piece, Answer):
            answer = piece
        elif not args.json and sys.stderr.isatty():
            print(piece, end="", file=sys.stderr, flush=True)  # the raw reply as it streams
    if sys.stderr.isatty() and not args.json:
        print("\r\033[K", end="", file=sys.stderr)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
        return
    print(answer.text)
    for c in answer.citations:
        mark = "" if c.supported else "  (غير مؤكد / unsupported)"
        print(f"  [{c.n}] {c.source} — {c.title} {c.date or ''}{mark}\n      «{c.text}»")
    if answer.refused and answer.passages:
        print("  أقرب المقاطع / closest passages: " + ", ".join(p.chunk.id for p in answer.passages[:3]))


def cmd_eval(args, config: Config) -> None:
    from rag import evaluate

    evaluate.main(args, config)


def cmd_ui(args, config: Config) -> None:
    from rag.ui import serve

    serve(config)


def parser() -> argparse.ArgumentParser:
    """The argument parser (settings flags apply to every command)."""
    p = argparse.ArgumentParser(prog="rag", description="Offline Arabic question answering with cited sources.")
    p.add_argument("--config", help="a rag.toml file (default: ./rag.toml if present)")
    for name, kind in [("seeds-dir", str), ("index-dir", str), ("models-dir", str), ("embedder", str),
                       ("generator", str), ("top-k", int), ("n-threads", int), ("n-gpu-layers", int),
                       ("n-ctx", int), ("temperature", float), ("max-tokens", int)]:
        p.add_argument(f"--{name}", type=kind, default=None, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="manage the local models")
    models_sub = models.add_subparsers(dest="action", required=True)
    pull = models_sub.add_parser("pull", help="download, join and verify the default models")
    pull.add_argument("names", nargs="*", help="model names (default: all registered models)")
    pull.set_defaults(func=cmd_models)
    sub.add_parser("index", help="(re)build the index from the articles folder").set_defaults(func=cmd_index)
    for name, func in (("search", cmd_search), ("ask", cmd_ask)):
        cmd = sub.add_parser(name, help=f"{name} the articles")
        cmd.add_argument("question", nargs="+", help="the question ('-' reads it from stdin)")
        cmd.add_argument("--json", action="store_true", help="print JSON")
        if name == "search":
            cmd.add_argument("-k", type=int, default=None, help="number of passages")
        cmd.set_defaults(func=func)
    ev = sub.add_parser("eval", help="evaluate on gold Q&A pairs or a SQuAD-format benchmark")
    ev.add_argument("--gold", type=Path, default=Path("evals/gold.jsonl"))
    ev.add_argument("--squad", type=Path, help="a SQuAD-format JSON file to index and evaluate on")
    ev.add_argument("--sample", type=int, default=50, help="questions answered by the LLM in --squad mode")
    ev.add_argument("--out", type=Path, default=Path("evals/results"))
    ev.add_argument("--retrieval-only", action="store_true")
    ev.add_argument("--limit", type=int, default=None)
    ev.set_defaults(func=cmd_eval)
    sub.add_parser("ui", help="start the chat UI on 127.0.0.1").set_defaults(func=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rag` command."""
    args = parser().parse_args(argv)
    try:
        overrides = {k: getattr(args, k) for k in ("seeds_dir", "index_dir", "models_dir", "embedder", "generator",
                                                  "top_k", "n_threads", "n_gpu_layers", "n_ctx", "temperature",
                                                  "max_tokens")}
        config = load_config(args.config, **overrides)
        args.func(args, config)
    except RagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
