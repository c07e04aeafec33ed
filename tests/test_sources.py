"""The sources tab without a browser: files added under safe names by rag.ingest's rules, refused or duplicate files,
articles moved aside, the list of indexed articles, and background builds while the chat answers."""

from __future__ import annotations

import io
import os
import tempfile
import threading
import unicodedata
import zipfile
from pathlib import Path

import pypdf
import pytest
from conftest import ARTICLES, HashEmbedder, ScriptedGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.assistant import Assistant
from rag.errors import RagError
from rag.formats import MAX_BYTES, SUFFIXES
from rag.index import build_index
from rag.library import DELETED, MAX_STEM_BYTES, Indexer, safe_name, store_file
from rag.stores.faiss import FaissStore
from rag.ui import Chat, Sources

MUSEUM_QUESTION = "متى افتتح متحف اللبان في صلالة؟"
MUSEUM = """<!DOCTYPE html><html lang="ar" dir="rtl"><head><meta charset="utf-8">
<title>افتتاح متحف اللبان في صلالة</title>
<meta property="article:published_time" content="2024-03-03T18:00:00+04:00"></head>
<body><article><h1>افتتاح متحف اللبان في صلالة</h1>
<p>افتتح متحف اللبان في مدينة صلالة العمانية في 3 مارس 2024 بحضور وزير التراث والسياحة وعدد من السفراء.</p>
<p>ويعرض المتحف تاريخ تجارة اللبان على طرق القوافل القديمة بين جنوب الجزيرة العربية والبحر المتوسط.</p>
</article></body></html>"""
POLL = 20  # seconds a test waits for a background build


def uploaded(folder: Path, name: str, data: bytes | str) -> str:
    """A file as Gradio hands it to the handler: a path in its upload folder, named as the user's file."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def finish(steps) -> tuple:
    """The last (status, list, menu, …) a handler yields."""
    return list(steps)[-1]


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under folder (hidden ones too), by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def answer_of(assistant: Assistant, question: str) -> str:
    """The HTML of the chat's final reply to a question."""
    messages, _, _ = list(Chat(assistant).respond(question, [], [], assistant.config.generator, 3, 0.0))[-1]
    return messages[-1]["content"]


def reply(messages: list[dict]) -> str:
    """The fake model's reply: the date of the museum's opening or of Putin's visit, whichever it was shown."""
    return "في 3 مارس 2024." if "اللبان" in messages[-1]["content"] else "في فبراير عام 2007."


@pytest.fixture
def assistant(fake_assistant) -> Assistant:
    """The fake assistant, its model answering questions about the museum page too."""
    return Assistant(fake_assistant.config, fake_assistant.embedder, fake_assistant.store, ScriptedGenerator(reply))


@pytest.fixture
def sources(assistant) -> Sources:
    return Sources(assistant)


# --- Safe names ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "stored"), [
    ("../../etc/passwd.txt", "passwd.txt"),
    ("C:\\Users\\sara\\Desktop\\خبر عاجل.PDF", "خبر عاجل.pdf"),
    (".bashrc.txt", "bashrc.txt"),
    ("..txt", "مقال.txt"),
    ("\u202egpj.exe.txt", "gpj.exe.txt"),  # a right-to-left override would show it as "txt.exe.jpg"
    ("زيارة\u200f بوتين\x00\n\t.html", "زيارة بوتين.html"),
    ('a<b>:c"d|e?f*.md', "abcdef.md"),
    ("مقال" * 100 + ".docx", ("مقال" * 100)[: MAX_STEM_BYTES // 2] + ".docx"),  # Arabic letters: 2 bytes
])
def test_safe_name_keeps_the_base_name_and_its_letters(name, stored):
    assert safe_name(name) == stored


@pytest.mark.parametrize("name", ["script.sh", "article.txt.", "..", "", "/", ".txt", "archive.zip"])
def test_safe_name_refuses_what_rag_index_would_not_read(name):
    with pytest.raises(ValueError, match=r"not a \.txt, \.md"):
        safe_name(name)


