"""Caption text: cleaning, the filter rules, boilerplate detection and language identification.

Pure functions over Python strings with no pipeline knowledge; `mmcurate.stages.text` wraps them as
the `caption_clean` and `caption_filter` stages. Everything here is picklable and thread-safe; the
language model is the only thing loaded, and only when a `LanguageIdentifier` is built.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------

# Every pattern below is matched in time linear in the text: a caption is attacker-controlled, and a
# backtracking regex that rescans the rest of the text from each "<" is quadratic (a 1 MB caption of
# "<script>" took 579 s). Where a regex alone cannot be linear, a scanner drives it (see below).

# Elements whose content is never caption text: "<name ...>" up to the first "</name>" after it.
_HIDDEN_OPEN = re.compile(r"<(script|style|noscript|template|head)\b", re.I)
_HIDDEN_CLOSE = {
    name: re.compile(rf"</{name}\s*+>", re.I) for name in ("script", "style", "noscript", "template", "head")
}
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_DECLARATION = re.compile(r"<[!?][^>]*+>")
# A tag is "<name ...>" with a known HTML element name, a custom element ("my-widget") or a
# namespaced one ("o:p", from word processors), so plain-text comparisons ("x<y and 3>2", "a < b")
# survive; quoted attribute values may contain ">". The groups are possessive: each attribute item is
# decided by its first character, so giving items back can never lead to a match.
_TAG = re.compile(
    r"</?([A-Za-z][A-Za-z0-9]*+(?:[:-][A-Za-z0-9:-]++)?+)(?:\s(?:[^<>\"']++|\"[^\"]*+\"|'[^']*+')*+)?+/?>"
)
_HTML_ELEMENTS = frozenset(
    "a abbr acronym address area article aside audio b base basefont bdi bdo big blink blockquote body br "
    "button canvas caption center cite code col colgroup data datalist dd del details dfn dialog dir div dl "
    "dt em embed fieldset figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header "
    "hgroup hr html i iframe img input ins kbd label legend li link main map mark marquee menu meta meter nav "
    "nobr noembed noframes noscript object ol optgroup option output p param picture plaintext pre progress q "
    "rp rt ruby s samp script search section select slot small source span strike strong style sub summary sup "
    "svg table tbody td template textarea tfoot th thead time title tr track tt u ul var video wbr xmp".split()
)
# Tags that a browser renders as a break: replaced by a space, the rest (b, i, span, a) by nothing.
_BREAKING_TAGS = frozenset(
    "br p div li ul ol dl dt dd tr td th table thead tbody tfoot caption h1 h2 h3 h4 h5 h6 hr section "
    "article header footer nav aside main blockquote pre figure figcaption img picture source video audio "
    "iframe form input button select option textarea label title body html address center".split()
)
# Only entities terminated by ";" are decoded: "&param=1" in a URL must not become "¶m=1".
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def _tag_replacement(match: re.Match) -> str:
    name = match.group(1).lower()
    if name in _BREAKING_TAGS:
        return " "
    if name in _HTML_ELEMENTS or ":" in name or "-" in name:
        return ""
    return match.group(0)


def _remove_hidden_elements(text: str) -> str:
    """`<(script|...)\\b[^>]*>.*?</\\1\\s*>` replaced by " ", in linear time: the regex rescans the rest of
    the text from every opening tag whose closing tag is missing. Here a closing-tag search that failed
    from some position is remembered (it fails from any later position too)."""
    out, pos, start = [], 0, 0
    no_close_from: dict[str, int] = {}
    while True:
        m = _HIDDEN_OPEN.search(text, start)
        if m is None:
            break
        gt = text.find(">", m.end())
        if gt < 0:
            break  # no ">" left: no later element can open either
        name = m.group(1).lower()
        close = None if no_close_from.get(name, len(text) + 1) <= gt else _HIDDEN_CLOSE[name].search(text, gt + 1)
        if close is None:
            no_close_from[name] = min(no_close_from.get(name, gt), gt)
            start = m.start() + 1
            continue
        out.append(text[pos : m.start()])
        out.append(" ")
        pos = start = close.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _sub_up_to_last(rx: re.Pattern, repl, text: str, last: str) -> str:
    """rx.sub on the part of the text up to the last `last` character, for patterns whose every match
    ends with it: after that character every attempt would fail only after scanning to the end (one
    scan per candidate start, quadratic), and before it every attempt either matches or stops early."""
    end = text.rfind(last) + 1
    if end == 0:
        return text
    return rx.sub(repl, text[:end]) + text[end:]


def _remove_tags(text: str) -> str:
    text = _remove_hidden_elements(text)
    text = _COMMENT.sub(" ", text)
    text = _sub_up_to_last(_DECLARATION, " ", text, ">")
    return _sub_up_to_last(_TAG, _tag_replacement, text, ">")


def strip_html(text: str) -> str:
    """Remove markup and decode character references.

    Script/style contents and comments are dropped; block-level tags and <br> become a space, inline
    tags vanish. Entities are decoded up to twice, because scraped alt texts are often escaped twice
    ("&amp;quot;"); markup that only appears after decoding ("&lt;b&gt;") is stripped as well.
    """
    if "<" in text:
        text = _remove_tags(text)
    if "&" in text:
        for _ in range(2):
            decoded = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
            if decoded == text:
                break
            text = decoded
        if "<" in text:
            text = _remove_tags(text)
    return text


# --------------------------------------------------------------------------------------------------
# Unicode
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _ftfy_config():
    from ftfy import TextFixerConfig

    # HTML is handled by strip_html (with the ";" rule); NFC is applied by us so that it also runs
    # with fix_unicode off; fullwidth forms are kept (NFC, not NFKC: CJK punctuation stays as written).
    return TextFixerConfig(unescape_html=False, fix_character_width=False, normalization=None, explain=False)


# ftfy fixes a text line by line, at ~5 µs per call: 1 MB of "é\n" would take seconds. A caption with
# more lines than this is fixed in chunks of whole lines of at least _FTFY_CHUNK characters instead.
_FTFY_MAX_LINES = 64
_FTFY_CHUNK = 16384


def fix_unicode(text: str) -> str:
    """Repair mojibake ("cafÃ©" -> "café"), ligatures, curly quotes and terminal escapes with ftfy.

    Pure-ASCII text cannot hold mojibake, so it skips ftfy (which costs ~100 µs per caption) unless
    it carries an ANSI escape sequence. ftfy works per line; a caption of more than 64 lines is fixed
    in chunks of whole lines (~16K characters) so that the time stays linear in its length.
    """
    if text.isascii() and "\x1b" not in text:
        return text
    import ftfy

    if text.count("\n") <= _FTFY_MAX_LINES:
        return ftfy.fix_text(text, _ftfy_config())
    out, pos = [], 0
    while pos < len(text):
        end = text.find("\n", pos + _FTFY_CHUNK) + 1 or len(text)
        out.append(ftfy.fix_and_explain(text[pos:end], _ftfy_config())[0])
        pos = end
    return "".join(out)


# Characters that carry no visible text. Tab/newline/VT/FF/FS..US and NEL are not listed: str.split()
# treats them as whitespace, so they become single spaces. ZWJ/ZWNJ (U+200C/D) are kept: Persian,
# Indic scripts and emoji sequences need them.
_JUNK_CHARS = (
    "\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f"  # C0/C1 controls
    "\u00ad\u061c\u180e\u200b\u200e\u200f"  # soft hyphen, bidi marks, zero-width space
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"  # bidi embeddings/isolates, word joiner, BOM
    "\ufff9-\ufffd"  # interlinear annotations, object/replacement chars
    "\ud800-\udfff"  # lone surrogates (not encodable as UTF-8)
    "\ue000-\uf8ff\U000f0000-\U0010ffff"  # private use
    "\U000e0000-\U000e007f"  # tag characters
)
_JUNK = re.compile(f"[{_JUNK_CHARS}]+")


def remove_junk_chars(text: str) -> str:
    """Drop control, zero-width, bidi, private-use, surrogate and replacement characters."""
    return _JUNK.sub("", text)


@lru_cache(maxsize=16)
def _repeat_pattern(max_repeat: int) -> re.Pattern:
    return re.compile(r"([^\w\s]|_)\1{%d,}" % max_repeat)  # noqa: UP031 - {} are the regex's own


def limit_repeated_punctuation(text: str, max_repeat: int) -> str:
    """Shorten runs of one punctuation/symbol character ("!!!!!!", "-----", "😂😂😂😂") to max_repeat."""
    return _repeat_pattern(max_repeat).sub(lambda m: m.group(1) * max_repeat, text)


def normalize_whitespace(text: str) -> str:
    """Every run of Unicode whitespace (newlines, NBSP, ideographic space, ...) becomes one space."""
    return " ".join(text.split())


@dataclass(frozen=True)
class CaptionCleaner:
    """The caption_clean transformation, configured once and applied per caption.

    Order: markup, mojibake (ftfy), NFC, junk characters, punctuation runs, whitespace, case.
    None stays None; a caption may become "" (the filter decides what to do with it).
    """

    strip_html: bool = True
    fix_unicode: bool = True
    lowercase: bool = False
    max_repeat_punct: int | None = 3

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        if self.strip_html:
            text = strip_html(text)
        if self.fix_unicode:
            text = fix_unicode(text)
        if not text.isascii():
            if not unicodedata.is_normalized("NFC", text):
                text = unicodedata.normalize("NFC", text)
            text = remove_junk_chars(text)
        elif not text.isprintable():
            text = remove_junk_chars(text)
        if self.max_repeat_punct is not None:
            text = limit_repeated_punctuation(text, self.max_repeat_punct)
        text = normalize_whitespace(text)
        if self.lowercase:
            text = text.lower()
        return text

    def clean_all(self, texts) -> list[str | None]:
        return [self(t) for t in texts]


# --------------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------------

# Han and kana are written without spaces; one character is counted as one word (a Han character is
# roughly a morpheme). Thai, Lao, Myanmar and Khmer also lack spaces but spell words with several
# letters: a run of up to 4 of their characters counts as one word (a rough average word length).
_HAN_KANA = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_SOUTHEAST_ASIAN = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"
_SEGMENT = re.compile(f"[{_HAN_KANA}]|[{_SOUTHEAST_ASIAN}]{{1,4}}|[^\\s{_HAN_KANA}{_SOUTHEAST_ASIAN}]+")
# A match may only start at a token's first character: started anywhere, a token of punctuation alone
# is rescanned from each of its characters (quadratic: 100 KB of "!?" took 90 s).
_ASCII_WORD = re.compile(r"(?<!\S)[^\sA-Za-z0-9]*+[A-Za-z0-9]\S*+")


def count_words(text: str) -> int:
    """Whitespace-separated tokens that hold a letter or digit (pure punctuation is no word), with
    scripts written without spaces segmented per character (see above)."""
    if text.isascii():
        return len(_ASCII_WORD.findall(text))
    return sum(1 for piece in _SEGMENT.findall(text) if any(c.isalnum() for c in piece))


# --------------------------------------------------------------------------------------------------
# Boilerplate
# --------------------------------------------------------------------------------------------------

_IMAGE_WORD = r"(?:image|photo|picture|pic|img|preview|thumbnail|media|video|content|graphic|illustration)"
_IMAGE_EXT = r"(?:jpe?g|jfif|png|gif|webp|bmp|tiff?|heic|heif|avif|svg|ico|raw|cr2|nef|arw|dng|mp4|mov)"

# Each pattern must match the whole caption (lowercased, whitespace normalised, surrounding
# punctuation stripped). Only captions that say nothing about the picture belong here: a caption that
# merely contains "stock photo" next to a description is content.
BOILERPLATE_PATTERNS: dict[str, str] = {
    "not_available": (
        rf"(?:sorry,? )?(?:(?:this|the|an?) )?{_IMAGE_WORD}s? (?:is |are |has been |was |were )?"
        r"(?:currently |temporarily |no longer |not |still )*"
        r"(?:available|unavailable|found|coming soon|missing|removed|deleted|loading|blocked|expired)"
        rf"|(?:no|missing) {_IMAGE_WORD}s?(?: available| found| yet| provided)?"
        rf"|{_IMAGE_WORD} not (?:available|found)"
    ),
    "untitled": (
        r"(?:untitled|no title|no caption|no description|no alt(?: text)?|without title"
        r"|sans titre|ohne titel|sin t[ií]tulo)"
        rf"(?: (?:available|provided|{_IMAGE_WORD}|document|design|artwork|project))?(?: ?[#(-]?\d++\)?)*+"
    ),
    "camera_filename": (
        r"(?:img|dsc|dscn|dscf|dcp|dcim|pxl|mvimg|gopr|gp|dji|sam|imag|pict?|wp|p|vid|mov"
        r"|screenshot|screen ?shot|screen capture|whatsapp image|fb_img|received|photo|image)"
        r"[ _-]?\d[\d _.:-]*(?: at [\d .:]+(?:am|pm)?)?"
        r"(?:[ _-]?(?:edited|edit|hdr|copy|mp|cover|portrait|burst\w*+|original))*(?: ?\(\d+\))?"
        rf"(?:\.{_IMAGE_EXT})?"
    ),
    # One file name or path (no spaces: "beach sunset.jpg" is still a description).
    "file_name": rf"[\w\-.()~/\\%+]*\.{_IMAGE_EXT}(?: ?\(\d+\))?",
    "url": r"(?:(?:https?|ftp)://|www\.)\S+",
    "call_to_action": (
        r"(?:click|double click|double-click) (?:here|to|for|on|image|photo|the image|thumbnail)(?: .*)?"
        r"|tap (?:here|to (?:enlarge|zoom|view|see|open|play|expand|download))(?: .*)?"
        r"|(?:view|see|show|open) (?:larger|full[- ]?size|full image|original|more|gallery|all|the gallery|details|"
        rf"larger {_IMAGE_WORD}|full {_IMAGE_WORD}|{_IMAGE_WORD}s?)(?: {_IMAGE_WORD}| version| size)?"
        r"|(?:enlarge|zoom|zoom in|expand|read more|learn more|more info|more information|download|download now|"
        rf"buy now|shop now|order now|loading|please wait|play video|watch video|subscribe)(?: {_IMAGE_WORD})?"
    ),
    "numbered_image": (
        rf"(?:{_IMAGE_WORD}|slide|figure|fig|gallery image|product image|attachment|item)s? ?[#:.-]? ?\d+"
        r"(?: (?:of|/) \d+)?"
    ),
    "stock_photo": (
        rf"(?:stock|royalty[- ]free|free|premium|editorial) (?:{_IMAGE_WORD}|vector|footage|clipart|clip art)s?"
        r"(?: ?[#-]? ?\d+)?"
        rf"|(?:stock )?(?:{_IMAGE_WORD}|vector)s? (?:id|no\.?|number|#) ?[:#]? ?\d+"
    ),
    "placeholder": (
        r"(?:(?:image|photo|picture|default|product|featured|generic|blank|dummy|sample|main|hero|header|"
        r"cover|post|article|profile|user|site|company) )?"
        rf"(?:placeholder|place holder|{_IMAGE_WORD}|spacer|transparent pixel|pixel|blank|logo|icon|"
        r"banner|avatar|headshot|profile picture|profile photo|gravatar)(?: image| photo| gif| png)?"
    ),
    "template_or_null": (
        r"(?:alt|alt text|alt tag|image alt|caption|description|title|image title|image description|"
        r"null|none|nil|n/?a|undefined|nan|empty|default|test|todo|tbd|lorem ipsum.*"
        r"|\{\{.*\}\}|\$\{.*\}|%[sd]|\[object object\]|\[(?:image|photo|img|picture|caption|alt|title|no image)\])"
    ),
}

_BOILERPLATE_STRIP = " \t.,;:!?-_|*\"'`()[]{}<>«»“”‘’…·•~=+#"


def _compile_boilerplate() -> re.Pattern:
    alternatives = "|".join(f"(?P<{name}>{rx})" for name, rx in BOILERPLATE_PATTERNS.items())
    return re.compile(f"(?:{alternatives})", re.I | re.S)


_BUILTIN_BOILERPLATE = _compile_boilerplate()


def boilerplate_key(text: str) -> str:
    """The form boilerplate patterns see: lowercased, whitespace normalised, outer punctuation stripped
    (kept when nothing else is left). match_boilerplate also tries the unstripped form, for templates
    such as "{{title}}"."""
    key = " ".join(text.lower().split())
    stripped = key.strip(_BOILERPLATE_STRIP)
    return stripped if stripped else key


def compile_extra_boilerplate(patterns) -> list[tuple[str, re.Pattern]]:
    """User patterns (full-match, case-insensitive, against `boilerplate_key`). Raises ValueError
    naming the bad pattern."""
    compiled = []
    for rx in patterns:
        if not isinstance(rx, str):
            raise ValueError(f"extra_boilerplate entries must be regex strings, got {rx!r}")
        try:
            compiled.append((rx, re.compile(rx, re.I | re.S)))
        except re.error as exc:
            raise ValueError(f"extra_boilerplate pattern {rx!r} is not a valid regex: {exc}") from None
    return compiled


def match_boilerplate(text: str, builtin: bool = True, extra: Sequence[tuple[str, re.Pattern]] = ()) -> str | None:
    """Name of the boilerplate pattern the whole caption matches ("url", "camera_filename", ... or
    "extra:<regex>"), or None."""
    key = boilerplate_key(text)
    raw = " ".join(text.lower().split())
    if builtin:
        for candidate in (key, raw) if raw != key else (key,):
            m = _BUILTIN_BOILERPLATE.fullmatch(candidate)
            if m:
                return m.lastgroup
    for source, rx in extra:
        if rx.fullmatch(key) or rx.fullmatch(raw):
            return f"extra:{source}"
    return None


# --------------------------------------------------------------------------------------------------
# Filter rules (everything but language, which needs a model)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionRules:
    """DataComp's text filter keeps captions with more than 2 words and more than 5 characters."""

    min_words: int = 3
    min_chars: int = 6
    max_chars: int | None = None
    boilerplate: bool = True
    extra_boilerplate: tuple = ()  # compiled (source, pattern) pairs, see compile_extra_boilerplate

    def check(self, text: str | None) -> tuple[str, str] | None:
        """(reason, detail) for the first rule the caption fails, cheapest first; None if it passes."""
        if text is None or not text.strip():
            return "caption_missing", "no caption" if text is None else "caption is empty"
        # The length check comes before any pattern runs: it bounds the work of one caption.
        chars = len(text.strip())
        if self.max_chars is not None and chars > self.max_chars:
            return "text_too_long", f"{chars} characters > max_chars {self.max_chars}"
        words = count_words(text)
        if words < self.min_words:
            return "too_few_words", f"{words} word(s) < min_words {self.min_words}"
        if chars < self.min_chars:
            return "too_few_chars", f"{chars} character(s) < min_chars {self.min_chars}"
        if self.boilerplate or self.extra_boilerplate:
            name = match_boilerplate(text, self.boilerplate, self.extra_boilerplate)
            if name is not None:
                return "boilerplate", f"matches boilerplate pattern {name}"
        return None


