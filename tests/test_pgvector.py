"""The pgvector store against a real PostgreSQL (`make pg`; `make test` passes its DSN in RAG_TEST_PG_DSN): the same
answers as the FAISS store, incremental builds, versions published atomically, one writer at a time, clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import ARTICLES, RAG_MAIN, HashEmbedder, read_during

from rag import cli
from rag.config import Config
from rag.errors import RagError
from rag.index import build_index
from rag.normalize import terms
from rag.stores import make_store
from rag.stores.base import check_compatible
from rag.stores.faiss import FaissStore
from rag.stores.pgvector import PgVectorStore, shown_dsn

DSN = os.environ.get("RAG_TEST_PG_DSN", "")
pytestmark = [pytest.mark.pg, pytest.mark.skipif(not DSN, reason="RAG_TEST_PG_DSN is not set: `make pg` starts a "
                                                 "server and prints it; `make test` sets it")]
NEW_ARTICLE = (
    "الغاز القطري في أوروبا\n"
    "وقعت قطر اتفاقا لتوريد الغاز الطبيعي المسال إلى ألمانيا لمدة خمسة عشر عاما.\n"
    "ويبدأ التوريد في عام 2026 من ميناء راس لفان."
)
MORE_ARTICLES = {
    "d_gas.txt": NEW_ARTICLE,
    "e_forum.txt": "منتدى الدوحة للطاقة\n15 مارس 2024\nتستعد الدوحة لاستضافة منتدى دولي للطاقة بمشاركة وزراء من "
    "عشرين دولة.\nويناقش المنتدى مستقبل الغاز الطبيعي المسال وأسعار النفط في المنطقة.\nوقال وزير الطاقة القطري إن "
    "بلاده ستزيد إنتاج الغاز بحلول عام 2027.",
    "f_football.txt": "كأس العالم في قطر\nاستضافت قطر بطولة كأس العالم لكرة القدم عام 2022 في ثمانية ملاعب.\n"
    "وفاز المنتخب الأرجنتيني باللقب بعد مباراة نهائية مثيرة أمام فرنسا.",
}
# Questions whose BM25 scores do not tie on the parity corpus (many chunks hold "قطر" once, and tie).
PARITY_QUESTIONS = [
    "الغاز الطبيعي المسال الغاز ألمانيا",  # a repeated term counts twice in BM25
    "بوتين الدوحة 2007",
    "العلاقات الروسية",
    "كأس العالم 2022 ملاعب",
    "ميناء راس لفان",
    "وزير الطاقة",
]
QUESTIONS = [
    "متى زار بوتين قطر لأول مرة كرئيس؟",
    "من نقل رسالة الرئيس الروسي إلى أمير قطر؟",
    "متى بدأت العلاقات الدبلوماسية بين قطر وروسيا؟",
    "الغاز الطبيعي المسال الغاز ألمانيا",
    "من فاز بكأس العالم في قطر؟",
    "ميناء راس لفان",
]
SIZE, OVERLAP = 200, 20


def _password_free(text: str) -> None:
    assert "s3cret" not in text and "Traceback" not in text


def _store(schema: str) -> PgVectorStore:
    return PgVectorStore(DSN, schema)


def _build(seeds: Path, schema: str, embedder=None, size=SIZE, overlap=OVERLAP, log=None):
    return build_index(seeds, _store(schema), embedder or HashEmbedder(), size, overlap, log=log or (lambda *_: None))


def _tables(schema: str) -> list[str]:
    import psycopg

    with psycopg.connect(DSN) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))
        return [name for (name,) in rows]


def _chunk_ids(store) -> list[str]:
    return [c.id for c in store.chunks_of(store.manifest()["articles"])[0]]


@pytest.fixture
def built(seeds, schema):
    """(seeds, schema, embedder) after a first build."""
    embedder = HashEmbedder()
    _build(seeds, schema, embedder)
    return seeds, schema, embedder


# --- Building and reading -----------------------------------------------------------------------------------------


def test_build_publishes_one_version_with_its_manifest(built):
    seeds, schema, embedder = built
    store = _store(schema)
    manifest = store.manifest()
    assert manifest["store"] == "pgvector" and manifest["dense"]["type"] == "hnsw-m32-efc128-ip"
    assert manifest["dense"]["metric"] == "inner_product" and manifest["bm25"]["k1"] == 1.5
    assert manifest["embedder"] == {"id": "hash-embedder-64", "dims": 64}
    assert manifest["chunks"] == store.count() == embedder.calls
    assert set(manifest["articles"]) == set(ARTICLES)
    assert _tables(schema) == ["articles_v000001", "chunks_v000001", "current", "terms_v000001", "versions"]
    assert store.where == f"{shown_dsn(DSN)} (schema {schema})" and "rag:rag@" not in store.where


def test_the_hnsw_settings_build_the_index_and_are_in_its_manifest(seeds, schema):
    import psycopg

    config = Config(store="pgvector", pg_dsn=DSN, pg_schema=schema, pg_hnsw_m=8, pg_hnsw_ef_construction=40)
    build_index(seeds, make_store(config), HashEmbedder(), SIZE, OVERLAP, log=lambda *_: None)
    assert make_store(config).manifest()["dense"]["type"] == "hnsw-m8-efc40-ip"
    with psycopg.connect(DSN) as conn:
        (definition,) = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE "
                                     "'%%hnsw%%'", (schema,)).fetchone()
    assert "m='8'" in definition and "ef_construction='40'" in definition


@pytest.mark.parametrize(("m", "ef_construction"), [(1, 64), (101, 400), (16, 31), (16, 1001)])
def test_hnsw_settings_out_of_pgvectors_range_are_one_line(m, ef_construction):
    config = Config(store="pgvector", pg_dsn=DSN, pg_hnsw_m=m, pg_hnsw_ef_construction=ef_construction)
    with pytest.raises(RagError, match=r"^settings pg_hnsw_m .* must be 2-100 and pg_hnsw_ef_construction from"):
        make_store(config)


def test_the_index_round_trips(built):
    _, schema, _ = built
    store = _store(schema)
    chunks, vectors = store.chunks_of(ARTICLES)
    assert len(chunks) == store.count() and vectors.shape == (len(chunks), 64) and vectors.dtype == np.float32
    for c in chunks:
        assert store.article(c.article_id).text[c.start : c.end] == c.text
    assert np.allclose(vectors, HashEmbedder().embed_batch([c.text for c in chunks], "document"), atol=1e-7)
    idf = store.idf(["بوغدانوف", "قطر", "غيرموجود"])
    assert idf["بوغدانوف"] > idf["قطر"] > 0 and idf["غيرموجود"] > idf["بوغدانوف"]
    with pytest.raises(RagError, match="no indexed article named 'x.txt'"):
        store.article("x.txt")


def test_search_through_make_store_and_the_settings(built):
    _, schema, _ = built
    config = Config(store="pgvector", pg_dsn=DSN, pg_schema=schema)
    store = make_store(config)
    question = "من نقل رسالة الرئيس الروسي إلى أمير قطر؟"
    vector = HashEmbedder().embed_batch([question], "query")[0]
    passages = store.search(vector, terms(question), 2)
    assert passages[0].chunk.article_id == "b_persian.txt" and len(passages) == 2
    assert all(p.bm25 >= 0 and -1 <= p.dense <= 1 for p in passages)


# --- The same answers as the FAISS store ----------------------------------------------------------------------------


class NoisyHashEmbedder(HashEmbedder):
    """The hash embedder in 256 dimensions plus a little noise seeded by the text: no two chunks tie on cosine.
    Exact ties are the one place where the stores may differ: PostgreSQL breaks them by row order, FAISS by its heap
    and numpy's argpartition, in no documented order."""

    id = "noisy-hash-embedder-256"
    dims = 256

    def embed_batch(self, texts: list[str], kind: str) -> np.ndarray:
        out = super().embed_batch(texts, kind)
        for row, text in enumerate(texts):
            seed = int(hashlib.md5(text.encode()).hexdigest(), 16)
            out[row] += 0.05 * np.random.default_rng(seed).standard_normal(self.dims).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_parity_with_the_faiss_store(seeds, schema, tmp_path, mode):
    for name, text in MORE_ARTICLES.items():
        (seeds / name).write_text(text, encoding="utf-8")
    size, overlap = 80, 10  # more, shorter chunks: rankings of about 20
    embedder = NoisyHashEmbedder()
    _build(seeds, schema, embedder, size=size, overlap=overlap)
    build_index(seeds, FaissStore(tmp_path / "faiss"), embedder, size, overlap, log=lambda *_: None)
    pg, faiss = _store(schema), FaissStore(tmp_path / "faiss")
    n = pg.count()
    assert n == faiss.count() >= 18
    for question in PARITY_QUESTIONS:
        vector, words = embedder.embed_batch([question], "query")[0], terms(question)
        lexical = [p.bm25 for p in pg.search(vector, words, n, "bm25", n)]
        assert len(set(lexical)) == len(lexical) > 0  # no ties (see NoisyHashEmbedder)
        # Every candidate; a depth that cuts both rankings; the defaults of the assistant.
        for k, depth in ((n, n), (n, 6), (4, 50)):
            got, want = pg.search(vector, words, k, mode, depth), faiss.search(vector, words, k, mode, depth)
            assert [p.chunk for p in got] == [p.chunk for p in want], (question, k, depth)
            for g, w in zip(got, want, strict=True):
                assert g.score == pytest.approx(w.score, rel=1e-5, abs=1e-7)
                assert g.dense == pytest.approx(w.dense, abs=1e-6)
                assert g.bm25 == pytest.approx(w.bm25, rel=1e-5, abs=1e-6)
        assert pg.idf(words) == pytest.approx(faiss.idf(words), rel=1e-12)


