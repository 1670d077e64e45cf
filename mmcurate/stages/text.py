"""Caption stages: caption_clean, caption_filter, pii_redact.

Thin wrappers around the pure functions of mmcurate.curate.captions and mmcurate.curate.pii: they
read the `caption` (and `meta`) column, write results back as columns, and turn failed rules into
rejects. Input columns are never dropped or renamed; `caption` (and `meta`, for pii_redact) are
rewritten in place because producing the cleaned text is what these stages are for.

Every stage rejects a text longer than `max_chars` (reason `text_too_long`) before any pattern runs,
and every pattern is linear in the text length, so one caption bounds the work of its sample. Reject
details never quote the text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa

from mmcurate.curate import captions as cap
from mmcurate.curate import pii
from mmcurate.pipeline.params import check_bool, check_int, check_number
from mmcurate.pipeline.stage import MapStage, Resources, StageError, StageResult, registry
from mmcurate.stages.batch import reject_rows, set_turns, sync_meta, with_column

# Default `max_chars` of all three stages: ~50x the longest real captions (dense/long-caption sets reach
# a few thousand characters, LLaVA answers rarely 10,000), and a cap on the work of one sample
# (~0.1-0.3 s for the worst text the patterns can be given at this length).
MAX_CHARS_DEFAULT = 100_000


def _too_long(text, max_chars) -> tuple[str, str] | None:
    if text is not None and max_chars is not None and len(text) > max_chars:
        return "text_too_long", f"{len(text)} characters > max_chars {max_chars}"
    return None


def _replace_column(batch: pa.Table, name: str, values: list) -> pa.Table:
    i = batch.schema.get_field_index(name)
    f = batch.schema.field(i)
    return batch.set_column(i, f, pa.array(values, f.type))


# --------------------------------------------------------------------------------------------------
# caption_clean
# --------------------------------------------------------------------------------------------------


def caption_cleaner(p) -> cap.CaptionCleaner:
    """The cleaner of caption_clean's parameters (conversation_clean's extend them)."""
    return cap.CaptionCleaner(
        strip_html=p.strip_html, fix_unicode=p.fix_unicode, lowercase=p.lowercase, max_repeat_punct=p.max_repeat_punct
    )


@registry.register
class CaptionClean(MapStage):
    """Cleans `caption` in place and keeps the text it received in `caption_original`.

    Removes markup (scripts/styles dropped, <br>/<p> become spaces) and decodes entities, repairs
    mojibake with ftfy, normalises to NFC, drops control/zero-width/bidi/private-use/replacement
    characters, shortens punctuation runs and collapses whitespace. Rejects only captions longer than
    `max_chars` (`text_too_long`, before any pattern runs): a caption that becomes empty is left for
    caption_filter. Running it twice keeps the first `caption_original`. `caption_original` holds the raw
    text: pii_redact redacts it too (unless `keep_original_text`).
    """

    name = "caption_clean"
    batch_size = 1024
    requires = ("key", "source", "caption")
    resources = Resources(cpus=1.0)

    @dataclass
    class Params:
        strip_html: bool = True  # remove tags, decode &entities;
        fix_unicode: bool = True  # ftfy: mojibake, ligatures, curly quotes, terminal escapes
        lowercase: bool = False
        max_repeat_punct: int | None = 3  # "!!!!!!" -> "!!!"; null keeps runs as they are
        max_chars: int | None = MAX_CHARS_DEFAULT  # longer captions: text_too_long; null: no limit

        def validate(self):
            for key in ("strip_html", "fix_unicode", "lowercase"):
                check_bool(key, getattr(self, key))
            check_int("max_repeat_punct", self.max_repeat_punct, 1, optional=True)
            check_int("max_chars", self.max_chars, 1, optional=True)

    def __init__(self, **params):
        super().__init__(**params)
        self._cleaner = caption_cleaner(self.params)

    def process(self, batch: pa.Table) -> StageResult:
        original = batch.column("caption").to_pylist()
        verdicts = [_too_long(t, self.params.max_chars) for t in original]
        cleaned = [None if v is not None else self._cleaner(t) for t, v in zip(original, verdicts)]
        out = _replace_column(batch, "caption", cleaned)
        if "caption_original" not in out.column_names:
            out = out.append_column(pa.field("caption_original", pa.string()), pa.array(original, pa.string()))
        rows = [i for i, v in enumerate(verdicts) if v is not None]
        return reject_rows(out, self.name, rows, [verdicts[i][0] for i in rows], [verdicts[i][1] for i in rows])


# --------------------------------------------------------------------------------------------------
# caption_filter
# --------------------------------------------------------------------------------------------------


@registry.register
class CaptionFilter(MapStage):
    """Rejects captions that are missing, too short, too long, boilerplate or in the wrong language.

    Reasons, checked in this order (cheapest first, language identification only for captions that
    passed everything else): caption_missing, text_too_long (more than `max_chars` characters, before
    any pattern runs), too_few_words, too_few_chars, boilerplate, language. Words are whitespace tokens
    holding a letter or digit; Han/kana count one word per character. With `languages` (or
    `detect_language`) the kept rows get `language` (ISO 639 code of the most likely language, regional
    varieties folded: yue/wuu -> zh) and `language_score` (its probability).
    """

    name = "caption_filter"
    batch_size = 1024
    requires = ("key", "source", "caption")
    resources = Resources(cpus=1.0)

    @dataclass
    class Params:
        min_words: int = 3  # DataComp: more than 2 words ...
        min_chars: int = 6  # ... and more than 5 characters
        max_chars: int | None = MAX_CHARS_DEFAULT  # e.g. 1000 for alt-text corpora; null: no limit
        languages: list | None = None  # whitelist of ISO 639 codes, e.g. ["en"]; null: any
        min_language_confidence: float = 0.0  # extra margin: P(caption in `languages`) needed besides top-1
        detect_language: bool = False  # add language columns even without a whitelist
        boilerplate: bool = True  # built-in patterns (mmcurate.curate.captions.BOILERPLATE_PATTERNS)
        extra_boilerplate: list = field(default_factory=list)  # more regexes, each matched against the whole caption

        def validate(self):
            check_int("min_words", self.min_words, 0)
            check_int("min_chars", self.min_chars, 0)
            check_int("max_chars", self.max_chars, 1, optional=True)
            if self.max_chars is not None and self.max_chars < self.min_chars:
                raise ValueError(f"max_chars ({self.max_chars}) must be >= min_chars ({self.min_chars})")
            if self.languages is not None:
                cap.check_language_codes(self.languages)
            check_number("min_language_confidence", self.min_language_confidence, 0.0, 1.0)
            check_bool("detect_language", self.detect_language)
            check_bool("boilerplate", self.boilerplate)
            if isinstance(self.extra_boilerplate, str) or not isinstance(self.extra_boilerplate, (list, tuple)):
                raise ValueError(f"extra_boilerplate must be a list of regexes, got {self.extra_boilerplate!r}")
            cap.compile_extra_boilerplate(self.extra_boilerplate)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        self._rules = cap.CaptionRules(
            min_words=p.min_words,
            min_chars=p.min_chars,
            max_chars=p.max_chars,
            boilerplate=p.boilerplate,
            extra_boilerplate=tuple(cap.compile_extra_boilerplate(p.extra_boilerplate)),
        )
        self._languages = tuple(p.languages) if p.languages else None
        self._identifier = None

    @property
    def uses_language(self) -> bool:
        return self._languages is not None or self.params.detect_language

    @property
    def loads_state(self) -> bool:
        return self.uses_language  # the language model; without a whitelist setup() loads nothing

    def setup(self) -> None:
        # py3langid is imported here, not at module import: recipes without a whitelist never load it.
        if self.uses_language and self._identifier is None:
            identifier = cap.LanguageIdentifier()
            unknown = identifier.unknown(self._languages or ())
            if unknown:
                raise StageError(
                    f"stage '{self.name}': languages {unknown} are not known to the language "
                    f"identifier; valid: {', '.join(sorted(identifier.labels))}"
                )
            self._identifier = identifier

    def __getstate__(self):
        # The model is reloaded by setup() on the worker rather than shipped with the stage.
        state = self.__dict__.copy()
        state["_identifier"] = None
        return state

    def process(self, batch: pa.Table) -> StageResult:
        if self.uses_language and self._identifier is None:
            self.setup()
        captions = batch.column("caption").to_pylist()
        keep = [True] * len(captions)
        reasons, details, rejected_rows = [], [], []
        langs, scores = [], []
        for i, text in enumerate(captions):
            verdict = self._rules.check(text)
            if verdict is None and self.uses_language:
                if self._languages is None:
                    lang, score, _ = self._identifier.identify(text)
                else:
                    lang, score, why = self._identifier.check(
                        text, self._languages, self.params.min_language_confidence
                    )
                    if why is not None:
                        verdict = ("language", why)
                langs.append(lang)
                scores.append(score)
            elif self.uses_language:
                langs.append(None)
                scores.append(None)
            if verdict is not None:
                keep[i] = False
                rejected_rows.append(i)
                reasons.append(verdict[0])
                details.append(verdict[1])
        if self.uses_language:
            batch = with_column(batch, "language", langs, pa.string())
            batch = with_column(batch, "language_score", scores, pa.float32())
        return reject_rows(batch, self.name, rejected_rows, reasons, details)


# --------------------------------------------------------------------------------------------------
# pii_redact
# --------------------------------------------------------------------------------------------------


@registry.register
class PiiRedact(MapStage):
    """Replaces personal data with tokens in every text that reaches the output, and counts it per kind
    in `pii_redactions` (JSON {kind: count}, "{}" when nothing was found; the report sums the column by kind).

    Redacted by default: `caption`; `caption_original` (the raw caption caption_clean keeps; its finds
    are not counted twice); and every string value of the `meta` JSON at any depth: LLaVA conversation
    turns, img2dataset/LAION text fields (values that are a URL only lose credentials, so url/key fields
    stay intact). Keys and numbers are not redacted (keys name fields; a number is not text). `meta` is
    rewritten only where something was found. Conversations (the LLaVA reader's `turns`): every turn is redacted,
    and `question`/`answer` and the record's conversations follow them (stages.batch.set_turns), so the `turns`
    column, samples.parquet and the output record agree; their finds are counted once (not again for `caption`,
    a copy of the first answer). `keep_original_text: true` is the explicit opt-out: it
    keeps `caption_original` and `meta` as received (the raw text then reaches the output shard's .json
    and samples.parquet); `redact_meta: false` keeps only `meta` as received (the `turns`
    column is redacted all the same).
    With `reject_if_found`, samples holding any PII are rejected (reason `pii`) instead.

    Rejects, before any pattern runs: `text_too_long` (the caption, its original or one meta string
    longer than `max_chars`), and `meta_too_deep` (meta JSON nested deeper than 256 levels, or too deep
    for Python's json module), which cannot be checked within bounds and is never written out unchecked.
    """

    name = "pii_redact"
    batch_size = 1024
    requires = ("key", "source", "caption")
    resources = Resources(cpus=1.0)

    @dataclass
    class Params:
        kinds: list = field(default_factory=lambda: list(pii.KINDS))  # which detectors run
        tokens: dict = field(default_factory=dict)  # overrides of the replacement tokens, by kind
        reject_if_found: bool = False  # reject the sample (reason "pii") instead of redacting
        keep_original_text: bool = False  # keep caption_original and meta unredacted (opt-out)
        redact_meta: bool | None = None  # string values of the meta JSON; null: unless keep_original_text
        max_chars: int | None = MAX_CHARS_DEFAULT  # per text (caption, meta string): text_too_long; null: no limit

        def validate(self):
            if isinstance(self.kinds, str) or not isinstance(self.kinds, (list, tuple)) or not self.kinds:
                raise ValueError(f"kinds must be a non-empty list drawn from {list(pii.KINDS)}, got {self.kinds!r}")
            bad = [k for k in self.kinds if k not in pii.KINDS]
            if bad:
                raise ValueError(f"kinds: unknown {bad}; valid: {', '.join(pii.KINDS)}")
            if not isinstance(self.tokens, dict):
                raise ValueError(f"tokens must be a mapping kind -> replacement, got {self.tokens!r}")
            bad = [k for k in self.tokens if k not in pii.KINDS]
            if bad:
                raise ValueError(f"tokens: unknown kind(s) {bad}; valid: {', '.join(pii.KINDS)}")
            for kind, token in self.tokens.items():
                if not isinstance(token, str) or any(c.isdigit() or c == "@" for c in token):
                    # a token with digits or "@" could be matched again by a later detector
                    raise ValueError(f"tokens.{kind} must be a string without digits or '@', got {token!r}")
            check_bool("reject_if_found", self.reject_if_found)
            check_bool("keep_original_text", self.keep_original_text)
            check_bool("redact_meta", self.redact_meta, optional=True)
            check_int("max_chars", self.max_chars, 1, optional=True)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        self._redactor = pii.Redactor(
            kinds=tuple(k for k in pii.KINDS if k in p.kinds), tokens={**pii.DEFAULT_TOKENS, **p.tokens}
        )
        self._redact_meta = (not p.keep_original_text) if p.redact_meta is None else p.redact_meta

    def _redact_counted(self, text: str | None, counts: dict) -> str | None:
        if text is None:
            return None
        text, n = self._redactor.redact(text)
        pii.merge_counts(counts, n)
        return text

    def process(self, batch: pa.Table) -> StageResult:
        redactor, max_chars = self._redactor, self.params.max_chars
        captions = batch.column("caption").to_pylist()
        originals = batch.column("caption_original").to_pylist() if "caption_original" in batch.column_names else None
        redact_originals = originals is not None and not self.params.keep_original_text
        metas = batch.column("meta").to_pylist() if self._redact_meta and "meta" in batch.column_names else None
        all_turns = batch.column("turns").to_pylist() if "turns" in batch.column_names else None
        new_captions, new_originals, new_metas, new_turns, found = [], [], [], [], []
        unredactable: dict[int, tuple[str, str]] = {}
        for i, text in enumerate(captions):
            counts: dict[str, int] = {}
            orig = originals[i] if originals is not None else None
            meta = metas[i] if metas is not None else None
            turns = all_turns[i] if all_turns is not None else None
            verdict = _too_long(text, max_chars) or (_too_long(orig, max_chars) if redact_originals else None)
            for t in turns or ():
                verdict = verdict or _too_long(t["text"], max_chars)
            if verdict is None:
                try:
                    if turns is not None:
                        turns = [dict(t, text=self._redact_counted(t["text"], counts)) for t in turns]
                        if metas is not None:
                            meta = sync_meta(meta, turns)  # the record's conversations, now redacted
                    if metas is not None:
                        meta, meta_counts = redactor.redact_json(meta, max_chars=max_chars)
                        pii.merge_counts(counts, meta_counts)
                except pii.Unredactable as exc:
                    verdict = (exc.reason, exc.detail)
            if verdict is not None:
                # rejected: nothing of it is written; the columns keep a placeholder
                unredactable[i] = verdict
                text, orig, meta, turns, counts = None, None, None, None, {}
            else:
                if text is not None:
                    text, caption_counts = redactor.redact(text)
                    if turns is None:  # with a conversation, the caption is a copy of its first answer
                        pii.merge_counts(counts, caption_counts)
                if redact_originals and orig is not None:
                    orig = redactor.redact(orig)[0]
            new_captions.append(text)
            new_originals.append(orig)
            new_metas.append(meta)
            new_turns.append(turns)
            found.append(counts)

        if self.params.reject_if_found:
            rows = sorted(set(unredactable) | {i for i, c in enumerate(found) if c})
            reasons = [unredactable[i][0] if i in unredactable else "pii" for i in rows]
            details = [
                unredactable[i][1] if i in unredactable else ", ".join(f"{k}={n}" for k, n in found[i].items())
                for i in rows
            ]
            batch = with_column(batch, "pii_redactions", ["{}"] * len(found), pa.string())
            return reject_rows(batch, self.name, rows, reasons, details)

        if all_turns is not None:  # before the caption: its redacted text stays whatever set_turns finds
            batch = set_turns(batch, new_turns, sync_record=False)
        batch = _replace_column(batch, "caption", new_captions)
        if redact_originals:
            batch = _replace_column(batch, "caption_original", new_originals)
        if metas is not None:
            batch = _replace_column(batch, "meta", new_metas)
        batch = with_column(batch, "pii_redactions", [json.dumps(c, sort_keys=True) for c in found], pa.string())
        rows = sorted(unredactable)
        return reject_rows(
            batch, self.name, rows, [unredactable[i][0] for i in rows], [unredactable[i][1] for i in rows]
        )


def summarize_redactions(column) -> dict[str, int]:
    """Sum a `pii_redactions` column (list of JSON strings or an Arrow array) into {kind: count}."""
    values = column.to_pylist() if hasattr(column, "to_pylist") else column
    total: dict[str, int] = {}
    for v in values:
        if v:
            pii.merge_counts(total, json.loads(v))
    return dict(sorted(total.items()))
