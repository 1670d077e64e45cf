"""Personal data in caption text: detectors and redaction.

Each detector is a candidate regex plus a validator (checksums, valid ranges, numbering plans), so
that years, prices, dates, image sizes, version strings, ISBNs and order numbers stay untouched.
Detectors run in a fixed order on the text left by the previous ones, so the more specific kind wins
(credentials before e-mail, card and ID numbers before phone numbers); replacement tokens contain no
digits and cannot be matched again.

Kinds and their default tokens:
    url_credentials  scheme://user:password@host  ->  scheme://<URL_CREDENTIALS>@host  (host and path kept)
    email            name@example.org             ->  <EMAIL>
    credit_card      14-19 digits, Luhn-valid, known IIN prefix and length, optional space/dash groups
                                                  ->  <CREDIT_CARD>
    national_id      18-digit Chinese resident ID (region, birth date, ISO 7064 MOD 11-2 check digit),
                     US SSN ddd-dd-dddd outside the never-issued ranges               ->  <ID>
                     (15-digit first-generation Chinese IDs have no check digit and are not detected)
    ip               IPv4 / IPv6 except loopback, unspecified and 255.x masks         ->  <IP>
    phone            +CC international, NANP [1-](xxx) xxx-xxxx, Chinese mobile 1[3-9]x{9} ->  <PHONE>
                     (national formats of other countries without "+CC", e.g. UK "020 7946 0958", are
                     not detected: too close to other numbers without a country's numbering plan)
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from dataclasses import dataclass, field

# Detector patterns are compiled with re.ASCII: their \w and \d are ASCII, so that a number written right
# after CJK text ("手机13800138000") still has a word boundary.
KINDS = ("url_credentials", "email", "credit_card", "national_id", "ip", "phone")
DEFAULT_TOKENS = {
    "url_credentials": "<URL_CREDENTIALS>",
    "email": "<EMAIL>",
    "credit_card": "<CREDIT_CARD>",
    "national_id": "<ID>",
    "ip": "<IP>",
    "phone": "<PHONE>",
}

# --------------------------------------------------------------------------------------------------
# URL credentials
# --------------------------------------------------------------------------------------------------

# Only user:password is a credential; "ssh://git@host" (a user name alone) is left alone.
_URL_CREDENTIALS = re.compile(
    r"\b([A-Za-z][A-Za-z0-9+.-]{1,15}://)([^\s:/@?#\[\]]+:[^\s/@?#]*)@(?=[^\s@/?#]*[A-Za-z0-9])", re.ASCII
)


def redact_url_credentials(text: str, token: str) -> tuple[str, int]:
    return _URL_CREDENTIALS.subn(lambda m: f"{m.group(1)}{token}@", text)


# --------------------------------------------------------------------------------------------------
# E-mail
# --------------------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+%/-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])",
    re.ASCII,
)
# "logo@2x.png" is an asset name, not an address: these endings are file types, not top-level domains.
_FILE_EXTENSIONS = frozenset("png jpg jpeg gif webp svg bmp tif tiff heic avif ico pdf psd".split())


def is_email(candidate: str) -> bool:
    return candidate.rsplit(".", 1)[1].lower() not in _FILE_EXTENSIONS


def redact_email(text: str, token: str) -> tuple[str, int]:
    if "@" not in text:
        return text, 0
    return _redact_validated(_EMAIL, is_email, text, token)


# --------------------------------------------------------------------------------------------------
# Credit cards
# --------------------------------------------------------------------------------------------------

# 13-19 digits, either contiguous or in groups joined by one kind of separator.
_CARD_CANDIDATE = re.compile(r"(?<![\w.,/-])\d{4}(?:[ -]?\d{2,7}){1,4}(?![\w]|[.,/-]\d)", re.ASCII)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _in_ranges(digits: str, ranges) -> bool:
    for lo, hi in ranges:
        n = len(str(lo))
        if lo <= int(digits[:n]) <= hi:
            return True
    return False


# (IIN prefix ranges, allowed lengths) per scheme.
_CARD_SCHEMES = (
    # 13-digit Visa numbers are no longer issued, and EAN-13 barcodes (400-440: Germany) would pass
    # the Luhn test one time in ten.
    ("visa", ((4, 4),), (16, 19)),
    ("mastercard", ((51, 55), (2221, 2720)), (16,)),
    ("amex", ((34, 34), (37, 37)), (15,)),
    ("discover", ((6011, 6011), (644, 649), (65, 65)), (16, 17, 18, 19)),
    ("diners", ((300, 305), (36, 36), (38, 39)), (14, 15, 16, 17, 18, 19)),
    ("jcb", ((3528, 3589),), (16, 17, 18, 19)),
    ("unionpay", ((62, 62), (81, 81)), (16, 17, 18, 19)),
    (
        "maestro",
        ((5018, 5018), (5020, 5020), (5038, 5038), (5893, 5893), (6304, 6304), (6759, 6759), (6761, 6763)),
        (16, 17, 18, 19),
    ),
    ("mir", ((2200, 2204),), (16, 17, 18, 19)),
)


def card_scheme(digits: str) -> str | None:
    """Card scheme whose IIN range and length fit `digits`, or None."""
    for name, ranges, lengths in _CARD_SCHEMES:
        if len(digits) in lengths and _in_ranges(digits, ranges):
            return name
    return None


_CARD_GROUP_END = re.compile(r"(?<=\d)(?=[ -])")


def _card_grouping_ok(candidate: str) -> bool:
    has_space, has_dash = " " in candidate, "-" in candidate
    if not has_space and not has_dash:
        return True
    if has_space and has_dash:
        return False
    groups = [len(g) for g in candidate.split(" " if has_space else "-")]
    # 4-4-4-4(-3), 4-6-5 (Amex), 4-6-4 (Diners), 4-4-4-x; a last group may be shorter.
    if groups[:2] == [4, 6] and len(groups) == 3:
        return groups[2] in (4, 5)
    return all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4


def is_credit_card(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return (
        13 <= len(digits) <= 19
        and _card_grouping_ok(candidate)
        and len(set(digits)) > 1
        and card_scheme(digits) is not None
        and luhn_valid(digits)
    )


def redact_credit_cards(text: str, token: str) -> tuple[str, int]:
    count = 0

    def repl(m):
        # A card followed by another number ("4111 1111 1111 1111 2024") is one candidate: try
        # the longest group prefix that is a card and keep the rest.
        nonlocal count
        candidate = m.group(0)
        groups = _CARD_GROUP_END.split(candidate)
        for end in range(len(groups), 0, -1):
            head = "".join(groups[:end])
            if is_credit_card(head):
                count += 1
                return token + candidate[len(head) :]
        return candidate

    return _CARD_CANDIDATE.sub(repl, text), count


# --------------------------------------------------------------------------------------------------
# National IDs
# --------------------------------------------------------------------------------------------------

_CN_ID_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{16}[\dXx](?![0-9A-Za-z])", re.ASCII)
_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)  # 2^(17-i) mod 11
_CN_ID_CHECK = "10X98765432"  # index: weighted sum mod 11
# Province-level codes (GB/T 2260) that the first two digits must name.
_CN_PROVINCES = frozenset(
    {
        11,
        12,
        13,
        14,
        15,
        21,
        22,
        23,
        31,
        32,
        33,
        34,
        35,
        36,
        37,
        41,
        42,
        43,
        44,
        45,
        46,
        50,
        51,
        52,
        53,
        54,
        61,
        62,
        63,
        64,
        65,
        71,
        81,
        82,
        83,
        91,
    }
)


def cn_id_check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of the first 17 digits of a Chinese resident ID."""
    return _CN_ID_CHECK[sum(int(d) * w for d, w in zip(first17, _CN_ID_WEIGHTS)) % 11]


