"""Reading a journalist's own files: saved web pages, PDFs and Word files, made here at run time by the real tools."""

from __future__ import annotations

import io
import random
import socket
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import arabic_reshaper
import docx
import pypdf
import pytest
from bidi.algorithm import get_display  # the full bidi algorithm, which mirrors brackets as a renderer does
from conftest import zip_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from rag.errors import RagError
from rag.formats import READERS, Extracted, from_docx, from_html, from_pdf

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Debian's fonts-dejavu-core: DejaVu Sans has glyphs for the Arabic presentation forms (Noto's Arabic fonts do not).
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

TITLE = "بوتين يزور الدوحة لبحث التعاون في الغاز"
BODY = [
    "وصل الرئيس الروسي فلاديمير بوتين إلى الدوحة صباح اليوم في زيارة رسمية تستمر يومين، يلتقي خلالها أمير قطر.",
    "وقال مسؤولون إن المحادثات ستتناول التعاون في مجال الغاز الطبيعي المسال (LNG) والاستثمارات المشتركة.",
    "وتبلغ قيمة الاتفاقيات 12.5 مليار دولار بنسبة نمو 30% عن عام 2023، وفق وكالة Reuters.",
]
NEWS_PAGE = f"""<!DOCTYPE html>
<html lang="ar" dir="rtl"><head><meta charset="utf-8">
<title>{TITLE} | جريدة الخليج</title>
<meta property="og:title" content="{TITLE}">
<meta property="article:published_time" content="2024-03-15T08:30:00+03:00">
<meta name="author" content="سارة أحمد">
</head><body>
<header><nav><ul><li><a href="/">الرئيسية</a></li><li><a href="/sport">رياضة</a></li>
<li><a href="/economy">اقتصاد وأعمال</a></li><li><a href="/contact">اتصل بنا</a></li></ul></nav></header>
<main><article>
<h1>{TITLE}</h1>
<div class="share"><a href="#">شارك على فيسبوك</a> <a href="#">شارك على تويتر</a> <a href="#">نسخ الرابط</a></div>
<div class="content"><p>{BODY[0]}</p><p>{BODY[1]}</p><p>{BODY[2]}</p></div>
<aside class="related"><h3>اقرأ أيضا</h3><ul>
<li><a href="/a1">أسعار النفط ترتفع مع تراجع المخزونات الأمريكية للأسبوع الثالث</a></li>
<li><a href="/a2">قطر توقع اتفاقية جديدة لتوريد الغاز المسال إلى أوروبا</a></li></ul></aside>
</article>
<section id="comments" class="comments"><h3>التعليقات</h3>
<div class="comment"><p>تعليق القارئ: زيارة مهمة جدا للمنطقة كلها ونتمنى لها النجاح والتوفيق.</p></div>
<div class="comment"><p>هذا كلام غير دقيق والأرقام مبالغ فيها كثيرا في رأيي الشخصي.</p></div>
</section></main>
<footer><p>جميع الحقوق محفوظة لجريدة الخليج 2024</p><a href="/privacy">سياسة الخصوصية</a></footer>
</body></html>"""


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: reading a file must never fetch anything."""

    def refuse(*args, **kwargs):
        raise AssertionError("a reader tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def words(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------------------------------------------------------
# HTML


def test_news_page_gives_the_article_without_menus_comments_or_footer(no_network):
    page = from_html(NEWS_PAGE.encode())
    assert page.format == "html"
    assert (page.title, page.date) == (TITLE, "2024-03-15")
    assert page.text.split("\n") == [TITLE, *BODY]  # one paragraph a line
    for crumb in ["الرئيسية", "اقتصاد وأعمال", "شارك على", "نسخ الرابط", "اقرأ أيضا", "أسعار النفط", "التعليقات",
                  "زيارة مهمة جدا", "مبالغ فيها", "جميع الحقوق", "سياسة الخصوصية"]:
        assert crumb not in page.text


def test_windows_1256_page_is_read_by_its_meta_charset(no_network):
    html = NEWS_PAGE.replace('<meta charset="utf-8">', '<meta charset="windows-1256">')
    page = from_html(html.encode("cp1256"))
    assert (page.title, page.date) == (TITLE, "2024-03-15")
    assert page.text.split("\n") == [TITLE, *BODY]


def test_utf8_page_without_any_charset_declaration():
    page = from_html(NEWS_PAGE.replace('<meta charset="utf-8">', "").encode())
    assert page.text.split("\n") == [TITLE, *BODY]


SECTION_PAGE = """<html lang="ar"><head><meta charset="utf-8"><title>اقتصاد | جريدة الخليج</title></head><body>
<nav><ul><li><a href="/">الرئيسية</a></li><li><a href="/sport">رياضة</a></li></ul></nav>
<main><h2>الأكثر قراءة</h2><ul>
<li><a href="/a1">أسعار النفط ترتفع مع تراجع المخزونات الأمريكية للأسبوع الثالث</a></li>
<li><a href="/a2">قطر توقع اتفاقية جديدة لتوريد الغاز إلى أوروبا لمدة عشرين عاما</a></li></ul></main>
<footer>جميع الحقوق محفوظة لجريدة الخليج 2024</footer></body></html>"""


@pytest.mark.parametrize(
    "html",
    [
        SECTION_PAGE,
        "<html><body><nav><a href='/'>الرئيسية</a> <a href='/s'>رياضة</a></nav><footer>جميع الحقوق محفوظة</footer>"
        "</body></html>",
        "<html><body></body></html>",
        "",
    ],
    ids=["section-page", "menu-only", "empty-body", "empty-file"],
)
def test_page_without_article_text_is_refused(html):
    with pytest.raises(ValueError, match="no article text"):
        from_html(html.encode())


# ---------------------------------------------------------------------------------------------------------------
# PDF printed by Chromium: what a journalist gets from "Print > Save as PDF"

PRINTED = [
    "زيارة بوتين إلى الدوحة",
    "15 مارس 2024",
    "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007، وهي أول زيارة له إلى قطر كرئيس. "
    "وبحث الجانبان التعاون في مجال الغاز الطبيعي المسال (LNG) والاستثمارات المشتركة.",
    "وقال المتحدث باسم الكرملين إن الرئيس سيلتقي أمير قطر لبحث العلاقات الثنائية، وإن قيمة الاتفاقيات تبلغ "
    "12.5 مليار دولار بنسبة نمو 30% عن العام الماضي، ولم يُحدد موعد التوقيع بعدُ، اترك تعليقاً على مُحمّد.",
    "The talks between قطر وروسيا in 2022 covered gas (LNG) and the port of رأس لفان.",
]


def print_to_pdf(tmp_path: Path, paragraphs: list[str], *extra: str) -> bytes:
    """Headless Chromium prints an Arabic page: the first paragraph as its headline, the rest as paragraphs."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    body = "".join(f'<p dir="auto">{p}</p>' for p in paragraphs[1:])  # each paragraph's direction from its text
    page = tmp_path / "article.html"
    page.write_text(
        f'<!DOCTYPE html><html lang="ar" dir="rtl"><head><meta charset="utf-8"><title>{paragraphs[0]}</title>'
        '<style>body { font: 15pt "Noto Naskh Arabic", "DejaVu Sans", serif; width: 14cm }</style></head>'
        f"<body><h1>{paragraphs[0]}</h1>{body}</body></html>",
        encoding="utf-8",
    )
    pdf = tmp_path / "article.pdf"
    subprocess.run([str(CHROMIUM), *CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'profile'}", *extra,
                    f"--print-to-pdf={pdf}", page.as_uri()], check=True, capture_output=True, timeout=120)
    return pdf.read_bytes()