# --------------------------------------------------------------------------------------------------
# Language identification
# --------------------------------------------------------------------------------------------------

# py3langid also predicts regional varieties; a caption in Wu or Cantonese is "zh" for a whitelist, and
# short English text loses much of its probability to Nigerian Pidgin. These labels are folded into
# the language a user whitelists (measured: top-1 accuracy on short captions 96.5% -> 97.9%).
MACROLANGUAGE = {"wuu": "zh", "yue": "zh", "ary": "ar", "arz": "ar", "nn": "no", "uzs": "uz", "sdh": "ku", "pcm": "en"}

_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")


class LanguageIdentifier:
    """Language of short texts with py3langid (a naive-Bayes byte n-gram model of 140 languages that the
    package ships, ~4.5 MB; nothing is downloaded). Loading takes ~1 s; a caption ~0.1 ms.

    Probabilities are normalised over the languages, with regional varieties folded (MACROLANGUAGE).
    """

    def __init__(self):
        from py3langid.langid import MODEL_FILE
        from py3langid.langid import LanguageIdentifier as _Model

        self._model = _Model.from_model_file(MODEL_FILE, norm_probs=True)
        self.labels = frozenset(MACROLANGUAGE.get(lang, lang) for lang in self._model.labels)

    def distribution(self, text: str) -> dict[str, float]:
        dist: dict[str, float] = {}
        for lang, p in self._model.rank(text):
            lang = MACROLANGUAGE.get(lang, lang)
            dist[lang] = dist.get(lang, 0.0) + p
        return dist

    def identify(self, text: str, languages=None) -> tuple[str, float, float]:
        """(most likely language, its probability, summed probability of `languages`)."""
        dist = self.distribution(text)
        best = max(dist, key=dist.__getitem__)
        in_set = sum(dist.get(lang, 0.0) for lang in languages) if languages else dist[best]
        return best, dist[best], in_set

    def check(self, text: str, languages, min_confidence: float = 0.0) -> tuple[str, float, str | None]:
        """(language, probability, why it fails the whitelist or None).

        A caption passes if its most likely language is whitelisted and the whitelisted languages
        together hold at least `min_confidence`. The probabilities of short captions are flat
        (correct English product titles score 0.1-0.3 over 140 languages), so the top-1 decision
        does the work and the threshold is an optional extra margin.
        """
        best, p_best, in_set = self.identify(text, languages)
        if best not in languages:
            return best, p_best, f"{best} ({p_best:.2f}) not in {'|'.join(languages)}"
        if in_set < min_confidence:
            return best, p_best, f"P({'|'.join(languages)}) = {in_set:.2f} < min_language_confidence {min_confidence}"
        return best, p_best, None

    def unknown(self, languages) -> list[str]:
        return sorted(set(languages) - self.labels)


def check_language_codes(languages) -> None:
    """Shape check of a whitelist without loading the model (ISO 639-1/-3 codes, lower case)."""
    if isinstance(languages, str) or not isinstance(languages, (list, tuple)) or not languages:
        raise ValueError(f"languages must be a non-empty list of ISO 639 codes such as ['en', 'de'], got {languages!r}")
    bad = [lang for lang in languages if not isinstance(lang, str) or not _LANGUAGE_CODE.fullmatch(lang)]
    if bad:
        raise ValueError(f"languages: {bad!r} are not ISO 639 codes (two or three lower-case letters, e.g. 'en')")
