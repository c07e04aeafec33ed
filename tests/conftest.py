"""Shared fixtures: fakes for fast unit tests (hash embedder, scripted generator) and the real assistant."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from rag.assistant import Assistant
from rag.benchmarks import pg_schema
from rag.config import PACKAGE_ROOT, Config, load_config
from rag.embedders import EMBEDDERS, make_embedder
from rag.generators import GENERATORS
from rag.generators.base import Piece
from rag.index import build_index
from rag.normalize import terms
from rag.reading.selector import Selector
from rag.stores import make_store
from rag.stores.faiss import FaissStore

# CI explores the same examples on every run (a failure there is never chance) and prints how to replay one;
# a developer's runs keep exploring new ones. HYPOTHESIS_PROFILE=ci replays CI's choice locally.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

ARTICLES = {
    "a_visit.txt": "زيارة بوتين إلى الدوحة\n12 أكتوبر 2022\n"
    "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007، وهي أول زيارة له إلى قطر كرئيس.\n"
    "وبحث الجانبان التعاون في مجال الغاز الطبيعي.",
    "b_persian.txt": "الوقت - تلقی أمیر قطر رسالة شفهیة من الرئیس الروسی نقلها میخائیل بوغدانوف نائب وزیر الخارجیة.\n"
    "وتناولت المحادثات الوضع فی سوریا.",
    "c_relations.txt": "العلاقات القطرية الروسية\n"
    "تعود العلاقات الدبلوماسية بين قطر وروسيا إلى الأول من أغسطس عام 1988.\n"
    "اترك تعليقاً\nزر الذهاب إلى الأعلى",
}


class HashEmbedder:
    """A deterministic bag-of-terms embedder: texts sharing terms get similar vectors."""

    id = "hash-embedder-64"
    dims = 64

    def __init__(self):
        self.calls = 0

    @classmethod
    def from_config(cls, config: Config, spec: str) -> HashEmbedder:
        return cls()

    def embed_batch(self, texts: list[str], kind: str) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for row, text in enumerate(texts):
            for term in terms(text) or ["<empty>"]:
                out[row, int(hashlib.md5(term.encode()).hexdigest(), 16) % self.dims] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class ScriptedGenerator:
    """Replies with a scripted text, token by token, and remembers the prompts it was given. Its `extract` copies
    the first span it may (or the scripted `copied` text), `choose` returns the scripted scores and `score` gives
    each word of a reply the scripted log-probability (-2 if none)."""

    id = "scripted"
    features = frozenset({"extract", "choose", "score"})

    def __init__(self, reply: str | Callable[[list[dict]], str] = "لا تتضمن المصادر إجابة عن هذا السؤال.",
                 copied: str | None = None, scores: dict[str, float] | None = None, logprob: float = 0.0):
        self.reply, self.copied, self.logprob = reply, copied, logprob
        self.scores = scores or {"نعم": -0.1, "لا": -2.5}
        self.prompts: list[list[dict]] = []  # of generate()
        self.extracted: list[tuple[list[str], bool]] = []  # (spans, whole) of each extract()
        self.chosen: list[list[dict]] = []  # prompts of choose()
        self.judgements: dict[str, float] = {}  # reply -> log-probability of each of its words, for score()
        self.scored: list[list[str]] = []  # replies of each score()
        self.prefilled: list[list[dict]] = []  # prompts of prefill()

    @classmethod
    def from_config(cls, config: Config, spec: str) -> ScriptedGenerator:
        return cls(spec) if spec else cls()

    def generate(self, messages: list[dict], max_tokens: int, stop: list[str], temperature: float) -> Iterator[str]:
        self.prompts.append(messages)
        text = self.reply(messages) if callable(self.reply) else self.reply
        for word in text.split(" "):
            yield word + " "

    def prefill(self, messages: list[dict]) -> None:
        self.prefilled.append(messages)

    def extract(self, messages: list[dict], spans: list[str], max_tokens: int, whole: bool = False):
        self.extracted.append((spans, whole))
        text = self.copied if self.copied is not None else spans[0]
        yield Piece(text)
        yield Piece("", self.logprob * (len(text.split()) + 1), len(text.split()) + 1)

    def choose(self, messages: list[dict], options: list[str]) -> dict[str, float]:
        self.chosen.append(messages)
        return {option: self.scores.get(option, -10.0) for option in options}

    def score(self, messages: list[dict], replies: list[str]) -> list[list[float]]:
        self.scored.append(replies)
        return [[self.judgements.get(reply, -2.0)] * len(reply.split()) + [-0.1] for reply in replies]


class SlowHashEmbedder(HashEmbedder):
    """The hash embedder taking `spec` seconds per text (`embedder = "slowhash:0.2"`): a build slow enough to share
    between processes, or to kill part way. The same vectors and id as the hash embedder."""

    def __init__(self, seconds: float = 0.0):
        super().__init__()
        self.seconds = seconds

    @classmethod
    def from_config(cls, config: Config, spec: str) -> SlowHashEmbedder:
        return cls(float(spec or 0))

    def embed_batch(self, texts: list[str], kind: str) -> np.ndarray:
        time.sleep(self.seconds * len(texts))
        return super().embed_batch(texts, kind)


# The fakes are backends like the real ones: `embedder = "hash:"`, `generator = "scripted:<reply>"`. Importing this
# module registers nothing: the `fakes` fixture registers them for each test, RAG_MAIN for a `rag` subprocess.
FAKES = [
    (EMBEDDERS, {"hash": "conftest:HashEmbedder", "slowhash": "conftest:SlowHashEmbedder"}),
    (GENERATORS, {"scripted": "conftest:ScriptedGenerator"}),
]


@pytest.fixture(autouse=True)
def fakes(monkeypatch) -> None:
    """The fake backends in the plugin registries during each test, removed after it."""
    for registry, backends in FAKES:
        for name, target in backends.items():
            monkeypatch.setitem(registry, name, target)


PG_DSN = os.environ.get("RAG_TEST_PG_DSN", "")  # read before a test's `isolated` clears the RAG_* variables

# `rag` in a subprocess with the fakes registered: [sys.executable, "-c", RAG_MAIN, *args].
RAG_MAIN = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import conftest
for registry, backends in conftest.FAKES:
    registry.update(backends)
from rag.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema of its own for each test, in the database of RAG_TEST_PG_DSN, dropped afterwards."""
    with pg_schema(PG_DSN, "rag_test_") as name:
        yield name