def test_bm25_top_depth_is_exact_when_common_terms_are_left_out(seeds, schema, tmp_path):
    # "قطر" is in most chunks, "الغاز" in a few: for a small depth the store scores only the chunks holding "الغاز"
    # (a chunk holding only "قطر" scores below the depth-th best of those), yet finds the same top as bm25s.
    for name, text in MORE_ARTICLES.items():
        (seeds / name).write_text(text, encoding="utf-8")
    _build(seeds, schema, size=80, overlap=10)
    build_index(seeds, FaissStore(tmp_path / "faiss"), HashEmbedder(), 80, 10, log=lambda *_: None)
    pg, faiss = _store(schema), FaissStore(tmp_path / "faiss")
    words = terms("الغاز في قطر")
    vector = HashEmbedder().embed_batch(["الغاز في قطر"], "query")[0]
    every = [p.bm25 for p in faiss.search(vector, words, pg.count(), "bm25", pg.count())]
    assert len(every) > 12
    for depth in range(1, len(every)):
        got = pg.search(vector, words, depth, "bm25", depth)
        assert [p.bm25 for p in got] == pytest.approx(every[:depth], rel=1e-5)
        if every[depth - 1] != every[depth]:  # no tie at the cut: the same chunks
            want = faiss.search(vector, words, depth, "bm25", depth)
            assert {p.chunk.id for p in got} == {p.chunk.id for p in want}