NAMES = st.one_of(st.text(), st.just("a.txt"),  # a.txt: the name of a file already there
                  st.builds(lambda stem, suffix: stem + suffix, st.text(), st.sampled_from(SUFFIXES)))


@given(names=st.lists(NAMES, min_size=1, max_size=4))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_stored_upload_lands_directly_in_the_folder_and_never_overwrites(names):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "seeds"
        folder.mkdir()
        (folder / "a.txt").write_text("قديم")
        for i, name in enumerate(names):
            try:
                safe = safe_name(name)
            except ValueError:
                continue
            before = files_in(folder)
            path = store_file(f"نص {i}".encode(), folder, safe)
            assert path.parent == folder and path.name in os.listdir(folder)
            assert not path.name.startswith(".") and not path.is_symlink()
            assert path.suffix in SUFFIXES and len(path.name.encode()) <= 255
            assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in path.name)
            assert files_in(folder) == {**before, path.name: f"نص {i}".encode()}  # one new file, nothing replaced


def test_a_name_in_use_gets_a_number(tmp_path):
    (tmp_path / "خبر.txt").write_text("الأول")
    (tmp_path / "خبر-2.txt").write_text("الثاني")
    assert store_file("الثالث".encode(), tmp_path, "خبر.txt").name == "خبر-3.txt"
    assert (tmp_path / "خبر.txt").read_text() == "الأول" and (tmp_path / "خبر-2.txt").read_text() == "الثاني"


# --- Adding files -------------------------------------------------------------------------------------------------


def test_an_uploaded_page_is_stored_indexed_listed_and_answered_from(sources, assistant, tmp_path):
    upload = uploaded(tmp_path / "gradio", "متحف اللبان.html", MUSEUM)
    status, listing, menu, box = finish(sources.upload([upload], "date"))
    assert "أُضيف <bdi>متحف اللبان.html</bdi>." in status and "اكتمل تحديث الفهرس: أُضيف 1" in status
    assert (assistant.config.seeds_dir / "متحف اللبان.html").read_text() == MUSEUM
    assert not Path(upload).exists() and box is None  # no copy left in Gradio's upload folder, the box emptied
    assert "افتتاح متحف اللبان في صلالة" in listing and "صفحة ويب" in listing and "المقالات المفهرسة: 4 ·" in listing
    assert ("افتتاح متحف اللبان في صلالة — متحف اللبان.html", "متحف اللبان.html") in menu.choices
    assert assistant.article("متحف اللبان.html").format == "html"  # the shared store switched
    answer = answer_of(assistant, MUSEUM_QUESTION)
    assert "<bdi>متحف اللبان.html</bdi>" in answer and "<mark>3 مارس 2024</mark>" in answer


def encrypted_pdf() -> bytes:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(595, 842)
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def scanned_pdf() -> bytes:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(595, 842)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def junk_docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("word/document.xml", "<not-xml")
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("locked.pdf", encrypted_pdf(), "encrypted PDF"),
    ("scan.pdf", scanned_pdf(), "no text layer"),
    ("broken.docx", junk_docx(), "docx"),
    ("data.txt", bytes(range(256)) * 4, "binary data"),
    ("windows.txt", "زار بوتين الدوحة في فبراير 2007.".encode("cp1256"), "not UTF-8 text"),
    ("empty.md", b"", "no text left"),
    ("huge.txt", b"a" * (MAX_BYTES[".txt"] + 1), "larger than 5 MB"),
    ("program.exe", b"MZ", "not a .txt"),
])
def test_a_file_that_cannot_be_read_is_refused_with_its_reason_and_leaves_nothing(sources, assistant, tmp_path,
                                                                                    name, data, reason):
    seeds = assistant.config.seeds_dir
    before, version = files_in(seeds), assistant.store.snapshot.folder
    status, listing, _, _ = finish(sources.upload([uploaded(tmp_path / "gradio", name, data)], "date"))
    assert f"رُفض <bdi>{name}</bdi>: <bdi>" in status and reason in status
    assert "تحديث الفهرس" not in status  # nothing to index
    assert files_in(seeds) == before and assistant.store.snapshot.folder == version
    assert not (tmp_path / "gradio" / name).exists()