def build_store(seeds: Path, folder: Path, embedder=None, size: int = 200, overlap: int = 20, log=None) -> FaissStore:
    """Build a FAISS index of seeds into folder (hash embedder by default) and return it, freshly opened."""
    config = Config(seeds_dir=seeds, index_dir=folder, store="faiss")
    build_index(seeds, make_store(config), embedder or HashEmbedder(), size, overlap, log=log or (lambda *_: None))
    return make_store(config)




# The fast tests' selector: the reply the model names wins, then a definition, a list or the copy (unless the model is
# unsure of it); typed spans and clauses alone never answer. The trained one (rag/data/selector.json) changes when it
# is retrained; the tests marked real use it.
SCRIPTED_SELECTOR = Selector(
    ["source_reply", "source_copy", "source_definition", "source_list", "source_yesno", "invented", "says_none",
     "copy_logprob"],
    [0.0] * 8, [1.0] * 8, [3.0, 2.5, 4.0, 5.0, 5.0, -10.0, -10.0, 0.5], -2.0, 0.5, {"note": "tests/conftest.py"})


@pytest.fixture(autouse=True)
def scripted_selector(request, monkeypatch) -> None:
    """Every test but the real ones chooses answers with SCRIPTED_SELECTOR."""
    if not any(request.node.get_closest_marker(m) for m in ("real", "server")):
        monkeypatch.setattr("rag.reading.select.load_selector", lambda path="": SCRIPTED_SELECTOR)


@pytest.fixture
def isolated(monkeypatch, tmp_path: Path) -> None:
    """No rag.toml or RAG_* settings from the developer's machine; the working folder is an empty temp one."""
    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def hash_cli(isolated, monkeypatch) -> None:
    """`rag` run in this process with the hash embedder in place of the real model."""
    monkeypatch.setenv("RAG_EMBEDDER", "hash:")


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    folder = tmp_path / "seeds"
    folder.mkdir()
    for name, text in ARTICLES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def fake_config(tmp_path: Path, seeds: Path) -> Config:
    return Config(seeds_dir=seeds, index_dir=tmp_path / "index", models_dir=tmp_path / "models",
                  embedder="hash:", chunk_size=200, chunk_overlap=20, top_k=3,
                  min_similarity=0.0)  # the hash embedder's cosines mean little: only the shared-term rule gates


@pytest.fixture
def fake_assistant(fake_config: Config) -> Assistant:
    """An assistant over the tiny corpus whose model answers 'في فبراير عام 2007 [1].'."""
    embedder = HashEmbedder()
    store = build_store(fake_config.seeds_dir, fake_config.index_dir, embedder)
    return Assistant(fake_config, embedder, store, ScriptedGenerator("في فبراير عام 2007 [1]."))


@pytest.fixture(scope="session")
def real_assistant(tmp_path_factory) -> Assistant:
    """The real embedder and GGUF model over the repository's seed articles (index built in a temp folder)."""
    config = load_config(seeds_dir=PACKAGE_ROOT / "seeds", index_dir=tmp_path_factory.mktemp("real") / "index")
    embedder = make_embedder(config)
    build_index(config.seeds_dir, make_store(config), embedder, config.chunk_size, config.chunk_overlap)
    return Assistant(config, embedder, make_store(config))


def zip_bytes(files: dict[str, str | bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip archive of the given members, in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def read_during(read: Callable[[], int], rebuild: Callable[[int], None], rebuilds: int) -> tuple[list[str], list[int]]:
    """Three threads call read (a load of the index: its chunk count) over and over while rebuild(n) runs rebuilds
    times; the errors the readers met, and what they loaded."""
    errors: list[str] = []
    loads: list[int] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                loads.append(read())
            except Exception as e:  # noqa: BLE001  any failure to read is what the tests look for
                errors.append(repr(e))

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        for n in range(rebuilds):
            rebuild(n)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    return errors, loads