def test_ties_rank_by_row_order(built):
    _, schema, _ = built
    store = _store(schema)
    vector = np.zeros(64, dtype=np.float32)  # every chunk at cosine 0
    for mode in ("dense", "hybrid"):
        assert [p.chunk.id for p in store.search(vector, [], 10, mode)] == _chunk_ids(store)


def test_bm25_scores_equal_bm25s_on_every_chunk(seeds, schema, tmp_path):
    for name, text in MORE_ARTICLES.items():
        (seeds / name).write_text(text, encoding="utf-8")
    _build(seeds, schema)
    build_index(seeds, FaissStore(tmp_path / "faiss"), HashEmbedder(), SIZE, OVERLAP, log=lambda *_: None)
    pg, faiss = _store(schema), FaissStore(tmp_path / "faiss")
    for question in QUESTIONS:
        words = terms(question)
        vector = HashEmbedder().embed_batch([question], "query")[0]
        got = {p.chunk.id: p.bm25 for p in pg.search(vector, words, pg.count(), "dense")}
        want = {p.chunk.id: p.bm25 for p in faiss.search(vector, words, faiss.count(), "dense")}
        assert got.keys() == want.keys() and got == pytest.approx(want, rel=1e-5, abs=1e-6)


# --- Incremental builds and versions --------------------------------------------------------------------------------