def test_a_copy_of_an_indexed_article_is_reported_not_stored(sources, assistant, tmp_path):
    seeds = assistant.config.seeds_dir
    before = files_in(seeds)
    copy = uploaded(tmp_path / "gradio", "نسخة.txt", ARTICLES["a_visit.txt"])
    status, *_ = finish(sources.upload([copy], "date"))
    assert "لم يُضف <bdi>نسخة.txt</bdi>: نسخة مطابقة للمقال المفهرس <bdi>a_visit.txt</bdi>." in status
    assert files_in(seeds) == before
    twice = [uploaded(tmp_path / "one", "متحف.html", MUSEUM), uploaded(tmp_path / "two", "متحف (1).html", MUSEUM)]
    status, *_ = finish(sources.upload(twice, "date"))
    assert "أُضيف <bdi>متحف.html</bdi>" in status and "المفهرس <bdi>متحف.html</bdi>" in status
    assert set(files_in(seeds)) - set(before) == {"متحف.html"}


def test_a_new_file_named_like_an_article_is_stored_beside_it(sources, assistant, tmp_path):
    seeds = assistant.config.seeds_dir
    status, listing, *_ = finish(sources.upload([uploaded(tmp_path / "gradio", "a_visit.txt", MUSEUM.replace(
        "<!DOCTYPE html>", ""))], "date"))
    assert "أُضيف <bdi>a_visit.txt</bdi> باسم <bdi>a_visit-2.txt</bdi>." in status
    assert (seeds / "a_visit.txt").read_text(encoding="utf-8") == ARTICLES["a_visit.txt"]
    assert "<bdi>a_visit-2.txt</bdi>" in listing and "<bdi>a_visit.txt</bdi>" in listing


# --- Deleting -----------------------------------------------------------------------------------------------------


def test_deleting_moves_the_file_aside_and_its_answers_go(sources, assistant):
    seeds = assistant.config.seeds_dir
    assert "<bdi>a_visit.txt</bdi>" in answer_of(assistant, "متى زار بوتين قطر لأول مرة كرئيس؟")
    status, listing, menu = finish(sources.delete("a_visit.txt", "date"))
    assert f"نُقل <bdi>a_visit.txt</bdi> إلى <bdi>{DELETED}/a_visit.txt</bdi>" in status and "وحُذف 1" in status
    assert not (seeds / "a_visit.txt").exists()
    assert (seeds / DELETED / "a_visit.txt").read_text(encoding="utf-8") == ARTICLES["a_visit.txt"]
    assert "a_visit.txt" not in listing and "a_visit.txt" not in [value for _, value in menu.choices]
    with pytest.raises(RagError, match="no indexed article"):
        assistant.article("a_visit.txt")
    assert "a_visit.txt" not in answer_of(assistant, "متى زار بوتين قطر لأول مرة كرئيس؟")

    (seeds / "a_visit.txt").write_text("نص آخر عن زيارة أخرى إلى الدوحة في صيف عام 2010 لبحث ملف الطاقة.")
    finish(sources.rebuild("date"))
    finish(sources.delete("a_visit.txt", "date"))  # deleted twice: the first copy is kept
    assert sorted(p.name for p in (seeds / DELETED).iterdir()) == ["a_visit-2.txt", "a_visit.txt"]


@pytest.mark.parametrize("article_id", [None, "", "../index/current", "missing.txt", ".deleted/a_visit.txt"])
def test_only_an_indexed_article_can_be_deleted(sources, assistant, article_id):
    before = files_in(assistant.config.seeds_dir)
    status, *_ = finish(sources.delete(article_id, "date"))
    assert "اختر من القائمة مقالاً مفهرساً" in status and files_in(assistant.config.seeds_dir) == before


