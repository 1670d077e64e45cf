"""Hostile caption text and planted personal data, for tests/hostile/test_text.py, test_privacy.py and
benchmarks/bench_text_adversarial.py.

`adversarial(family, n)` builds a caption of about `n` characters aimed at one regex family of
mmcurate.curate.captions / mmcurate.curate.pii: each one repeats a unit that opens a match the regex
can only reject after scanning far ahead (unclosed tags, unterminated quotes, digit runs that almost
form a card or phone number, label chains without a top-level domain, ...), which is what makes a
backtracking regex quadratic or worse.
"""

from __future__ import annotations

# family -> repeated unit (or a builder taking n). Units are ASCII unless the family targets non-ASCII
# code paths (mojibake, junk characters, CJK segmentation).
_UNITS: dict[str, str] = {
    # caption_filter word counting / boilerplate: punctuation only, no letter to end a token
    "punct_bang_question": "!?",
    "punct_mixed": "!?.,;:-_*#",
    # strip_html: hidden elements, tags, declarations, comments
    "script_unclosed": "<script",
    "script_open_tags": "<script>",
    "style_open_tags": "<style x>",
    "tag_a_space": "<a ",
    "tag_a_quote": '<a "',
    "tag_a_squote": "<a x='",
    "tag_name_dash": "<a-",
    "tag_close_slash": "</b ",
    "declaration": "<!",
    "pi_decl": "<?",
    "comment_open": "<!--",
    "lt_only": "<",
    # entities (decoded twice, then tags stripped again)
    "entity_amp_chain": "&amp;",
    "entity_lt_script": "&lt;script&gt;",
    "entity_unterminated": "&#12345",
    "entity_name_long": "&abcdefghijklmnopqrstuvwxyz",
    # PII detectors
    "digits": "1",
    "digits_spaced": "4111 ",
    "digits_dashed": "4111-",
    "card_groups": "4111 1111 1111 1111 ",
    "card_like_run": "4111111111111111 ",
    "ssn_like": "123-45-6789-",
    "phone_plus": " +1234567890123456789012345678901",
    "phone_plus_groups": "+1 234 ",
    "phone_paren": "(555) ",
    "phone_nanp_chain": "555-123-",
    "phone_cn_like": "138 0013 ",
    "cn_id_like": "110101199003074",
    "ipv4_chain": "1.2.3.",
    "ipv4_like": "192.168.1.1.",
    "ipv6_colons": "1:",
    "ipv6_hex": "abcd:",
    "ipv6_double": "::",
    "ipv6_zone": "fe80::1%",
    "email_at_run": "@",
    "email_a_at": "a@",
    "email_labels": "a.",
    "email_label_dash": "a-",
    "email_local_dots": "a.b",
    "url_cred": "http://u:p",
    "url_cred_colon": "ab://x:",
    "url_scheme_chain": "a://",
    # clean
    "whitespace": " \t\n\u3000\u00a0",
    "junk_chars": "\u200b\ufeff\x01",
    "mojibake": "cafÃ© ",
    "lines_nonascii": "é\n",
    "lines_mixed": "a\né\n",
    "mojibake_utf8_runs": "Ã\u0083Â",
    "repeat_emoji": "😂",
    "cjk_run": "一只狗",
    "thai_run": "สวัสดี",
    # boilerplate (full-match patterns)
    "untitled_digits": None,  # "untitled " + digits
    "untitled_digit_run": None,  # "untitled " + one digit run: exponential in the original pattern
    "camera_burst": None,  # "img_1" + "burst" * k: exponential in the original pattern
    "email_long_domain": None,  # "x@" + "a." * k without a top-level domain
    "email_many_domains": None,  # many addresses sharing a long label chain
    "camera_digits": None,  # "img_" + digits/separators
    "template_braces": None,  # "{{" + "x" * n  (no closing "}}")
    "lorem": None,
    "file_name_chars": None,  # path characters without an image extension
    "view_words": None,
}


def adversarial(family: str, n: int) -> str:
    """A caption of about n characters for `family` (see FAMILIES)."""
    if family == "untitled_digits":
        return "untitled " + "1 " * (n // 2) + "x"
    if family == "untitled_digit_run":
        return "untitled project " + "1" * (n - 20) + "x"  # 3 words: reaches the boilerplate patterns
    if family == "camera_burst":
        return "img_1" + "burst" * (n // 5) + "!a b c"
    if family == "email_long_domain":
        return "x@" + "a." * (n // 2) + "1"
    if family == "email_many_domains":
        return ("a" * 60 + "@" + "b-c." * 30 + "1 ") * (n // 183)
    if family == "camera_digits":
        return "img_" + "1_" * (n // 2) + "x"
    if family == "template_braces":
        return "{{" + "{x" * (n // 2)
    if family == "lorem":
        return "lorem ipsum " + "dolor " * (n // 6) + "}}"
    if family == "file_name_chars":
        return "a/" * (n // 2) + ".jp"
    if family == "view_words":
        return "click here " * (n // 11) + "\x00"
    unit = _UNITS[family]
    return unit * max(1, n // len(unit))


FAMILIES: tuple[str, ...] = tuple(_UNITS)

# ------------------------------------------------------------------------------------------------
# Planted personal data (each detected by mmcurate.curate.pii with the default kinds)
# ------------------------------------------------------------------------------------------------

PII_VALUES: dict[str, str] = {
    "card": "4539 1488 0343 6467",  # Visa, Luhn-valid
    "email": "jane.roe@example.org",
    "phone": "+1 (415) 555-2671",
    "ssn": "219-09-9999",
    "ip": "203.0.113.195",
    "url_credentials": "alice:s3cretPw@",  # in https://alice:s3cretPw@example.com/x
    "cn_id": "11010519491231002X",
}


def pii_sentence(i: int = 0) -> str:
    """A caption that mentions every planted value (long enough to pass caption_filter)."""
    v = PII_VALUES
    return (
        f"A red bicycle number {i} leaning on a wall, card {v['card']}, mail {v['email']}, call {v['phone']}, "
        f"ssn {v['ssn']}, host {v['ip']}, see https://{v['url_credentials']}example.com/x and id {v['cn_id']}"
    )


def pii_needles(value: str) -> list[str]:
    """Forms in which a planted value could appear in an output file: raw, JSON-escaped, with its
    separators removed (digits only) and URL-encoded."""
    import json
    from urllib.parse import quote

    forms = {value, json.dumps(value)[1:-1], quote(value), quote(value, safe="")}
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) >= 9:
        forms.add(digits)
    if "@" in value and not value.endswith("@"):
        forms.add(value.replace("@", "\\u0040"))
    return sorted(forms)
