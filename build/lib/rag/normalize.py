"""Arabic normalization for matching (never for display), tokenization and stemming."""

from __future__ import annotations

import re
import unicodedata

_TASHKEEL = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed]")
_TATWEEL = "\u0640"
_LETTERS = str.maketrans(
    {
        "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ٲ": "ا", "ٳ": "ا",
        "ى": "ي", "ی": "ي", "ې": "ي", "ێ": "ي",
        "ک": "ك", "ڪ": "ك",
        "ة": "ه", "ۀ": "ه", "ہ": "ه", "ە": "ه", "ھ": "ه",
        "،": ",", "؛": ";", "؟": "?", "٪": "%", "٫": ".", "٬": ",",
    }
)
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_ARABIC = re.compile("[\u0600-\u06ff]")

_SCRIPT = str.maketrans({"ی": "ي", "ې": "ي", "ێ": "ي", "ک": "ك", "ڪ": "ك", "ۀ": "ة", "ہ": "ه", "ھ": "ه"})


def fold_letters(text: str) -> str:
    """Persian/Urdu letter forms and Persian/Arabic-Indic digits as Arabic letters and ASCII digits, character for
    character: what a model trained on standard Arabic reads best, with every offset unchanged."""
    return text.translate(_SCRIPT).translate(_DIGITS)


def fold_script(text: str) -> str:
    """Mild folding for embedding models: fold_letters, and no tatweel."""
    return fold_letters(text).replace(_TATWEEL, "")


def normalize(text: str) -> str:
    """Fold Arabic spelling variants so that matching ignores them (for indexes and scoring)."""
    text = unicodedata.normalize("NFKC", text)
    text = _TASHKEEL.sub("", text).replace(_TATWEEL, "")
    return text.translate(_LETTERS).translate(_DIGITS).lower()


# Function words that carry no topic; question words are here too so they never drive retrieval.
STOPWORDS = frozenset(
    normalize(word)
    for word in """
    في من على الى عن مع او ام ثم حتى اذا اذ ان انه انها لا لم لن ما ماذا متي كيف كم هل اين لماذا
    هذا هذه ذلك تلك هو هي هم هن انا نحن انت الذي التي الذين اللذين اللتين كان كانت يكون تكون قد
    لقد و ف ب ل ك كل بعض غير بين عند لدي لكن بل اي ايه مين شو ايش وين فين امتي ليش ليه هاد هيدا
    مدي منذ خلال بعد قبل حول عبر ضد دون لدى نحو the a an of in on at to is was were what who when
    where which how why did does do and or for with by from
    """.split()
)


def tokens(text: str) -> list[str]:
    """Normalized word tokens (letters and digits), punctuation dropped."""
    return _TOKEN.findall(normalize(text))


_PREFIXES = ("وال", "بال", "كال", "فال", "لل", "ال")
_SUFFIXES = ("ها", "ان", "ات", "ون", "ين", "يه", "ه", "ي")


def stem(token: str) -> str:
    """Light stemming of a normalized token (Larkey's light10): conjunction, article, suffixes."""
    if len(token) > 3 and token.startswith("و"):
        token = token[1:]
    for prefix in _PREFIXES:
        if token.startswith(prefix) and len(token) - len(prefix) >= 2:
            token = token[len(prefix):]
            break
    for suffix in _SUFFIXES:
        if token.endswith(suffix) and len(token) - len(suffix) >= 2:
            token = token[: -len(suffix)]
    return token


def _is_stopword(tok: str) -> bool:
    # A function word with the conjunction attached ("وكانت", "وفي") is still a function word.
    return tok in STOPWORDS or (len(tok) > 2 and tok[0] == "و" and tok[1:] in STOPWORDS)


def terms(text: str) -> list[str]:
    """Stemmed content terms for lexical matching (BM25, overlap scores)."""
    return [
        stem(tok) if _ARABIC.search(tok) else tok
        for tok in tokens(text)
        if not _is_stopword(tok) and (len(tok) > 1 or tok.isdigit())
    ]


def is_arabic(text: str) -> bool:
    """True when most letters of the text are Arabic script."""
    letters = [c for c in text if c.isalpha()]
    return not letters or sum(bool(_ARABIC.match(c)) for c in letters) * 2 >= len(letters)
