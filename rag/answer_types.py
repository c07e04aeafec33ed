"""Answer types: what kind of answer a question asks for (a date, a number, a person, a place, yes/no, a list), and
where the spans of that kind are in a text. Pure functions over the text; offsets point into the text as written."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from rag.dates import DATE_SPAN
from rag.normalize import normalize, tokens

DATE, NUMBER, PERSON, PLACE, YESNO, LIST, OTHER = "date", "number", "person", "place", "yesno", "list", "other"
KINDS = (DATE, NUMBER, PERSON, PLACE, YESNO, LIST, OTHER)

# Folding one character into one character (or none), so that offsets found in the folded text map back.
_FOLD = str.maketrans({
    "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ی": "ي", "ک": "ك", "ة": "ه", "ۀ": "ه", "ھ": "ه",
    **{d: str(i) for i, d in enumerate("٠١٢٣٤٥٦٧٨٩")}, **{d: str(i) for i, d in enumerate("۰۱۲۳۴۵۶۷۸۹")},
})
_MARKS = frozenset("\u0610\u0611\u0612\u0613\u0614\u0615\u0616\u0617\u0618\u0619\u061a\u0670\u0640"
                   + "".join(chr(c) for c in range(0x064B, 0x0660)))  # tashkeel and tatweel


def fold(text: str) -> tuple[str, list[int]]:
    """The text with Arabic spelling variants and digits folded and marks dropped, and for each character of it
    its offset in the text (plus one past the end)."""
    kept = [(i, c) for i, c in enumerate(text) if c not in _MARKS]
    folded = "".join(c for _, c in kept).translate(_FOLD).lower()
    return folded, [i for i, _ in kept] + [len(text)]


# --- Questions ---------------------------------------------------------------------------------------------------

_PLURALS = (
    "الدول البلدان المدن العواصم الملفات القضايا المجالات القطاعات الاسباب النقاط الموضوعات المواضيع الاطراف "
    "الجهات المنظمات الشركات الوكالات الاتفاقيات الخطوات الشروط المطالب الاهداف الاسلحه المشاريع الملفان "
    "الدولتان الوكالتان الدولتين الملفين المدينتان الجهتان البلدين الطرفان الطرفين المسؤولون المسؤولين "
    "الشخصيات الاشخاص الزعماء القاده الوزراء الرؤساء الامراء الملوك"
).split()
_RULES: list[tuple[str, str]] = [
    (YESNO, r"^(?:و|ف)?هل\b|^(?:is|was|were|are|did|does|do|has|have|had|can|could|will|would)\b"),
    (DATE, r"\b(?:متي|امتي|ايمتي|وقتيش|امتا)\b|\b(?:في|منذ|من|الي)? ?اي (?:عام|سنه|يوم|شهر|تاريخ|وقت|سنوات|عقد)\b"
           r"|\bما (?:تاريخ|موعد)\b|^(?:when|what year|in what year|which year|on what date)\b"),
    (NUMBER, r"\b(?:كم|قديش|قداش|شحال|بكم)\b|\bما (?:عدد|نسبه|حجم|قيمه|مقدار|مده|طول|مساحه)\b"
             r"|^(?:how many|how much|how long)\b"),
    (PLACE, r"\b(?:اين|وين|فين|وينه|فينه)\b|\b(?:في|الي|من)? ?اي (?:دوله|مدينه|بلد|مكان|عاصمه|منطقه|ولايه)\b"
            r"|\bما (?:الدوله|المدينه|العاصمه|البلد|المكان|المنطقه|عاصمه)\b|^(?:where|which country|which city)\b"),
    (LIST, rf"\b(?:ما|ماهي|ما هي|ماهي|شو|ايش|اذكر|عدد)(?: ابرز| اهم)? (?:{'|'.join(_PLURALS)})\b"
           r"|\b(?:اللتان|اللذان|اللتين|اللذين)\b|^من هما\b|^(?:what are|which are|list|name the)\b"),
    (PERSON, r"^(?:و|ف)?(?:من|منو|مين|شكون|منهو|منهي)\b|\bما اسم\b|^(?:who|whom|whose)\b"),
]
_COMPILED = [(kind, re.compile(pattern)) for kind, pattern in _RULES]


def answer_type(question: str) -> str:
    """The kind of answer a question asks for; dialect question words count like standard ones."""
    text = " ".join(re.findall(r"\w+", normalize(question)))
    if re.match(r"^(?:و|ف)?من (?:اين|وين|فين)\b", text):
        return PLACE  # "من أين": from where
    for kind, pattern in _COMPILED:
        if pattern.search(text):
            return kind
    return OTHER


_DEFINES = re.compile(r"(?:ما|من) (?:هو|هي|هم|هما) |(?:ماهو|ماهي|منهو|منهي) |ما (?:معني|تعريف|المقصود) ")
DEFINED_WORDS = 5  # a definition question names a term or a name and asks nothing else of it


def defines(question: str) -> bool:
    """True for 'what (who) is X?': 'ما هو المذهب الحنفي؟', 'من هو نواز شريف؟', 'ما معنى اسم الخور؟'."""
    text = " ".join(tokens(question)) + " "
    match = _DEFINES.match(text)
    return bool(match) and len(text[match.end() :].split()) <= DEFINED_WORDS


_ASKING = frozenset("ما ماذا ماهو ماهي هو هي اي في من الى مع عن ب شو ايش وش".split())


def focus(question: str) -> list[str]:
    """The first words of a question after its question words: what it asks about ('ما الوكالة التي…' -> الوكالة)."""
    words = re.findall(r"\w+", normalize(question))
    while words and words[0] in _ASKING:
        words.pop(0)
    return words[:2]


# --- Spans of a kind in a text ------------------------------------------------------------------------------------

_GLUED = r"(?<!\w)(?:[وف]?(?:[بلك]|بال|لل|كال|ال)?|[وف])"  # conjunction and preposition written onto a word
_DATE = re.compile(rf"{_GLUED}(?P<span>{DATE_SPAN})(?!\w)")
_NUMBER_WORDS = (r"(?:واحد|اثنان|اثنين|ثلاث|ثلاثه|اربع|اربعه|خمس|خمسه|ست|سته|سبع|سبعه|ثمان|ثماني|ثمانيه|تسع|تسعه"
                 r"|عشر|عشره|عشرين|ثلاثين|اربعين|خمسين|مئه|مائه|مئات|الف|الاف|مليون|ملايين|مليار|مليارات)")
# The numbers one to ten written in words, folded: a reply's "5" is the evidence's "خمسة".
NUMBER_WORDS = {word: n for n, forms in enumerate(
    ["واحد واحده", "اثنان اثنين اثنتان اثنتين", "ثلاث ثلاثه", "اربع اربعه", "خمس خمسه", "ست سته", "سبع سبعه",
     "ثمان ثماني ثمانيه", "تسع تسعه", "عشر عشره"], 1) for word in forms.split()}
_NUMBER = re.compile(
    rf"{_GLUED}(?P<span>(?:(?:اكثر من|اقل من|نحو|حوالي|قرابه|ما يقارب) )?"
    rf"(?:\d+(?:[.,٬٫]\d+|،\d{{3}}(?!\d))*|{_NUMBER_WORDS})(?!\w)"
    rf"(?: (?:و ?)?{_NUMBER_WORDS})*(?: ?%| في المئه| بالمئه)?"
    r"(?: (?:مليار|مليون|الف|مليارات|ملايين|الاف))?"
    r"(?: (?:دولار|يورو|ريال|روبل|برميل|طن|متر|كيلومتر|كم|عام|اعوام|سنوات|سنه|يوما|ايام|شهرا|اشهر|دوله|دول|شخصا"
    r"|مره|مرات|زياره|اتفاقيه|اتفاقيات|دار نشر))?)(?!\w)"
)


@cache
def _places() -> re.Pattern | None:
    """One pattern for every place name of the gazetteer (rag/data/places.txt), folded, longest first."""
    try:
        data = resources.files("rag").joinpath("data/places.txt").read_text(encoding="utf-8")
    except OSError:
        return None
    names = {fold(line.split("|")[0].strip())[0] for line in data.splitlines() if line.strip() and line[0] != "#"}
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True) if n)
    return re.compile(rf"{_GLUED}(?P<span>{alternatives})(?!\w)")


def spans_of(text: str, kind: str) -> list[tuple[int, int]]:
    """(start, end) of the spans of a kind in a text (dates, numbers, places), in order, not overlapping."""
    pattern = {DATE: _DATE, NUMBER: _NUMBER, PLACE: _places()}.get(kind)
    if pattern is None:
        return []
    folded, at = fold(text)
    spans = [m.span("span") for m in pattern.finditer(folded)]
    if kind == NUMBER:  # a number inside a date ("12 نوفمبر 2000") is part of the date, not a quantity
        dates = [m.span("span") for m in _DATE.finditer(folded)]
        spans = [(s, e) for s, e in spans if not any(ds <= s and e <= de for ds, de in dates)]
    return [(at[s], _past_tatweel(text, at[e - 1] + 1)) for s, e in spans if folded[s:e].strip()]


def _past_tatweel(text: str, end: int) -> int:
    """An end past the tatweel that folding dropped ("1401 هـ")."""
    while end < len(text) and text[end] == "\u0640":
        end += 1
    return end