def test_pdf_printed_by_chromium_gives_the_source_paragraphs(tmp_path):
    article = from_pdf(print_to_pdf(tmp_path, PRINTED, "--no-pdf-header-footer"))
    assert article.format == "pdf"
    assert article.text.split("\n") == PRINTED  # the same words, in order, one paragraph a line
    assert article.title == PRINTED[0]  # the PDF's title, from the page's <title>
    assert article.date == "2024-03-15"  # the date written under the headline, not the day it was printed


def test_pdf_printed_with_running_headers_loses_them_on_every_page(tmp_path):
    vocabulary = [word for word in words(" ".join(PRINTED[2:4])) if word.isalnum()]  # Arabic words and numbers
    pick = random.Random(7).choice
    paragraphs = [PRINTED[0], *(" ".join(pick(vocabulary) for _ in range(40)) + "." for _ in range(30))]
    data = print_to_pdf(tmp_path, paragraphs)  # Chromium's default: date and title on top, address and "2/5" below
    article = from_pdf(data)
    assert words(article.text) == words(" ".join(paragraphs))
    assert "file://" not in article.text


# ---------------------------------------------------------------------------------------------------------------
# PDF whose text layer is presentation forms in visual order, as older agency PDFs are (reportlab writes each line
# as given: arabic_reshaper picks the joined forms, python-bidi puts the line in display order)