def test_an_article_whose_file_is_gone_is_dropped_by_updating_the_index(sources, assistant):
    (assistant.config.seeds_dir / "b_persian.txt").unlink()
    status, listing, _ = finish(sources.delete("b_persian.txt", "date"))
    assert "رُفض <bdi>b_persian.txt</bdi>: <bdi>no longer in the articles folder" in status
    assert "b_persian.txt" in listing
    status, listing, _ = finish(sources.rebuild("date"))
    assert "وحُذف 1" in status and "b_persian.txt" not in listing


def test_the_last_article_is_not_deleted(sources, assistant):
    finish(sources.delete("b_persian.txt", "date"))
    finish(sources.delete("c_relations.txt", "date"))
    status, listing, _ = finish(sources.delete("a_visit.txt", "date"))
    assert "لا يُحذف المقال الوحيد" in status and "<bdi>a_visit.txt</bdi>" in listing
    assert (assistant.config.seeds_dir / "a_visit.txt").exists()


# --- The list -----------------------------------------------------------------------------------------------------


def test_the_list_shows_the_manifest_newest_first_or_by_title(sources):
    listing, menu = sources.show("date")
    rows = listing.split("<tr>")[2:]
    assert "2022-10-12" in rows[0] and "زيارة بوتين إلى الدوحة" in rows[0] and '<td class="num">1</td>' in rows[0]
    assert "<td>نص</td>" in rows[0] and "المقالات المفهرسة: 3 · المقاطع: 3" in listing
    by_title, _ = sources.show("title")
    titles = [row.split("</td>")[0].split(">")[-1] for row in by_title.split("<tr>")[2:]]
    assert titles == sorted(titles, key=str.casefold)
    assert [value for _, value in menu.choices] == ["c_relations.txt", "b_persian.txt", "a_visit.txt"]


def test_the_list_reflects_an_index_built_elsewhere_once_refreshed(sources, assistant, tmp_path):
    seeds = assistant.config.seeds_dir
    assert "d_museum.html" not in sources.show("date")[0]
    (seeds / "d_museum.html").write_text(MUSEUM, encoding="utf-8")
    build_index(seeds, FaissStore(assistant.config.index_dir), HashEmbedder(), 200, 20, log=lambda *_: None)
    assert "d_museum.html" not in sources.show("date")[0]  # `rag index` ran in a terminal: not loaded yet
    status, listing, _ = sources.reload("date")
    assert "d_museum.html" in listing and assistant.article("d_museum.html")


def test_titles_and_names_are_escaped(sources, tmp_path):
    text = "<script>alert(1)</script> عنوان المقال هنا\nافتتح متحف اللبان في مدينة صلالة العمانية في 3 مارس 2024."
    _, listing, menu, _ = finish(sources.upload([uploaded(tmp_path / "g", "<b>x.txt", text)], "date"))
    assert "<script" not in listing and "&lt;script&gt;alert(1)&lt;/script&gt; عنوان المقال هنا" in listing
    assert "<bdi>bx.txt</bdi>" in listing


# --- Building in the background -----------------------------------------------------------------------------------


class GatedEmbedder(HashEmbedder):
    """Embeds questions at once, and of the articles' batches the first `free`, then the rest once `release` is set."""

    def __init__(self, free: int = 0):
        super().__init__()
        self.free = free
        self.release, self.waiting = threading.Event(), threading.Event()

    def embed_batch(self, texts, kind):
        if kind == "document":
            self.free -= 1
            if self.free < 0:
                self.waiting.set()
                assert self.release.wait(POLL)
        return super().embed_batch(texts, kind)


@pytest.fixture
def gated(assistant) -> Assistant:
    """The assistant with an embedder that holds every build until released."""
    return Assistant(assistant.config, GatedEmbedder(), assistant.store, assistant.generator)