def is_cn_resident_id(candidate: str, today: datetime.date | None = None) -> bool:
    """18-character Chinese resident ID: known province, real birth date (1900..today), valid check digit."""
    if len(candidate) != 18 or int(candidate[:2]) not in _CN_PROVINCES:
        return False
    try:
        born = datetime.date(int(candidate[6:10]), int(candidate[10:12]), int(candidate[12:14]))
    except ValueError:
        return False
    if not datetime.date(1900, 1, 1) <= born <= (today or datetime.date.today()):
        return False
    return cn_id_check_digit(candidate[:17]) == candidate[17].upper()


_SSN_CANDIDATE = re.compile(r"(?<![\w.-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w]|[.-]\d)", re.ASCII)


def is_us_ssn(area: str, group: str, serial: str) -> bool:
    """SSA never issues area 000, 666 or 900-999, group 00 or serial 0000."""
    a = int(area)
    return a != 0 and a != 666 and a < 900 and group != "00" and serial != "0000"


def redact_national_ids(text: str, token: str) -> tuple[str, int]:
    text, n_cn = _redact_validated(_CN_ID_CANDIDATE, is_cn_resident_id, text, token)
    count = 0

    def ssn(m):
        nonlocal count
        if is_us_ssn(m.group(1), m.group(3), m.group(4)):
            count += 1
            return token
        return m.group(0)

    return _SSN_CANDIDATE.sub(ssn, text), n_cn + count


