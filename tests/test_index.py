"""The on-disk index: manifest, incremental rebuilds, clear errors for bad folders, atomic writes, one writer."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ARTICLES, HashEmbedder

from rag import index as index_module
from rag.errors import RagError
from rag.index import FILES, _lock, build_index, load_index

NEW_ARTICLE = (
    "الغاز القطري في أوروبا\n"
    "وقعت قطر اتفاقا لتوريد الغاز الطبيعي المسال إلى ألمانيا لمدة خمسة عشر عاما.\n"
    "ويبدأ التوريد في عام 2026 من ميناء راس لفان."
)


def _build(seeds: Path, folder: Path, embedder=None, size=200, overlap=20, log=None):
    return build_index(seeds, folder, embedder or HashEmbedder(), size, overlap, log=log or (lambda *_: None))


def _chunks_of(folder: Path, article_id: str) -> int:
    return sum(c.article_id == article_id for c in load_index(folder).chunks)


@pytest.fixture
def built(fake_config):
    """(seeds, index folder, embedder) after a first build."""
    embedder = HashEmbedder()
    _build(fake_config.seeds_dir, fake_config.index_dir, embedder)
    return fake_config.seeds_dir, fake_config.index_dir, embedder


def test_build_writes_every_file_and_a_manifest(built):
    seeds, folder, embedder = built
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == index_module.FORMAT_VERSION
    assert manifest["embedder"] == {"id": "hash-embedder-64", "dims": 64}
    assert manifest["chunking"]["size"] == 200 and manifest["chunking"]["overlap"] == 20
    assert manifest["chunking"]["separators"]
    assert manifest["dense"]["type"] == "flat-ip"
    assert manifest["chunks"] == len(load_index(folder).chunks) == embedder.calls
    assert set(manifest["articles"]) == set(ARTICLES)
    for name, meta in manifest["articles"].items():
        assert meta["sha256"] == hashlib.sha256((seeds / name).read_bytes()).hexdigest()
    assert manifest["articles"]["a_visit.txt"]["date"] == "2022-10-12"
    assert {"numpy", "faiss-cpu", "bm25s"} <= set(manifest["versions"])


def test_loaded_index_round_trips(built):
    _, folder, _ = built
    index = load_index(folder)
    assert set(index.articles) == set(ARTICLES)
    assert index.vectors.shape == (len(index.chunks), 64)
    assert index.dense.ntotal == len(index.chunks)
    for c in index.chunks:
        assert index.articles[c.article_id].text[c.start : c.end] == c.text
    assert index.idf("بوغدانوف") > index.idf("قطر")  # rare terms weigh more


def test_rebuild_without_changes_embeds_nothing(built):
    seeds, folder, embedder = built
    before = load_index(folder).vectors
    calls = embedder.calls
    report = _build(seeds, folder, embedder)
    assert embedder.calls == calls
    assert report.embedded == 0
    assert sorted(report.unchanged) == sorted(ARTICLES)
    assert np.array_equal(load_index(folder).vectors, before)


def test_adding_an_article_embeds_only_its_chunks(built):
    seeds, folder, embedder = built
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    calls = embedder.calls
    report = _build(seeds, folder, embedder)
    assert report.added == ["d_gas.txt"]
    assert embedder.calls - calls == report.embedded == _chunks_of(folder, "d_gas.txt") > 0


def test_changing_an_article_re_embeds_only_it(built):
    seeds, folder, embedder = built
    (seeds / "b_persian.txt").write_text(ARTICLES["b_persian.txt"] + "\nوأكد الجانبان أهمية التعاون.", "utf-8")
    calls = embedder.calls
    report = _build(seeds, folder, embedder)
    assert report.changed == ["b_persian.txt"]
    assert embedder.calls - calls == _chunks_of(folder, "b_persian.txt")
    assert any("أهمية التعاون" in c.text for c in load_index(folder).chunks)


def test_removing_an_article_drops_its_chunks(built):
    seeds, folder, embedder = built
    (seeds / "c_relations.txt").unlink()
    calls = embedder.calls
    report = _build(seeds, folder, embedder)
    assert report.removed == ["c_relations.txt"]
    assert embedder.calls == calls
    index = load_index(folder)
    assert "c_relations.txt" not in index.articles
    assert all(c.article_id != "c_relations.txt" for c in index.chunks)
    assert len(index.vectors) == index.dense.ntotal == len(index.chunks)


class OtherEmbedder(HashEmbedder):
    id = "other-embedder-64"


def test_another_embedder_is_refused_at_search_and_re_embeds_everything(built):
    seeds, folder, _ = built
    with pytest.raises(RagError, match=r"built with embedder hash-embedder-64.*run `rag index`"):
        load_index(folder).check_compatible(OtherEmbedder.id, 200, 20)
    other = OtherEmbedder()
    logged = []
    report = _build(seeds, folder, other, log=logged.append)
    assert report.embedded == other.calls == report.chunks
    assert any("not reusing" in line for line in logged)
    load_index(folder).check_compatible(OtherEmbedder.id, 200, 20)


def test_changed_chunk_settings_are_refused_and_rebuild_everything(built):
    seeds, folder, embedder = built
    index = load_index(folder)
    index.check_compatible(HashEmbedder.id, 200, 20)
    with pytest.raises(RagError, match=r"chunk size/overlap 200/20.*300/20.*`rag index`"):
        index.check_compatible(HashEmbedder.id, 300, 20)
    with pytest.raises(RagError, match="`rag index`"):
        index.check_compatible(HashEmbedder.id, 200, 0)
    report = _build(seeds, folder, embedder, size=300)
    assert report.embedded == report.chunks


def test_missing_index_says_run_rag_index(tmp_path):
    with pytest.raises(RagError, match=r"no index in .*run `rag index`"):
        load_index(tmp_path / "nowhere")


def test_incomplete_index_says_run_rag_index(built):
    _, folder, _ = built
    (folder / "vectors.npy").unlink()
    with pytest.raises(RagError, match=r"incomplete \(missing vectors.npy\).*`rag index`"):
        load_index(folder)


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_from_manifest(folder: Path, key: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    del manifest[key]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda f: _cut_in_half(f / "chunks.jsonl"), id="chunks-cut-in-half"),
        pytest.param(lambda f: _cut_in_half(f / "articles.jsonl"), id="articles-cut-in-half"),
        pytest.param(lambda f: _cut_in_half(f / "dense.faiss"), id="faiss-truncated"),
        pytest.param(lambda f: (f / "manifest.json").write_text("{not json", "utf-8"), id="manifest-not-json"),
        pytest.param(lambda f: _drop_from_manifest(f, "embedder"), id="manifest-without-embedder"),
        pytest.param(lambda f: _drop_from_manifest(f, "chunking"), id="manifest-without-chunking"),
        pytest.param(lambda f: (f / "manifest.json").write_text("[1, 2]", "utf-8"), id="manifest-a-list"),
        pytest.param(lambda f: (f / "vectors.npy").write_bytes(b"\x93NUMPY garbage" * 5), id="vectors-garbage"),
        pytest.param(lambda f: (f / "chunks.jsonl").write_text('{"id": "x"}\n', "utf-8"), id="chunk-fields-missing"),
        pytest.param(lambda f: (f / "chunks.jsonl").write_text("", "utf-8"), id="chunk-count-differs"),
    ],
)
def test_corrupt_index_is_a_clear_error_never_a_traceback(built, damage):
    _, folder, _ = built
    damage(folder)
    with pytest.raises(RagError, match="`rag index`"):
        index = load_index(folder)
        index.check_compatible(HashEmbedder.id, 200, 20)


def test_old_format_version_is_refused(built):
    _, folder, _ = built
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 0
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(RagError, match=r"format version 0.*`rag index`"):
        load_index(folder)


def test_a_corrupt_index_is_rebuilt_from_scratch(built):
    seeds, folder, embedder = built
    _cut_in_half(folder / "chunks.jsonl")
    report = _build(seeds, folder, embedder)
    assert report.embedded == report.chunks == len(load_index(folder).chunks)


def _fail(*_args, **_kwargs):
    raise OSError(28, "No space left on device")


class _BrokenFaiss:
    """The faiss module, except that writing an index fails."""

    def __getattr__(self, name):
        import faiss

        return getattr(faiss, name)

    def write_index(self, *_args):
        raise RuntimeError("Error in faiss::FileIOWriter: No space left on device")


@pytest.mark.parametrize("where", ["jsonl", "faiss"])
def test_a_crash_while_writing_keeps_the_previous_index(built, monkeypatch, where):
    seeds, folder, embedder = built
    before = load_index(folder)
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    if where == "jsonl":
        monkeypatch.setattr(index_module, "_write_jsonl", _fail)
    else:
        monkeypatch.setattr(index_module, "_faiss", _BrokenFaiss)
    with pytest.raises(RagError, match="No space left.*previous index is unchanged"):
        _build(seeds, folder, embedder)
    after = load_index(folder)
    assert set(after.articles) == set(before.articles)
    assert [c.id for c in after.chunks] == [c.id for c in before.chunks]
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".index.")) == [".index.lock"]


def test_a_crash_while_swapping_folders_puts_the_previous_index_back(built, monkeypatch):
    seeds, folder, embedder = built
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    rename = Path.rename

    def flaky_rename(self, target):
        if ".tmp-" in self.name:
            raise OSError("interrupted")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", flaky_rename)
    with pytest.raises(RagError, match="interrupted"):
        _build(seeds, folder, embedder)
    monkeypatch.undo()
    assert set(load_index(folder).articles) == set(ARTICLES)
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".index.")) == [".index.lock"]


def test_a_temp_folder_left_by_a_killed_build_is_cleaned_up(built):
    seeds, folder, embedder = built
    stale = folder.parent / ".index.tmp-999999"
    stale.mkdir()
    (stale / "chunks.jsonl").write_text("half", encoding="utf-8")
    _build(seeds, folder, embedder)
    assert not stale.exists()


def test_a_second_build_while_one_holds_the_lock_is_refused(built):
    seeds, folder, embedder = built
    with _lock(folder), pytest.raises(RagError, match="another `rag index` is writing"):
        _build(seeds, folder, embedder)
    _build(seeds, folder, embedder)  # the lock is released afterwards


def test_build_errors_for_missing_or_empty_articles_folder(tmp_path):
    with pytest.raises(RagError, match="does not exist"):
        _build(tmp_path / "nowhere", tmp_path / "index")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("", encoding="utf-8")
    with pytest.raises(RagError, match="no readable .txt or .md articles"):
        _build(tmp_path / "empty", tmp_path / "index")
    assert not (tmp_path / "index").exists()


def test_skipped_files_are_reported_by_the_build(fake_config):
    (fake_config.seeds_dir / "z_bad.txt").write_bytes(b"\xff\xfe\x00")
    logged = []
    report = _build(fake_config.seeds_dir, fake_config.index_dir, log=logged.append)
    assert len(report.warnings) == 1 and "z_bad.txt" in report.warnings[0] and "UTF-8" in report.warnings[0]
    assert logged == report.warnings
    assert set(load_index(fake_config.index_dir).articles) == set(ARTICLES)