AGENCY = [
    "وصل الرئيس الروسي إلى الدوحة في 15 مارس 2024 لبحث صفقة الغاز المسال (LNG)",
    "مع شركة QatarEnergy بقيمة 12.5 مليار دولار، أي بزيادة 30% عن العام الماضي.",
    "وقال الوزير: «لا خلاف بيننا»، ويشمل الاتفاق ٣ محطات و 10 - 20 سفينة حتى عام 2030؛",
    "وذكرت صحيفة New York Times أن الاستثمارات ستتضاعف مُجدَّداً، فهل تنجح الخطة؟",
]


def reportlab_pdf(pages: list[list[str]], visual: bool = True, title: str = "", footer: str = "",
                  shaped: bool = True) -> bytes:
    """An Arabic PDF as reportlab draws it: one string per line, shaped by arabic_reshaper, ordered by python-bidi;
    a footer and the page number at the bottom of each page."""
    assert DEJAVU.exists(), f"{DEJAVU} is missing: apt-get install fonts-dejavu-core"
    pdfmetrics.registerFont(TTFont("DejaVuSans", str(DEJAVU)))
    reshaper = arabic_reshaper.ArabicReshaper(configuration={"delete_harakat": False})
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=(595, 842))
    pdf.setTitle(title)
    for number, lines in enumerate(pages, 1):
        pdf.setFont("DejaVuSans", 12)
        for i, line in enumerate(lines):
            drawn = reshaper.reshape(line) if shaped else line
            pdf.drawRightString(560, 800 - 18 * i, get_display(drawn) if visual else drawn)
        if footer:
            pdf.drawRightString(560, 50, get_display(reshaper.reshape(footer)))
            pdf.drawCentredString(297, 30, f"- {number} -")
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def test_agency_pdf_in_visual_order_comes_back_in_logical_order_with_base_letters():
    data = reportlab_pdf([AGENCY], title="Microsoft Word - bulletin.doc")
    drawn = pypdf.PdfReader(io.BytesIO(data)).pages[0].extract_text(extraction_mode="layout")
    assert "ﻞﺻﻭ" in drawn  # the text layer really is presentation forms, right to left: "وصل" backwards
    article = from_pdf(data)
    assert words(article.text) == words(" ".join(AGENCY))
    assert "ﻻ" not in article.text and "لا خلاف" in article.text  # the lam-alef ligature is two letters again
    assert article.title == AGENCY[0]  # a junk metadata title gives way to the first line
    assert article.date is None  # "15 مارس 2024" is inside a sentence, not a dateline


@pytest.mark.parametrize(
    ("shaped", "visual"),
    [(True, False), (False, True), (False, False)],
    ids=["forms-in-logical-order", "base-letters-in-visual-order", "base-letters-in-logical-order"],
)
def test_text_layer_order_is_told_from_the_words_themselves(shaped, visual):
    # Without presentation forms the article tells the order: "ال" starts many words, backwards they end in "لا".
    article = from_pdf(reportlab_pdf([AGENCY], visual=visual, shaped=shaped, title="نشرة الوكالة"))
    assert words(article.text) == words(" ".join(AGENCY))
    assert article.title == "نشرة الوكالة"