# --------------------------------------------------------------------------------------------------
# IP addresses
# --------------------------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Exactly four dotted parts: "v1.2.3", "1.2.3" and "1.2.3.4.5" are versions, not addresses.
_IPV4_CANDIDATE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)", re.ASCII)
_IPV6_CANDIDATE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?:%[\w.]+)?"
    r"(?![\w:]|\.\w)",
    re.ASCII,
)


def _public_ip(addr) -> bool:
    if addr.is_loopback or addr.is_unspecified:
        return False
    if addr.version == 4 and str(addr).startswith("255."):
        return False  # netmasks and broadcast: they identify nobody
    return True


def is_ipv4(candidate: str) -> bool:
    try:
        return _public_ip(ipaddress.IPv4Address(candidate))
    except ValueError:
        return False


def is_ipv6(candidate: str) -> bool:
    # "10:30:00" (a time) and "00:1a:2b:3c:4d:5e" (a MAC) fail here: too few groups without "::";
    # "add::b" (code) has no digit.
    if not any(c.isdigit() for c in candidate):
        return False
    try:
        addr = ipaddress.IPv6Address(candidate.split("%", 1)[0])
    except ValueError:
        return False
    return _public_ip(addr)


def redact_ips(text: str, token: str) -> tuple[str, int]:
    n6 = 0
    if ":" in text:
        text, n6 = _redact_validated(_IPV6_CANDIDATE, is_ipv6, text, token)
    text, n4 = _redact_validated(_IPV4_CANDIDATE, is_ipv4, text, token)
    return text, n4 + n6


# --------------------------------------------------------------------------------------------------
# Phone numbers
# --------------------------------------------------------------------------------------------------

# "+CC" then digit groups: the plus sign is the signal, so 8-15 digits (E.164) suffice.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,6}(?![\w]|[.,-]\d)", re.ASCII)
# NANP: area code and exchange start with 2-9; "(555) 123-4567", "555-123-4567", "555.123.4567",
# optionally after the trunk prefix "1-" / "1 " ("1234-567-8901" is a part number, not 1-234-...).
_PHONE_NANP = re.compile(
    r"(?<![\w.+-])(?:1[-. ]|1(?=\())?(?:\(([2-9]\d\d)\)[ .-]?|([2-9]\d\d)([-. ]))"
    r"([2-9]\d\d)([-. ])(\d{4})(?![\w]|[.-]\d)",
    re.ASCII,
)
# Chinese mobile: 11 digits 1[3-9]..., contiguous or 3-4-4 with one separator.
_PHONE_CN_MOBILE = re.compile(r"(?<![\w.+-])1[3-9]\d(?:(\d{8})|([ -])\d{4}\2\d{4})(?![\w]|[.-]\d)", re.ASCII)


def _phone_intl_ok(candidate: str) -> bool:
    return 8 <= sum(c.isdigit() for c in candidate) <= 15


def _phone_nanp_ok(m: re.Match) -> bool:
    # Without parentheses both separators must agree ("555-123-4567", not "555 123-4567" in a list).
    return m.group(1) is not None or m.group(3) == m.group(5)


def redact_phones(text: str, token: str) -> tuple[str, int]:
    text, n1 = _redact_validated(_PHONE_INTL, _phone_intl_ok, text, token)
    count = 0

    def nanp(m):
        nonlocal count
        if _phone_nanp_ok(m):
            count += 1
            return token
        return m.group(0)

    text = _PHONE_NANP.sub(nanp, text)
    text, n3 = _PHONE_CN_MOBILE.subn(token, text)
    return text, n1 + count + n3


# --------------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------------


def _redact_validated(candidate: re.Pattern, valid, text: str, token: str) -> tuple[str, int]:
    count = 0

    def repl(m):
        nonlocal count
        if valid(m.group(0)):
            count += 1
            return token
        return m.group(0)

    return candidate.sub(repl, text), count


_DETECTORS = {
    "url_credentials": redact_url_credentials,
    "email": redact_email,
    "credit_card": redact_credit_cards,
    "national_id": redact_national_ids,
    "ip": redact_ips,
    "phone": redact_phones,
}
# Every kind needs a digit, "@" (e-mail, credentials) or ":" (IPv6): a cheap early exit.
_MAY_HOLD_PII = re.compile(r"[0-9@:]")
_URL_VALUE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")


