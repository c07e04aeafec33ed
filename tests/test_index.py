"""`rag index` into the FAISS store: manifest, incremental rebuilds, a folder it owns, versions published atomically,
clear errors for bad folders, one writer at a time, readers that never see a rebuild."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ARTICLES, HashEmbedder, build_store, read_during
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.errors import RagError
from rag.index import build_index
from rag.stores import faiss as faiss_store
from rag.stores.base import FORMAT_VERSION, check_compatible
from rag.stores.faiss import FILES, MARKER, POINTER, FaissStore

NEW_ARTICLE = (
    "الغاز القطري في أوروبا\n"
    "وقعت قطر اتفاقا لتوريد الغاز الطبيعي المسال إلى ألمانيا لمدة خمسة عشر عاما.\n"
    "ويبدأ التوريد في عام 2026 من ميناء راس لفان."
)


def _build(seeds: Path, folder: Path, embedder=None, size=200, overlap=20, log=None):
    return build_index(seeds, FaissStore(folder), embedder or HashEmbedder(), size, overlap,
                       log=log or (lambda *_: None))


def _snapshot(folder: Path):
    return FaissStore(folder).snapshot


def _chunks_of(folder: Path, article_id: str) -> int:
    return sum(c.article_id == article_id for c in _snapshot(folder).chunks)


def _version(folder: Path) -> Path:
    return folder / (folder / POINTER).read_text().strip()


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file below a folder and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def built(fake_config):
    """(seeds, index folder, embedder) after a first build."""
    embedder = HashEmbedder()
    _build(fake_config.seeds_dir, fake_config.index_dir, embedder)
    return fake_config.seeds_dir, fake_config.index_dir, embedder


def test_build_writes_a_marked_folder_with_one_published_version(built):
    seeds, folder, embedder = built
    assert sorted(p.name for p in folder.iterdir()) == sorted([MARKER, POINTER, ".lock", "v000001"])
    assert sorted(p.name for p in _version(folder).iterdir()) == sorted([*FILES, ".readers"])
    manifest = json.loads((_version(folder) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["embedder"] == {"id": "hash-embedder-64", "dims": 64}
    assert manifest["chunking"]["size"] == 200 and manifest["chunking"]["overlap"] == 20
    assert manifest["chunking"]["separators"]
    assert manifest["store"] == "faiss" and manifest["dense"]["type"] == "flat-ip"
    assert manifest["chunks"] == len(_snapshot(folder).chunks) == embedder.calls
    assert set(manifest["articles"]) == set(ARTICLES)
    for name, meta in manifest["articles"].items():
        assert meta["sha256"] == hashlib.sha256((seeds / name).read_bytes()).hexdigest()
        assert meta["format"] == "text" and meta["chunks"] == _chunks_of(folder, name)
    assert manifest["articles"]["a_visit.txt"]["date"] == "2022-10-12"
    assert {"numpy", "faiss-cpu", "bm25s"} <= set(manifest["versions"])


def test_loaded_index_round_trips(built):
    _, folder, _ = built
    store = FaissStore(folder)
    snap = store.snapshot
    assert set(snap.articles) == set(ARTICLES)
    assert snap.vectors.shape == (len(snap.chunks), 64) and snap.dense.ntotal == store.count()
    for c in snap.chunks:
        assert store.article(c.article_id).text[c.start : c.end] == c.text
    idf = store.idf(["بوغدانوف", "قطر"])
    assert idf["بوغدانوف"] > idf["قطر"]  # rare terms weigh more
    with pytest.raises(RagError, match="no indexed article named 'x.txt'"):
        store.article("x.txt")


def test_rebuild_without_changes_embeds_nothing_and_keeps_the_previous_version(built):
    seeds, folder, embedder = built
    before = _snapshot(folder).vectors
    calls = embedder.calls
    report = _build(seeds, folder, embedder)
    assert embedder.calls == calls and report.embedded == 0
    assert sorted(report.unchanged) == sorted(ARTICLES)
    assert np.array_equal(_snapshot(folder).vectors, before)
    assert _version(folder).name == "v000002" and (folder / "v000001").is_dir()  # the previous version stays
    _build(seeds, folder, embedder)
    assert sorted(p.name for p in folder.glob("v*")) == ["v000002", "v000003"]  # older ones go


def test_adding_an_article_embeds_only_its_chunks(built):
    seeds, folder, embedder = built
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    calls = embedder.calls
    report = _build(seeds, folder, embedder)
    assert report.added == ["d_gas.txt"]
    assert embedder.calls - calls == report.embedded == _chunks_of(folder, "d_gas.txt") > 0
    assert report.chunks == FaissStore(folder).count()


def test_changing_an_article_re_embeds_only_it(built):
    seeds, folder, embedder = built
    (seeds / "b_persian.txt").write_text(ARTICLES["b_persian.txt"] + "\nوأكد الجانبان أهمية التعاون.", "utf-8")
    calls = embedder.calls
    report = _build(seeds, folder, embedder)
    assert report.changed == ["b_persian.txt"]
    assert embedder.calls - calls == _chunks_of(folder, "b_persian.txt")
    assert any("أهمية التعاون" in c.text for c in _snapshot(folder).chunks)


def test_reused_vectors_stay_with_their_chunks(built):
    seeds, folder, embedder = built
    (seeds / "a_visit.txt").write_text(ARTICLES["a_visit.txt"] + "\nوتم توقيع اتفاقيات.", "utf-8")
    _build(seeds, folder, embedder)
    snap = _snapshot(folder)
    fresh = HashEmbedder().embed_batch([c.text for c in snap.chunks], "document")
    assert np.allclose(snap.vectors, fresh, atol=1e-6)


def test_removing_an_article_drops_its_chunks(built):
    seeds, folder, embedder = built
    (seeds / "c_relations.txt").unlink()
    calls = embedder.calls
    report = _build(seeds, folder, embedder)
    assert report.removed == ["c_relations.txt"] and embedder.calls == calls
    snap = _snapshot(folder)
    assert "c_relations.txt" not in snap.articles
    assert all(c.article_id != "c_relations.txt" for c in snap.chunks)
    assert len(snap.vectors) == snap.dense.ntotal == len(snap.chunks)


class OtherEmbedder(HashEmbedder):
    id = "other-embedder-64"


def test_another_embedder_is_refused_at_search_and_re_embeds_everything(built):
    seeds, folder, _ = built
    with pytest.raises(RagError, match=r"built with embedder hash-embedder-64.*run `rag index`"):
        check_compatible(FaissStore(folder).manifest(), str(folder), OtherEmbedder.id, 200, 20)
    other = OtherEmbedder()
    logged = []
    report = _build(seeds, folder, other, log=logged.append)
    assert report.embedded == other.calls == report.chunks
    assert any("not reusing" in line for line in logged)
    check_compatible(FaissStore(folder).manifest(), str(folder), OtherEmbedder.id, 200, 20)


def test_changed_chunk_settings_are_refused_and_rebuild_everything(built):
    seeds, folder, embedder = built
    manifest = FaissStore(folder).manifest()
    check_compatible(manifest, str(folder), HashEmbedder.id, 200, 20)
    with pytest.raises(RagError, match=r"chunk size/overlap 200/20.*300/20.*`rag index`"):
        check_compatible(manifest, str(folder), HashEmbedder.id, 300, 20)
    report = _build(seeds, folder, embedder, size=300)
    assert report.embedded == report.chunks


def test_missing_index_says_run_rag_index(tmp_path):
    with pytest.raises(RagError, match=r"no index in .*run `rag index`"):
        FaissStore(tmp_path / "nowhere").manifest()


def test_incomplete_index_says_run_rag_index(built):
    _, folder, _ = built
    (_version(folder) / "vectors.npy").unlink()
    with pytest.raises(RagError, match=r"incomplete \(missing vectors.npy\).*`rag index`"):
        FaissStore(folder).manifest()


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
    damage(_version(folder))
    with pytest.raises(RagError, match="`rag index`"):
        check_compatible(FaissStore(folder).manifest(), str(folder), HashEmbedder.id, 200, 20)


def test_old_format_version_is_refused(built):
    _, folder, _ = built
    manifest = json.loads((_version(folder) / "manifest.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 0
    (_version(folder) / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(RagError, match=r"format version 0.*`rag index`"):
        FaissStore(folder).manifest()


def test_a_corrupt_index_is_rebuilt_from_scratch(built):
    seeds, folder, embedder = built
    _cut_in_half(_version(folder) / "chunks.jsonl")
    report = _build(seeds, folder, embedder)
    assert report.embedded == report.chunks == FaissStore(folder).count()



json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
# Every field a reader uses, as the keys leading to it: in the manifest, and in any row of the two JSONL files.
MANIFEST_KEYS = [("format_version",), ("embedder",), ("embedder", "id"), ("embedder", "dims"), ("chunking",),
                 ("chunking", "size"), ("chunking", "overlap"), ("chunks",), ("articles",), ("articles", "a_visit.txt"),
                 *[("articles", "a_visit.txt", key) for key in ("sha256", "chunks", "title", "date")]]
ROW_KEYS = {"articles.jsonl": ["id", "title", "date", "text", "sha256", "format"],
            "chunks.jsonl": ["id", "article_id", "title", "date", "start", "end", "text"]}


def _change(document: dict, keys: tuple, value, drop: bool) -> None:
    """Set the field the keys lead to, or remove it."""
    for key in keys[:-1]:
        document = document[key]
    if drop:
        del document[keys[-1]]
    else:
        document[keys[-1]] = value


@given(data=st.data(), drop=st.booleans(), value=json_values)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_edited_field_of_an_index_is_one_line_and_rag_index_builds_a_fresh_one(tmp_path_factory, data, drop,
                                                                                    value):
    root = tmp_path_factory.mktemp("edited")
    seeds = root / "seeds"
    seeds.mkdir()
    for name, text in ARTICLES.items():
        (seeds / name).write_text(text, encoding="utf-8")
    _build(seeds, root / "index")
    version = _version(root / "index")
    file = data.draw(st.sampled_from(["manifest.json", *ROW_KEYS]))
    path = version / file
    if file == "manifest.json":
        manifest = json.loads(path.read_text(encoding="utf-8"))
        _change(manifest, data.draw(st.sampled_from(MANIFEST_KEYS)), value, drop)
        path.write_text(json.dumps(manifest), encoding="utf-8")
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        row = data.draw(st.sampled_from(rows))
        _change(row, (data.draw(st.sampled_from(ROW_KEYS[file])),), value, drop)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    try:
        FaissStore(root / "index").manifest()
    except RagError as e:  # damage a reader relies on: one line, naming the file
        assert "\n" not in str(e) and "`rag index`" in str(e)
    report = _build(seeds, root / "index")  # whatever was damaged, a fresh version is built over it
    assert FaissStore(root / "index").count() == report.chunks > 0

def test_files_named_like_an_index_are_refused_and_left_untouched(built, tmp_path):
    seeds, folder, embedder = built
    mydata = tmp_path / "mydata"  # a user's files that happen to bear the names of an index's (or format 1's)
    (mydata / "bm25").mkdir(parents=True)
    (mydata / "manifest.json").write_text('{"name": "x"}')
    (mydata / "articles.jsonl").write_text('{"id": 1}')
    (mydata / "bm25" / "thesis.txt").write_text("the user's")
    before = {p: p.read_bytes() for p in mydata.rglob("*") if p.is_file()}
    with pytest.raises(RagError, match="not an index folder.*nothing was changed"):
        _build(seeds, mydata, embedder)
    with pytest.raises(RagError, match="no index in"):
        FaissStore(mydata).manifest()
    assert {p: p.read_bytes() for p in mydata.rglob("*") if p.is_file()} == before


def _fail(*_args, **_kwargs):
    raise OSError(28, "No space left on device")


class _BrokenFaiss:
    """The faiss module, except that writing an index fails."""

    def __getattr__(self, name):
        import faiss

        return getattr(faiss, name)

    def write_index(self, *_args):
        raise RuntimeError("Error in faiss::FileIOWriter: No space left on device")


@pytest.mark.parametrize("where", ["jsonl", "faiss", "pointer"])
def test_a_crash_while_writing_keeps_the_previous_index_and_leaves_nothing(built, monkeypatch, where):
    seeds, folder, embedder = built
    before = _snapshot(folder)
    files = sorted(p.name for p in folder.iterdir())
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    if where == "jsonl":
        monkeypatch.setattr(faiss_store, "_write_jsonl", _fail)
    elif where == "faiss":
        monkeypatch.setattr(faiss_store, "_faiss", _BrokenFaiss)
    else:
        monkeypatch.setattr(faiss_store.os, "replace", _fail)
    with pytest.raises(RagError, match="No space left.*previous index is unchanged"):
        _build(seeds, folder, embedder)
    monkeypatch.undo()
    after = _snapshot(folder)
    assert set(after.articles) == set(before.articles)
    assert [c.id for c in after.chunks] == [c.id for c in before.chunks]
    assert sorted(p.name for p in folder.iterdir()) == files


def test_leftovers_of_a_killed_build_are_cleaned_up_and_nothing_else(built):
    seeds, folder, embedder = built
    stale = folder / ".tmp-v000009-999999"
    stale.mkdir()
    (stale / faiss_store.READERS).touch()  # what a build writes first into its temp folder: proof that it is ours
    (stale / "chunks.jsonl").write_text("half", encoding="utf-8")
    (folder / f".tmp-{POINTER}-999999").write_text("v000009", encoding="utf-8")
    (folder / "notes.txt").write_text("mine", encoding="utf-8")  # the user's own file in the index folder
    users = folder / ".tmp-v000010-1"  # named like a temp folder, but not one a build wrote
    users.mkdir()
    (users / "draft.txt").write_text("mine", encoding="utf-8")
    _build(seeds, folder, embedder)
    assert not stale.exists() and not (folder / f".tmp-{POINTER}-999999").exists()
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (users / "draft.txt").read_text(encoding="utf-8") == "mine"


def test_a_second_build_while_one_holds_the_lock_is_refused(built):
    seeds, folder, embedder = built
    with FaissStore(folder).building(), pytest.raises(RagError, match="another `rag index` is writing"):
        _build(seeds, folder, embedder)
    _build(seeds, folder, embedder)  # the lock is released afterwards


def test_build_errors_for_missing_or_empty_articles_folder(tmp_path):
    with pytest.raises(RagError, match="does not exist"):
        _build(tmp_path / "nowhere", tmp_path / "index")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("", encoding="utf-8")
    with pytest.raises(RagError, match="no readable articles"):
        _build(tmp_path / "empty", tmp_path / "index")
    assert not (tmp_path / "index" / POINTER).exists()


def test_skipped_files_are_reported_by_the_build(fake_config):
    (fake_config.seeds_dir / "z_bad.txt").write_bytes(b"\xff\xfe\x00")
    logged = []
    report = _build(fake_config.seeds_dir, fake_config.index_dir, log=logged.append)
    assert len(report.warnings) == 1 and "z_bad.txt" in report.warnings[0]
    assert logged == report.warnings
    assert set(_snapshot(fake_config.index_dir).articles) == set(ARTICLES)


# --- A folder the project writes into is one it owns ----------------------------------------------------------


def test_index_dir_set_to_the_articles_folder_loses_nothing(seeds):
    (seeds / "report.docx").write_bytes(b"PK\x03\x04 a word file")
    (seeds / "2024").mkdir()
    (seeds / "2024" / "old.txt").write_text("مقال قديم", encoding="utf-8")
    before = _tree(seeds)
    with pytest.raises(RagError, match=r"is not an index folder .*nothing was changed"):
        _build(seeds, seeds)
    assert _tree(seeds) == before
    assert sorted(p.name for p in seeds.iterdir()) == sorted([*ARTICLES, "report.docx", "2024"])


@pytest.mark.parametrize("target", ["parent", "home-like", "a-file"])
def test_any_folder_that_is_not_an_index_is_refused_untouched(seeds, tmp_path, target):
    if target == "parent":
        folder = seeds.parent  # holds the articles folder
    elif target == "home-like":
        folder = tmp_path / "home"
        (folder / ".config").mkdir(parents=True)
        (folder / ".bashrc").write_text("x")
    else:
        folder = tmp_path / "a-file"
        folder.write_text("not a folder")
    before = _tree(folder) if folder.is_dir() else folder.read_bytes()
    with pytest.raises(RagError, match="index_dir"):
        _build(seeds, folder)
    assert (_tree(folder) if folder.is_dir() else folder.read_bytes()) == before


def test_an_index_inside_the_articles_folder_is_not_read_as_articles(seeds):
    report = _build(seeds, seeds / "index")
    assert sorted(report.added) == sorted(ARTICLES)
    report = _build(seeds, seeds / "index")
    assert not report.warnings and sorted(report.unchanged) == sorted(ARTICLES)


def test_an_unwritable_index_folder_fails_before_any_embedding(seeds, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    embedder = HashEmbedder()
    try:
        with pytest.raises(RagError, match="cannot write the index folder .*nothing was changed"):
            _build(seeds, parent / "index", embedder)
    finally:
        parent.chmod(0o700)
    assert embedder.calls == 0


def test_a_read_only_index_folder_fails_before_any_embedding(seeds, tmp_path, monkeypatch):
    embedder = HashEmbedder()

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(RagError, match=r"cannot write the index folder .*\(Permission denied\); nothing was changed"):
        _build(seeds, tmp_path / "new-index", embedder)
    assert embedder.calls == 0


# --- Readers never see a rebuild -------------------------------------------------------------------------------


def test_readers_during_back_to_back_rebuilds_always_get_a_whole_index(built):
    seeds, folder, embedder = built

    def rebuild(n: int) -> None:
        (seeds / "d_gas.txt").write_text(NEW_ARTICLE + f"\nتحديث رقم {n}.", encoding="utf-8")
        _build(seeds, folder, embedder)

    errors, loads = read_during(lambda: FaissStore(folder).count(), rebuild, 12)
    assert errors == [] and len(loads) > 12


def test_refresh_switches_a_loaded_store_to_the_new_version(built):
    seeds, folder, embedder = built
    store = FaissStore(folder)
    assert not store.refresh() or store.count()
    before = store.count()
    (seeds / "d_gas.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    _build(seeds, folder, embedder)
    assert store.count() == before  # a loaded version stays until asked
    assert store.refresh() and store.count() > before
    assert not store.refresh()


@given(name=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                    min_size=1, max_size=30))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_whatever_the_name_of_a_users_file_a_build_never_removes_it(tmp_path_factory, name):
    seeds = tmp_path_factory.mktemp("seeds")
    (seeds / "a.txt").write_text(ARTICLES["a_visit.txt"], encoding="utf-8")
    folder = tmp_path_factory.mktemp("index")
    _build(seeds, folder)
    if name in (".", "..", MARKER, POINTER, ".lock") or name.startswith(".tmp-"):
        return  # the project's own names
    try:
        (folder / name).write_text("the user's", encoding="utf-8")
    except OSError:
        return  # a name this file system refuses
    for _ in range(3):
        _build(seeds, folder)
    assert (folder / name).read_text(encoding="utf-8") == "the user's"


def test_a_build_through_the_helper_matches_a_direct_one(fake_config):
    store = build_store(fake_config.seeds_dir, fake_config.index_dir)
    assert store.count() == len(_snapshot(fake_config.index_dir).chunks)