def test_page_numbers_and_running_headers_of_a_multi_page_pdf_are_dropped():
    bodies = [AGENCY, AGENCY[::-1], AGENCY[1:]]
    pages = [[f"نشرة وكالة الأنباء - صفحة {n}", *body] for n, body in enumerate(bodies, 1)]
    article = from_pdf(reportlab_pdf(pages, footer="جميع الحقوق محفوظة للوكالة"))
    assert words(article.text) == words(" ".join(line for body in bodies for line in body))


def test_encrypted_pdf_is_refused_but_one_locked_only_against_editing_opens():
    def encrypted(user_password: str) -> bytes:
        writer = pypdf.PdfWriter(clone_from=io.BytesIO(reportlab_pdf([AGENCY])))
        writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-256")
        buffer = io.BytesIO()
        writer.write(buffer)
        return buffer.getvalue()

    with pytest.raises(ValueError, match="encrypted PDF: remove the password first"):
        from_pdf(encrypted("secret"))
    assert words(from_pdf(encrypted("")).text) == words(" ".join(AGENCY))


def test_pdf_without_text_layer_is_refused():
    writer = pypdf.PdfWriter()
    writer.add_blank_page(595, 842)  # what a scanner's image-only page reads like
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(ValueError, match=r"no text layer \(a scanned PDF\?\): run OCR first"):
        from_pdf(buffer.getvalue())


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[: len(data) // 3], "damaged or incomplete PDF"),
        (lambda data: b"%PDF-1.7\n" + bytes(500), "damaged or incomplete PDF"),
        (lambda data: b"<html><body>" + bytes(1024) + data, "not a PDF file"),  # the header too far in
    ],
    ids=["truncated", "header-only", "not-a-pdf"],
)
def test_damaged_pdf_is_refused_with_a_one_line_reason(damage, reason):
    with pytest.raises(ValueError, match=reason) as error:
        from_pdf(damage(reportlab_pdf([AGENCY])))
    assert "\n" not in str(error.value) and "Traceback" not in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# DOCX


def word_file(title_style: bool = True) -> bytes:
    """A Word article as python-docx writes it: headline, dateline, paragraphs, a sub-heading and a table."""
    document = docx.Document()
    if title_style:
        document.add_heading(TITLE, level=0)  # the "Title" style
    document.add_paragraph("الدوحة - 15 مارس 2024")
    document.add_paragraph(BODY[0])
    document.add_heading("أرقام الاتفاقيات", level=2)
    document.add_paragraph(BODY[1])
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("القطاع", "القيمة"), ("الغاز المسال", "12.5 مليار دولار")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    document.add_paragraph(BODY[2])
    document.core_properties.title = "قالب الأخبار"
    document.core_properties.created = datetime(2024, 3, 14, 20, 0, tzinfo=UTC)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_word_file_gives_paragraphs_and_table_rows_in_order_with_title_and_date():
    article = from_docx(word_file())
    assert article.format == "docx"
    assert article.text.split("\n") == [TITLE, "الدوحة - 15 مارس 2024", BODY[0], "أرقام الاتفاقيات", BODY[1],
                                        "القطاع | القيمة", "الغاز المسال | 12.5 مليار دولار", BODY[2]]
    assert article.title == TITLE  # the Title paragraph the reader sees wins over a template's title property
    assert article.date == "2024-03-15"  # the dateline wins over the file's creation date