# Deeper meta is rejected (meta_too_deep): real metadata nests a few levels, and Python's json module
# (used here and when the output JSON is written) fails near 1,000 levels.
MAX_META_DEPTH = 256


class Unredactable(ValueError):
    """A text the redactor refuses to process; `reason` is the reject reason (text_too_long,
    meta_too_deep), `detail` says why without quoting the text."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Redactor:
    """Redacts the selected kinds, in the order of KINDS, with the given replacement tokens."""

    kinds: tuple[str, ...] = KINDS
    tokens: dict = field(default_factory=lambda: dict(DEFAULT_TOKENS))

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """(redacted text, {kind: count}) with only the kinds found."""
        counts: dict[str, int] = {}
        if not text or not _MAY_HOLD_PII.search(text):
            return text, counts
        for kind in KINDS:
            if kind in self.kinds:
                text, n = _DETECTORS[kind](text, self.tokens[kind])
                if n:
                    counts[kind] = n
        return text, counts

    def redact_url(self, url: str) -> tuple[str, dict[str, int]]:
        """A URL value only loses its credentials: digits in a path or query are no phone number."""
        if "url_credentials" not in self.kinds:
            return url, {}
        url, n = redact_url_credentials(url, self.tokens["url_credentials"])
        return url, ({"url_credentials": n} if n else {})

    def redact_json(
        self, meta: str | None, max_chars: int | None = None, max_depth: int = MAX_META_DEPTH
    ) -> tuple[str | None, dict[str, int]]:
        """Redact the string values of a JSON document: every string at any depth, conversation turns
        included (keys, numbers and URL-only strings' paths are left alone: keys name fields, and a
        number is not text). A meta that is not JSON is redacted as one text. The original text is
        returned unchanged, byte for byte, when nothing was found.

        Raises Unredactable("meta_too_deep") for documents nested deeper than `max_depth` (they cannot
        be checked within bounds, and the JSON written next to the image could not be read back), and
        Unredactable("text_too_long") for a string value longer than `max_chars`, before any regex."""
        if not meta:
            return meta, {}
        if (
            not _MAY_HOLD_PII.search(meta)
            and (max_chars is None or len(meta) <= max_chars)
            and meta.count("[") + meta.count("{") <= max_depth
        ):
            return meta, {}  # nothing to redact, no string too long, not too deep
        try:
            doc = json.loads(meta)
        except RecursionError:
            raise Unredactable("meta_too_deep", f"meta JSON nested deeper than {max_depth} levels") from None
        except ValueError:
            if max_chars is not None and len(meta) > max_chars:
                raise Unredactable(
                    "text_too_long", f"meta (not JSON) has {len(meta)} characters > max_chars {max_chars}"
                ) from None
            return self.redact(meta)
        counts: dict[str, int] = {}
        doc = self._walk(doc, counts, max_chars, max_depth)
        if not counts:
            return meta, counts
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")), counts

    def _redact_value(self, value: str, counts, max_chars):
        if max_chars is not None and len(value) > max_chars:
            raise Unredactable(
                "text_too_long", f"a meta string value has {len(value)} characters > max_chars {max_chars}"
            )
        new, found = self.redact_url(value) if _URL_VALUE.fullmatch(value) else self.redact(value)
        merge_counts(counts, found)
        return new

    def _walk(self, doc, counts, max_chars=None, max_depth=MAX_META_DEPTH):
        """Redacts in place, iteratively: no recursion limit, whatever the depth."""
        if isinstance(doc, str):
            return self._redact_value(doc, counts, max_chars)
        stack = [(doc, 1)] if isinstance(doc, (list, dict)) else []
        while stack:
            node, depth = stack.pop()
            if depth > max_depth:
                raise Unredactable("meta_too_deep", f"meta JSON nested deeper than {max_depth} levels")
            for k, v in node.items() if isinstance(node, dict) else enumerate(node):
                if isinstance(v, str):
                    node[k] = self._redact_value(v, counts, max_chars)
                elif isinstance(v, (list, dict)):
                    stack.append((v, depth + 1))
        return doc


def merge_counts(into: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    for kind, n in more.items():
        into[kind] = into.get(kind, 0) + n
    return into


def redact(text: str, kinds=KINDS, tokens=None) -> tuple[str, dict[str, int]]:
    """Convenience: redact `kinds` in one text with default (or given) tokens."""
    return Redactor(tuple(kinds), {**DEFAULT_TOKENS, **(tokens or {})}).redact(text)