def test_the_chat_answers_from_the_old_index_while_the_new_one_is_built(gated, tmp_path, monkeypatch):
    monkeypatch.setattr("rag.ui.POLL", 0.05)
    steps = Sources(gated).upload([uploaded(tmp_path / "gradio", "museum.html", MUSEUM)], "date")
    status, listing, _, _ = next(steps)
    assert gated.embedder.waiting.wait(POLL)
    assert "جارٍ تحديث الفهرس" in status and "museum.html" not in listing
    assert "تبقى المحادثة متاحة" in status
    answer = answer_of(gated, "متى زار بوتين قطر لأول مرة كرئيس؟")  # while the build waits
    assert "<mark>فبراير عام 2007</mark>" in answer
    assert "museum.html" not in answer_of(gated, MUSEUM_QUESTION)
    gated.embedder.release.set()
    status, listing, _, _ = list(steps)[-1]
    assert "اكتمل تحديث الفهرس" in status and "museum.html" in listing
    assert "<mark>3 مارس 2024</mark>" in answer_of(gated, MUSEUM_QUESTION)


def test_a_second_upload_during_a_build_waits_for_the_next_build(gated, tmp_path, monkeypatch):
    monkeypatch.setattr("rag.ui.POLL", 0.05)
    indexer = Indexer(gated.config, gated.embedder, gated.store)
    first, second = Sources(gated, indexer), Sources(gated, indexer)
    results = []
    run = threading.Thread(target=lambda: results.append(finish(first.upload(
        [uploaded(tmp_path / "one", "museum.html", MUSEUM)], "date"))))
    run.start()
    assert gated.embedder.waiting.wait(POLL)
    steps = second.upload([uploaded(tmp_path / "two", "incense.html", MUSEUM.replace("اللبان", "البخور"))], "date")
    status, listing, _, _ = next(steps)  # stored, and waiting for the build after the running one
    assert "أُضيف <bdi>incense.html</bdi>" in status and "جارٍ تحديث الفهرس" in status
    assert "incense.html" not in listing
    gated.embedder.release.set()
    status, listing, _, _ = list(steps)[-1]
    run.join(POLL)
    assert "اكتمل تحديث الفهرس: أُضيف 1" in results[0][0] and "museum.html" in results[0][1]
    assert "اكتمل تحديث الفهرس: أُضيف 1" in status and "museum.html" in listing and "incense.html" in listing
    assert not indexer.status().building


def test_a_failed_build_is_reported_and_the_files_wait_for_the_next(sources, assistant, tmp_path):
    with FaissStore(assistant.config.index_dir).building():  # a `rag index` running in a terminal
        status, listing, _, _ = finish(sources.upload([uploaded(tmp_path / "g", "museum.html", MUSEUM)], "date"))
    assert "لم يُحدَّث الفهرس: <bdi>another `rag index` is writing" in status and "museum.html" not in listing
    assert (assistant.config.seeds_dir / "museum.html").exists()
    status, listing, _ = finish(sources.rebuild("date"))
    assert "اكتمل تحديث الفهرس: أُضيف 1" in status and "museum.html" in listing


def test_closing_stops_a_running_build_and_waits_for_it(gated):
    (gated.config.seeds_dir / "museum.html").write_text(MUSEUM, encoding="utf-8")
    indexer = Indexer(gated.config, gated.embedder, gated.store)
    indexer.request()
    assert gated.embedder.waiting.wait(POLL)  # embedding the new article's first batch
    closing = threading.Thread(target=indexer.close)
    closing.start()
    gated.embedder.release.set()  # the batch ends; the build stops before the next
    closing.join(POLL)
    assert not closing.is_alive() and not indexer.status().building
    assert "stopped" in indexer.status().error
    assert "museum.html" not in FaissStore(gated.config.index_dir).manifest()["articles"]  # nothing published
    assert not [p for p in gated.config.index_dir.iterdir() if p.name.startswith(".tmp-")]
    indexer.request()  # a closed indexer starts no new build
    assert not indexer.status().building