def test_rebuild_without_changes_embeds_nothing_and_keeps_the_previous_version(built):
    seeds, schema, embedder = built
    store = _store(schema)
    before = store.chunks_of(ARTICLES)
    calls = embedder.calls
    report = _build(seeds, schema, embedder)
    assert embedder.calls == calls and report.embedded == 0 and sorted(report.unchanged) == sorted(ARTICLES)
    assert store.refresh()
    after = store.chunks_of(ARTICLES)
    assert after[0] == before[0] and np.array_equal(after[1], before[1])  # copied inside the database, bit for bit
    assert "chunks_v000001" in _tables(schema) and "chunks_v000002" in _tables(schema)  # the previous one stays
    _build(seeds, schema, embedder)
    assert [t for t in _tables(schema) if t.startswith("chunks_")] == ["chunks_v000002", "chunks_v000003"]


def test_adding_an_article_embeds_only_its_chunks(built):
    seeds, schema, embedder = built
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    calls = embedder.calls
    report = _build(seeds, schema, embedder)
    store = _store(schema)
    assert report.added == ["d_gas.txt"] and report.chunks == store.count()
    assert embedder.calls - calls == report.embedded == len(store.chunks_of(["d_gas.txt"])[0]) > 0
    assert _chunk_ids(store)[-report.embedded:] == [f"d_gas.txt#{i}" for i in range(report.embedded)]


def test_changing_an_article_re_embeds_only_it_and_its_vectors_stay_with_its_chunks(built):
    seeds, schema, embedder = built
    (seeds / "b_persian.txt").write_text(ARTICLES["b_persian.txt"] + "\nوأكد الجانبان أهمية التعاون.", "utf-8")
    calls = embedder.calls
    report = _build(seeds, schema, embedder)
    store = _store(schema)
    chunks, vectors = store.chunks_of(ARTICLES)
    assert report.changed == ["b_persian.txt"]
    assert embedder.calls - calls == sum(c.article_id == "b_persian.txt" for c in chunks)
    assert any("أهمية التعاون" in c.text for c in chunks)
    assert np.allclose(vectors, HashEmbedder().embed_batch([c.text for c in chunks], "document"), atol=1e-7)


def test_removing_an_article_drops_its_chunks_and_terms(built):
    seeds, schema, embedder = built
    (seeds / "b_persian.txt").unlink()
    calls = embedder.calls
    report = _build(seeds, schema, embedder)
    store = _store(schema)
    assert report.removed == ["b_persian.txt"] and embedder.calls == calls
    assert "b_persian.txt" not in store.manifest()["articles"] and store.count() == report.chunks
    assert not store.chunks_of(["b_persian.txt"])[0]
    with pytest.raises(RagError, match="no indexed article named"):
        store.article("b_persian.txt")
    question = "بوغدانوف"  # only in the removed article
    assert store.search(HashEmbedder().embed_batch([question], "query")[0], [question], 3, "bm25") == []


class OtherEmbedder(HashEmbedder):
    id = "other-embedder-64"


