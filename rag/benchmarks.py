"""What the benchmark scripts in evals/ share: timing, fresh processes, synthetic corpora, embedding throughput and
servers on a loopback port. Reports are written with rag.report."""

from __future__ import annotations

import math
import multiprocessing
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rag.chunk import Chunk, chunk_article
from rag.config import Config
from rag.embedders import Embedder
from rag.report import load_average

ARABIC_LETTERS = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"


def timed(function: Callable, *args) -> tuple[object, float]:
    """function(*args) and the seconds it took."""
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def in_subprocess(function: Callable, *args) -> dict:
    """function(*args) in a fresh process, so that its peak memory (and any memory it leaves behind) is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(n: int, queries: int, dims: int = 768, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors and `queries` more from one Gaussian mixture: a cluster per 1,000 vectors, each vector at
    cosine ~0.7 from its centre and ~0.5 from its cluster's other vectors (so neighbours are hard to tell apart)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((max(1, n // 1000), dims), dtype=np.float32))
    out = np.empty((n + queries, dims), np.float32)
    for at in range(0, n + queries, 50_000):
        rows = min(50_000, n + queries - at)
        noise = rng.standard_normal((rows, dims), dtype=np.float32) / np.float32(math.sqrt(dims))
        out[at : at + rows] = _unit(centres[rng.integers(0, len(centres), rows)] + noise)
    return out[:n], out[n:]


def vocabulary(real_terms: list[str], size: int, seed: int = 0) -> list[str]:
    """The given terms plus random Arabic-letter words up to `size`, shuffled (so that the rank of a term, hence
    its frequency under a Zipf law, is random)."""
    rng = np.random.default_rng(seed)
    words = set(real_terms)
    while len(words) < size:
        words.add("".join(rng.choice(list(ARABIC_LETTERS), rng.integers(3, 8))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    return ordered


def seed_chunks(config: Config) -> tuple[list[Chunk], int]:
    """The chunks of the articles in config.seeds_dir, and the number of articles."""
    from rag.ingest import load_articles

    articles, _ = load_articles(config.seeds_dir)
    return [c for a in articles for c in chunk_article(a, config.chunk_size, config.chunk_overlap)], len(articles)


def embedding_rate(embedder: Embedder, config: Config, target: int = 200, batch: int = 16) -> dict:
    """Chunks per second embedding the seed chunks (repeated to `target`) as `rag index` does: sorted by length, in
    batches; and the projected time to embed 10^5 articles."""
    from rag.index import embed_documents

    chunks, articles = seed_chunks(config)
    repeated = chunks * math.ceil(target / len(chunks))
    _, seconds = timed(embed_documents, repeated, embedder, batch)
    rate = len(repeated) / seconds
    per_article = len(chunks) / articles
    return {"chunks": len(repeated), "seconds": round(seconds, 2), "chunks_per_s": round(rate, 2),
            "chunks_per_article": round(per_article, 2),
            "projected_hours_for_1e5_articles": round(100_000 * per_article / rate / 3600, 2),
            "load_average": load_average()}


def free_port() -> int:
    """A loopback port that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused, not yet listening, or an HTTP error
        return False


@contextmanager
def running(args: list[str], ready: str, log: Path, timeout: float = 60, **popen) -> Iterator[subprocess.Popen]:
    """A process started with args (output into log), given once the URL `ready` answers 200; stopped afterwards,
    whatever happens."""
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **popen)
        try:
            deadline = time.monotonic() + timeout
            while not _answers(ready):
                if process.poll() is not None:
                    raise RuntimeError(f"{args} exited:\n{log.read_text(errors='replace')[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{args} did not answer {ready} within {timeout} s")
                time.sleep(0.2)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def pg_schema(dsn: str, prefix: str) -> Iterator[str]:
    """The name of a new schema (prefix + random hex) in the database of dsn, dropped afterwards."""
    import psycopg

    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def gold_questions(paths: list[Path]) -> list[dict]:
    """The questions of gold files, in order (as rag.evaluate.load_gold reads each)."""
    from rag.evaluate import load_gold

    return [q for path in paths for q in load_gold(path)]
