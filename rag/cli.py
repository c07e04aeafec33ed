"""The `rag` command: models pull, index, search, ask, eval, ui, serve."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from rag.config import CACHE_DIR, FIELD_TYPES, HELP, Config, count, load_config
from rag.errors import RagError
from rag.terminal import clean_logs, safe


def quoted(citation) -> str:
    """The cited sentence, safe for the terminal, with the copied span in bold (or between ⟦ ⟧ when not a tty)."""
    text, start, end = citation.text, citation.span_start, citation.span_end
    if start is None:
        return safe(text)
    before, span, after = (text[: start - citation.start], text[start - citation.start : end - citation.start],
                           text[end - citation.start :])
    on, off = ("\033[1;4m", "\033[0m") if sys.stdout.isatty() else ("⟦", "⟧")
    return f"{safe(before)}{on}{safe(span)}{off}{safe(after)}"


def _question(words: list[str]) -> str:
    """The question from the command line, or from stdin when it is '-' (bytes decoded leniently)."""
    if words == ["-"]:
        return sys.stdin.buffer.read(1_000_000).decode("utf-8", errors="replace")
    # Arguments that were not valid UTF-8 arrive as surrogate escapes: turn them into replacement marks.
    return " ".join(words).encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def cmd_models(args, config: Config) -> None:
    from rag.embedders.export import pull_export
    from rag.generators import GENERATORS
    from rag.models import EXPORTS, MODELS, pull
    from rag.plugins import parse

    # By default the configured models and every downloadable one; exports are built only when named or configured.
    names = args.names or [config.embedder, config.generator, *[n for n in MODELS if n not in
                                                                (config.embedder, config.generator)]]
    for name in names:
        if name in EXPORTS:
            pull_export(EXPORTS[name], config.models_dir, CACHE_DIR / "downloads")
        elif name in MODELS:
            pull(name, config.models_dir, CACHE_DIR / "downloads")
        elif args.names:
            raise RagError(f"unknown model {name!r}; known: {', '.join(MODELS | EXPORTS)}")
    backend, spec = parse(config.generator, GENERATORS, "llama")
    if backend == "llama" and (not args.names or spec in args.names):
        from rag.generators.llama import LlamaGenerator

        print(LlamaGenerator.check_config(config, spec))  # a build that crashes on this CPU is named now, not later


def _warn(message: str) -> None:
    print(f"warning: {safe(message)}", file=sys.stderr)


def cmd_index(args, config: Config) -> None:
    from rag.embedders import make_embedder
    from rag.index import build_index, share_index
    from rag.stores import make_store

    store = make_store(config)
    if config.index_batch:
        report = share_index(config.seeds_dir, store, lambda: make_embedder(config), config.chunk_size,
                             config.chunk_overlap, config.index_batch, log=_warn)
    else:
        report = build_index(config.seeds_dir, store, lambda: make_embedder(config), config.chunk_size,
                             config.chunk_overlap, log=_warn)
    print(f"index {store.where}: {report.chunks} chunks ({report.dense}) from "
          f"{len(report.added) + len(report.changed) + len(report.unchanged)} articles in {report.seconds}s; "
          f"added {len(report.added)}, changed {len(report.changed)}, removed {len(report.removed)}, "
          f"unchanged {len(report.unchanged)}; embedded {report.embedded} chunks"
          + (f"; shared build {report.shared}" if report.shared else ""))


def cmd_search(args, config: Config) -> None:
    from rag.assistant import Assistant, check_question

    question = check_question(_question(args.question), config.max_question_chars)
    passages = Assistant.load(config).search(question, args.k)
    if args.json:
        print(json.dumps([p.to_dict() for p in passages], ensure_ascii=False, indent=2))
        return
    for rank, p in enumerate(passages, 1):
        c = p.chunk
        print(safe(f"[{rank}] {c.article_id} {c.date or ''} (rrf {p.score:.4f}, cos {p.dense:.3f}, bm25 {p.bm25:.2f})"))
        print(safe(f"    {c.title}"))
        print(safe(f"    {c.text[:300]}{'…' if len(c.text) > 300 else ''}\n"))


def cmd_ask(args, config: Config) -> None:
    from rag.assistant import Answer, Assistant, check_question

    question = check_question(_question(args.question), config.max_question_chars)
    assistant = Assistant.load(config)
    answer = None
    showing = not args.json and sys.stderr.isatty()
    for piece in assistant.stream(question):
        if isinstance(piece, Answer):
            answer = piece
        elif showing:  # the step under way, on one line that the next step (and then the answer) replaces
            print(f"\r\033[K{safe(piece.label)}", end="", file=sys.stderr, flush=True)
    if showing:
        print("\r\033[K", end="", file=sys.stderr)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
        return
    print(safe(answer.text))
    for c in answer.citations:
        mark = "" if c.supported else "  (غير مؤكد / unsupported)"
        print(safe(f"  [{c.n}] {c.source} — {c.title} {c.date or ''}{mark}"))
        print(f"      «{quoted(c)}»")
    if answer.refused and answer.passages:
        print(safe("  أقرب المقاطع / closest passages: " + ", ".join(p.chunk.id for p in answer.passages[:3])))


def cmd_eval(args, config: Config) -> None:
    from rag import evaluate

    evaluate.main(args, config)


def cmd_ui(args, config: Config) -> None:
    from rag.ui import serve

    serve(config)


def cmd_serve(args, config: Config) -> None:
    from rag.serve import serve

    serve(config)


def parser() -> argparse.ArgumentParser:
    """The argument parser: every setting of rag.config.Config is a flag of every command."""
    p = argparse.ArgumentParser(prog="rag", description="Offline Arabic question answering with cited sources.",
                                epilog="Settings come from defaults < rag.toml < RAG_* variables < these flags.")
    p.add_argument("--config", help="a rag.toml file (default: ./rag.toml if present)")
    p.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    settings = p.add_argument_group("settings")
    for name, kind in FIELD_TYPES.items():
        # Values are read as text and checked by rag.config, exactly like rag.toml and RAG_* values.
        settings.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar=kind.upper(),
                              help=HELP[name])
    sub = p.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="manage the local models")
    models_sub = models.add_subparsers(dest="action", required=True)
    pull = models_sub.add_parser("pull", help="download, join and verify the default models; build a "
                                  "named export (e.g. embeddinggemma-300m-onnx-int8) from them")
    pull.add_argument("names", nargs="*", help="model names (default: all registered models)")
    pull.set_defaults(func=cmd_models)
    sub.add_parser("index", help="(re)build the index from the articles folder").set_defaults(func=cmd_index)
    for name, func in (("search", cmd_search), ("ask", cmd_ask)):
        cmd = sub.add_parser(name, help=f"{name} the articles")
        cmd.add_argument("question", nargs="+", help="the question ('-' reads it from stdin)")
        cmd.add_argument("--json", action="store_true", help="print JSON")
        if name == "search":
            cmd.add_argument("-k", metavar="N", help="number of passages")
        cmd.set_defaults(func=func)
    sub.add_parser("ui", help="start the chat UI on 127.0.0.1").set_defaults(func=cmd_ui)
    sub.add_parser("serve", help="start the HTTP API (OpenAI-compatible chat completions) on 127.0.0.1").set_defaults(
        func=cmd_serve)
    ev = sub.add_parser("eval", help="evaluate on gold Q&A pairs or a SQuAD-format benchmark")
    ev.add_argument("--gold", type=Path, help="gold questions, one JSON question per line (see README): "
                    "evals/gold-dev.jsonl to tune on, evals/gold-test.jsonl to report, or a file of your own")
    ev.add_argument("--squad", type=Path, help="a SQuAD-format JSON file to index and evaluate on")
    ev.add_argument("--gold-passage", action="store_true",
                    help="with --squad: the reader gets each question's own paragraph (reader-only figures)")
    ev.add_argument("--ids", type=Path, help="with --squad: answer only questions with these ids (one a line: a "
                    "held-out split, e.g. evals/splits/tydi-ar-heldout.ids)")
    ev.add_argument("--sample", metavar="N", default=50, help="questions answered by the model in --squad mode")
    ev.add_argument("--out", type=Path, help="folder the report is written to (required; e.g. evals/results)")
    ev.add_argument("--retrieval-only", action="store_true", help="score retrieval only, without the model")
    ev.add_argument("--limit", metavar="N", help="only the first N questions")
    ev.set_defaults(func=cmd_eval)
    return p


COUNT_FLAGS = {"k": "-k", "sample": "--sample", "limit": "--limit"}  # a command's numeric flags: counts


def _check_counts(args) -> None:
    """The numeric flags of the command, checked like the settings before any work: whole numbers, at least 1."""
    for dest, flag in COUNT_FLAGS.items():
        if getattr(args, dest, None) is not None:
            setattr(args, dest, count(flag, getattr(args, dest)))


def _stop(signum, _frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a command like Ctrl-C: locks released, temp files removed


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rag` command: every error a user can cause is one line, `error: …`, and exit code 2."""
    args = parser().parse_args(argv)
    clean_logs()  # libraries log what they read (a PDF's font names): cleaned like everything printed here
    signal.signal(signal.SIGTERM, _stop)
    try:
        overrides = {name: getattr(args, name) for name in FIELD_TYPES}
        config = load_config(args.config, **overrides)
        _check_counts(args)
        args.func(args, config)
    except RagError as e:
        return _fail(args, str(e))
    except OSError as e:  # paths, permissions, a full disk, a closed pipe: the user's to fix, not a bug
        if isinstance(e, BrokenPipeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the reader left: stop quietly
            return 1
        where = f": {e.filename}" if e.filename else ""
        return _fail(args, f"{e.strerror or e}{where}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _fail(args, message: str) -> int:
    if args.debug:
        traceback.print_exc()
    print(f"error: {safe(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