def test_another_embedder_or_chunking_is_refused_and_rebuilds_everything(built):
    seeds, schema, _ = built
    store = _store(schema)
    with pytest.raises(RagError, match=r"built with embedder hash-embedder-64.*run `rag index`"):
        check_compatible(store.manifest(), store.where, OtherEmbedder.id, SIZE, OVERLAP)
    with pytest.raises(RagError, match=r"chunk size/overlap 200/20.*300/20.*`rag index`"):
        check_compatible(store.manifest(), store.where, HashEmbedder.id, 300, OVERLAP)
    other, logged = OtherEmbedder(), []
    report = _build(seeds, schema, other, log=logged.append)
    assert report.embedded == other.calls == report.chunks
    assert any("not reusing" in line for line in logged)
    check_compatible(_store(schema).manifest(), store.where, OtherEmbedder.id, SIZE, OVERLAP)


def test_missing_index_says_run_rag_index(schema):
    with pytest.raises(RagError, match=r"no index in postgresql://.*\(schema rag_test_\w+\): run `rag index`"):
        _store(schema).manifest()


class NanEmbedder(HashEmbedder):
    """Returns NaN vectors, which pgvector refuses."""

    def embed_batch(self, texts, kind):
        return super().embed_batch(texts, kind) * np.nan


def test_a_failed_publish_keeps_the_previous_index_and_leaves_no_tables(built):
    seeds, schema, _ = built
    tables = _tables(schema)
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    with pytest.raises(RagError, match=r"could not write the index in .*NaN.*any previous index is unchanged"):
        _build(seeds, schema, NanEmbedder())
    assert _tables(schema) == tables
    assert set(_store(schema).manifest()["articles"]) == set(ARTICLES)


def test_leftovers_of_a_killed_build_are_dropped_and_nothing_else(built):
    import psycopg

    seeds, schema, embedder = built
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{schema}".chunks_v000009 (x int)')  # a build killed before publishing
        conn.execute(f'CREATE TABLE "{schema}".notes (x int)')  # the user's own table
    _build(seeds, schema, embedder)
    assert "chunks_v000009" not in _tables(schema) and "notes" in _tables(schema)
    assert _store(schema).manifest()["chunks"] == _store(schema).count()


# --- One writer, many readers -----------------------------------------------------------------------------------


def test_a_second_build_while_one_holds_the_lock_is_refused(built):
    seeds, schema, embedder = built
    store = _store(schema)
    calls = embedder.calls
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    with store.building(), pytest.raises(RagError, match=r"another `rag index` is writing postgresql://.*; wait for "
                                                         "it to finish"):
        _build(seeds, schema, embedder)
    assert embedder.calls == calls  # refused before any embedding
    _build(seeds, schema, embedder)  # the lock is released afterwards
    assert "d_gas.txt" in _store(schema).manifest()["articles"]


def test_readers_during_back_to_back_publishes_always_get_a_whole_index(built):
    seeds, schema, embedder = built
    question = "الغاز الطبيعي في قطر"
    vector, words = HashEmbedder().embed_batch([question], "query")[0], terms(question)

    def read() -> int:
        store = _store(schema)
        try:
            manifest, passages = store.manifest(), store.search(vector, words, 50)
            assert len(passages) == store.count() == manifest["chunks"]  # k above the count: every chunk
            assert {p.chunk.article_id for p in passages} == set(manifest["articles"])
            return store.count()
        finally:
            store.close()

    def rebuild(n: int) -> None:
        (seeds / "d_gas.txt").write_text(NEW_ARTICLE + f"\nتحديث رقم {n}." * (n % 3), encoding="utf-8")
        _build(seeds, schema, embedder)

    errors, loads = read_during(read, rebuild, 8)
    assert errors == [] and len(loads) > 8


