"""Hybrid retrieval: reciprocal rank fusion of dense and BM25 rankings over the tiny fake index."""

import numpy as np
import pytest
from conftest import HashEmbedder, build_store

from rag.retrieve import search
from rag.stores.base import RRF_K, rrf, top_n


def test_rrf_sums_reciprocal_ranks_with_k_60():
    assert RRF_K == 60
    assert rrf([[7]]) == [(7, 1 / 61)]
    fused = dict(rrf([[1, 2, 3], [2, 3]]))
    assert fused == pytest.approx({1: 1 / 61, 2: 1 / 62 + 1 / 61, 3: 1 / 63 + 1 / 62})


def test_rrf_prefers_documents_found_by_both_rankers():
    assert [doc for doc, _ in rrf([[1, 2, 3], [2, 4]])] == [2, 1, 4, 3]


def test_rrf_breaks_ties_by_document_id():
    assert [doc for doc, _ in rrf([[5, 9], [9, 5]])] == [5, 9]
    assert [doc for doc, _ in rrf([[9, 5], [5, 9]])] == [5, 9]


def test_rrf_with_another_k_and_no_rankings():
    assert rrf([[1, 2]], k=0) == [(1, 1.0), (2, 0.5)]
    assert rrf([]) == []
    assert rrf([[], []]) == []


def test_top_n_best_first_and_only_positive_scores():
    scores = np.array([0.1, 0.5, 0.0, 0.3, -2.0], dtype=np.float32)
    assert top_n(scores, 2) == [1, 3]
    assert top_n(scores, 10) == [1, 3, 0]
    assert top_n(scores, 0) == []
    assert top_n(np.zeros(3), 3) == []
    assert top_n(np.array([]), 3) == []


@pytest.fixture
def index(fake_config):
    return build_store(fake_config.seeds_dir, fake_config.index_dir)


@pytest.mark.parametrize(
    "question",
    [
        "من نقل رسالة الرئیس الروسی إلی أمیر قطر؟",  # typed with Persian letters, like the article
        "من نقل رسالة الرئيس الروسي إلى أمير قطر؟",  # standard Arabic spelling
    ],
)
def test_hybrid_search_finds_the_persian_lettered_article_either_way(index, question):
    passages = search(index, HashEmbedder(), question, k=2)
    assert passages[0].chunk.article_id == "b_persian.txt"
    assert passages[0].bm25 > passages[1].bm25


def test_hybrid_search_for_a_standard_arabic_question(index):
    passages = search(index, HashEmbedder(), "متى زار بوتين قطر لأول مرة كرئيس؟", k=3)
    assert [p.chunk.article_id for p in passages][0] == "a_visit.txt"
    assert len(passages) == 3
    assert passages[0].score == pytest.approx(2 / 61)  # first in both rankings


def test_search_modes(index):
    question = "متى بدأت العلاقات الدبلوماسية بين قطر وروسيا؟"
    embedder = HashEmbedder()
    for mode in ("hybrid", "dense", "bm25"):
        assert search(index, embedder, question, k=1, mode=mode)[0].chunk.article_id == "c_relations.txt"
    [dense] = search(index, embedder, question, k=1, mode="dense")
    assert dense.score == pytest.approx(dense.dense)  # the cosine similarity is the score
    [lexical] = search(index, embedder, question, k=1, mode="bm25")
    assert lexical.score == pytest.approx(lexical.bm25) and lexical.bm25 > 0


def test_bm25_mode_returns_nothing_when_no_term_matches_while_dense_still_ranks(index):
    question = "ما عاصمة اليابان؟"
    assert search(index, HashEmbedder(), question, k=3, mode="bm25") == []
    assert len(search(index, HashEmbedder(), question, k=3, mode="dense")) == 3
    assert all(p.bm25 == 0 for p in search(index, HashEmbedder(), question, k=3))


def test_passage_to_dict_points_into_the_article(index):
    [passage] = search(index, HashEmbedder(), "بوغدانوف", k=1)
    d = passage.to_dict()
    assert set(d) == {"id", "source", "title", "date", "start", "end", "text", "score", "dense", "bm25"}
    assert index.article(d["source"]).text[d["start"] : d["end"]] == d["text"]


def test_k_larger_than_the_index(index):
    assert len(search(index, HashEmbedder(), "قطر", k=50)) == index.count()