def test_word_file_without_title_paragraph_or_dateline_uses_its_properties():
    document = docx.Document(io.BytesIO(word_file(title_style=False)))
    document.paragraphs[0].text = "الدوحة - وكالات"
    buffer = io.BytesIO()
    document.save(buffer)
    article = from_docx(buffer.getvalue())
    assert (article.title, article.date) == ("قالب الأخبار", "2024-03-14")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (random.Random(1).randbytes(3000), "not a readable .docx"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "not a readable .docx"),  # an old binary .doc
        (zip_bytes({"notes.txt": "ملاحظات"}), "no Word document"),
        (zip_bytes({"[Content_Types].xml": "<Types/>", "word/document.xml": "<broken"}), "damaged Word file"),
        (word_file()[:2000], "not a readable .docx"),  # truncated: the zip's directory is at the end
    ],
    ids=["random", "old-doc", "zip-without-document", "broken-xml", "truncated"],
)
def test_damaged_word_file_is_refused_with_a_one_line_reason(data, reason):
    with pytest.raises(ValueError, match=reason) as error:
        from_docx(data)
    assert "\n" not in str(error.value)



@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("word/document.xml", "the .docx unpacks to 21 MB of XML, more than the 20 MB a Word file of the largest "
                              "text read needs"),
        ("word/media/image1.png", "the .docx unpacks to more than 70 MB"),
    ],
)
def test_a_word_file_that_inflates_beyond_its_text_is_refused_before_parsing(monkeypatch, member, reason):
    size = 21_000_000 if member.endswith(".xml") else 71_000_000
    bomb = zip_bytes({"[Content_Types].xml": "<Types/>", member: b" " * size}, zipfile.ZIP_DEFLATED)
    assert len(bomb) < 100_000  # a small file...
    monkeypatch.setattr("docx.Document", lambda *a: pytest.fail("the document was parsed"))
    with pytest.raises(ValueError) as error:
        from_docx(bomb)  # ... refused on the sizes its members declare
    assert str(error.value) == reason

# ---------------------------------------------------------------------------------------------------------------
# All readers


def test_readers_by_file_suffix():
    assert {".html": from_html, ".htm": from_html, ".pdf": from_pdf, ".docx": from_docx} == READERS


def test_missing_library_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if it were not installed
    with pytest.raises(RagError, match="pip install pypdf"):
        from_pdf(b"%PDF-1.7")


PREFIXES = [b"", b"%PDF-1.4\n", b"PK\x03\x04", b"<html><body><p>", b"\xef\xbb\xbf<html>"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(PREFIXES), tail=st.binary(max_size=3000), reader=st.sampled_from(sorted(READERS)))
def test_any_bytes_give_an_article_or_a_one_line_value_error(prefix, tail, reader):
    try:
        result = READERS[reader](prefix + tail)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(result, Extracted) and result.text


def test_rag_index_reads_web_pages_pdfs_and_word_files_from_the_folder(tmp_path, fake_config):
    from conftest import HashEmbedder, build_store

    seeds = fake_config.seeds_dir
    (seeds / "page.html").write_text(NEWS_PAGE, encoding="utf-8")
    (seeds / "agency.pdf").write_bytes(reportlab_pdf([[TITLE, *BODY]], title=TITLE))
    (seeds / "report.docx").write_bytes(word_file())
    (seeds / "scanned.pdf").write_bytes(b"%PDF-1.4\n%%EOF")  # unreadable: skipped with its reason
    logged: list[str] = []
    store = build_store(seeds, fake_config.index_dir, HashEmbedder(), log=logged.append)
    articles = store.manifest()["articles"]
    assert {articles[name]["format"] for name in ("page.html", "agency.pdf", "report.docx")} == {"html", "pdf", "docx"}
    assert articles["page.html"]["date"] == "2024-03-15" and articles["page.html"]["title"] == TITLE
    for name in ("page.html", "agency.pdf", "report.docx"):
        text = store.article(name).text
        assert "فلاديمير بوتين" in text and "التعليقات" not in text
    assert len(logged) == 1 and logged[0].startswith("skipped scanned.pdf: ")
    hits = [p.chunk for p in store.search(HashEmbedder().embed_batch(["الغاز الطبيعي المسال"], "query")[0],
                                          ["غاز", "طبيعي", "مسال"], 6)]
    assert {c.article_id for c in hits} >= {"page.html", "agency.pdf", "report.docx"}
    for c in hits:  # citations point into the cleaned text the source viewer shows
        assert store.article(c.article_id).text[c.start : c.end] == c.text