def test_a_reader_keeps_its_version_until_refresh_and_outlives_two_publishes(built):
    seeds, schema, embedder = built
    store = _store(schema)
    before = store.count()
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    _build(seeds, schema, embedder)
    assert store.count() == before and len(store.chunks_of(ARTICLES)[0]) == before  # pinned: the previous version
    assert store.refresh() and store.count() > before and not store.refresh()
    old = _store(schema)
    old.count()
    (seeds / "d_gas.txt").unlink()
    _build(seeds, schema, embedder)
    _build(seeds, schema, embedder)  # its version is dropped now: reading moves it to the published one
    assert len(old.chunks_of(ARTICLES)[0]) == before == old.count()


# --- Errors are one line, without the password ----------------------------------------------------------------------


@pytest.mark.parametrize("dsn, message", [
    ("postgresql://rag:s3cret@127.0.0.1:1/rag", r"cannot connect to PostgreSQL at postgresql://rag@127.0.0.1:1/rag "
                                                r"\(.*Connection refused\): check the setting pg_dsn"),
    ("host=127.0.0.1 port={port} user=rag password=s3cret dbname=rag", "password authentication failed"),
    ("postgresql://rag:s3cret@[::1", "is not a PostgreSQL connection string"),
])
def test_bad_dsn_or_server_down_is_one_line_without_the_password(dsn, message):
    import psycopg

    port = psycopg.conninfo.conninfo_to_dict(DSN).get("port", "5432")
    with pytest.raises(RagError, match=message) as caught:
        PgVectorStore(dsn.format(port=port), "rag").manifest()
    assert "\n" not in str(caught.value)
    _password_free(str(caught.value))


def test_empty_dsn_names_the_setting():
    with pytest.raises(RagError, match="set pg_dsn in rag.toml or the RAG_PG_DSN variable"):
        make_store(Config(store="pgvector", pg_dsn=""))


def test_a_database_without_pgvector_is_a_clear_error_before_any_embedding(seeds):
    import psycopg

    name = f"rag_test_noext_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # the test role may create databases, not extensions
    try:
        dsn = psycopg.conninfo.make_conninfo(DSN, dbname=name)
        embedder = HashEmbedder()
        with pytest.raises(RagError, match=rf"the database postgresql://.*/{name} has no pgvector extension .*"
                                           "CREATE EXTENSION vector;"):
            build_index(seeds, PgVectorStore(dsn, "rag"), embedder, SIZE, OVERLAP, log=lambda *_: None)
        assert embedder.calls == 0
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


# --- The `rag` command ------------------------------------------------------------------------------------------


def test_rag_index_then_search_with_the_pgvector_store(hash_cli, seeds, schema, capsys):
    flags = ["--store", "pgvector", "--pg-dsn", DSN, "--pg-schema", schema, "--seeds-dir", str(seeds)]
    assert cli.main([*flags, "index"]) == 0
    out = capsys.readouterr().out
    assert f"index {shown_dsn(DSN)} (schema {schema}):" in out and "(hnsw-m32-efc128-ip)" in out and "added 3" in out
    assert cli.main([*flags, "search", "--json", "-k", "2", "من نقل رسالة بوتين إلى أمير قطر؟"]) == 0
    passages = json.loads(capsys.readouterr().out)
    assert passages[0]["source"] == "b_persian.txt" and len(passages) == 2
    assert cli.main([*flags, "index"]) == 0
    assert "unchanged 3; embedded 0 chunks" in capsys.readouterr().out


def test_the_rag_process_with_a_bad_dsn_exits_2_with_one_line(tmp_path, seeds):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_EMBEDDER="hash:", RAG_STORE="pgvector", RAG_PG_DSN="postgresql://rag:s3cret@127.0.0.1:1/rag",
               TQDM_DISABLE="1")
    for command in (["--seeds-dir", str(seeds), "index"], ["search", "بوتين"]):
        done = subprocess.run([sys.executable, "-c", RAG_MAIN, *command], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=60)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.startswith("error: cannot connect to PostgreSQL at postgresql://rag@127.0.0.1:1/rag")
        assert len(done.stderr.strip().splitlines()) == 1
        _password_free(done.stderr)
