"""PII detectors and redaction (mmcurate.curate.pii): positives, false-positive traps, checksums."""

from __future__ import annotations

import datetime
import json

import pytest

from mmcurate.curate import pii


def kinds_found(text, kinds=pii.KINDS):
    return pii.redact(text, kinds)[1]


# ----------------------------------------------------------------------------------------------
# Checksums and validators
# ----------------------------------------------------------------------------------------------


def test_luhn():
    assert pii.luhn_valid("4111111111111111")
    assert pii.luhn_valid("79927398713")
    assert not pii.luhn_valid("4111111111111112")
    assert not pii.luhn_valid("79927398710")


@pytest.mark.parametrize(
    "number, scheme",
    [
        ("4111111111111111", "visa"),
        ("4012888888881881", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("371449635398431", "amex"),
        ("6011111111111117", "discover"),
        ("30569309025904", "diners"),
        ("3530111333300000", "jcb"),
        ("6200000000000005", "unionpay"),
        ("4222222222222", None),  # 13-digit Visa: no longer issued, and EAN-13 barcodes look like it
        ("9111111111111111", None),  # no scheme starts with 9
        ("1234567812345678", None),
    ],
)
def test_card_scheme(number, scheme):
    assert pii.card_scheme(number) == scheme


def test_cn_id_check_digit_iso7064():
    # GB 11643-1999 example: 11010519491231002X
    assert pii.cn_id_check_digit("11010519491231002") == "X"
    assert pii.is_cn_resident_id("11010519491231002X")
    assert pii.is_cn_resident_id("11010519491231002x")
    # Every check digit is the unique one: changing it or any other digit breaks it.
    assert not pii.is_cn_resident_id("110105194912310021")
    assert not pii.is_cn_resident_id("11010519491231003X")


def make_cn_id(region="440308", born="19900307", seq="123"):
    first17 = region + born + seq
    return first17 + pii.cn_id_check_digit(first17)


@pytest.mark.parametrize(
    "born, ok",
    [
        ("19900307", True),
        ("20000229", True),  # leap day
        ("19000229", False),  # 1900 was no leap year
        ("19901301", False),  # month 13
        ("19900431", False),  # 31 April
        ("18991231", False),  # before 1900
        ("20990101", False),  # in the future
    ],
)
def test_cn_id_birth_date(born, ok):
    assert pii.is_cn_resident_id(make_cn_id(born=born), today=datetime.date(2025, 1, 1)) == ok


def test_cn_id_region():
    assert pii.is_cn_resident_id(make_cn_id(region="110105"))
    assert not pii.is_cn_resident_id(make_cn_id(region="990105"))  # no province 99
    assert not pii.is_cn_resident_id(make_cn_id(region="200105"))


@pytest.mark.parametrize(
    "area, group, serial, ok",
    [
        ("123", "45", "6789", True),
        ("001", "01", "0001", True),
        ("899", "99", "9999", True),
        ("000", "12", "3456", False),
        ("666", "12", "3456", False),
        ("900", "12", "3456", False),
        ("123", "00", "4567", False),
        ("123", "45", "0000", False),
    ],
)
def test_ssn_ranges(area, group, serial, ok):
    assert pii.is_us_ssn(area, group, serial) == ok


# ----------------------------------------------------------------------------------------------
# Detection in text: positives
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected, counts",
    [
        ("mail john.doe+news@example.co.uk today", "mail <EMAIL> today", {"email": 1}),
        ("a@b.io, c_d@e-f.org", "<EMAIL>, <EMAIL>", {"email": 2}),
        ("mailto:someone@example.com", "mailto:<EMAIL>", {"email": 1}),
        ("card 4111 1111 1111 1111 exp 12/27", "card <CREDIT_CARD> exp 12/27", {"credit_card": 1}),
        ("card 4111-1111-1111-1111", "card <CREDIT_CARD>", {"credit_card": 1}),
        ("card 5555555555554444.", "card <CREDIT_CARD>.", {"credit_card": 1}),
        ("amex 3782 822463 10005", "amex <CREDIT_CARD>", {"credit_card": 1}),
        ("card 4111 1111 1111 1111 2024", "card <CREDIT_CARD> 2024", {"credit_card": 1}),
        ("身份证 11010519491231002X 号", "身份证 <ID> 号", {"national_id": 1}),
        ("SSN: 123-45-6789", "SSN: <ID>", {"national_id": 1}),
        ("server 8.8.8.8.", "server <IP>.", {"ip": 1}),
        ("from 203.0.113.195:8080", "from <IP>:8080", {"ip": 1}),
        ("host 2001:db8:85a3::8a2e:370:7334 up", "host <IP> up", {"ip": 1}),
        ("link-local fe80::1%eth0", "link-local <IP>", {"ip": 1}),
        (
            "https://admin:hunter2@example.com/x.jpg",
            "https://<URL_CREDENTIALS>@example.com/x.jpg",
            {"url_credentials": 1},
        ),
        ("ftp://user:@files.example.org", "ftp://<URL_CREDENTIALS>@files.example.org", {"url_credentials": 1}),
        ("call +1 (555) 234-5678 now", "call <PHONE> now", {"phone": 1}),
        ("+44 20 7946 0958", "<PHONE>", {"phone": 1}),
        ("+49-30-1234567", "<PHONE>", {"phone": 1}),
        ("+86 138 0013 8000", "<PHONE>", {"phone": 1}),
        ("tel (415) 555-2671", "tel <PHONE>", {"phone": 1}),
        ("tel 415-555-2671", "tel <PHONE>", {"phone": 1}),
        ("tel 415.555.2671", "tel <PHONE>", {"phone": 1}),
        ("toll-free 1-800-555-0199", "toll-free <PHONE>", {"phone": 1}),
        ("call 1 (800) 555-0199", "call <PHONE>", {"phone": 1}),
        ("手机13800138000", "手机<PHONE>", {"phone": 1}),
        ("手机 138-0013-8000", "手机 <PHONE>", {"phone": 1}),
    ],
)
def test_detects(text, expected, counts):
    assert pii.redact(text) == (expected, counts)


def test_mixed_caption_counts_every_kind():
    text = (
        "Contact jane@example.org or +1 415 555 2671; card 4111111111111111, "
        "SSN 123-45-6789, ID 11010519491231002X, ip 198.51.100.7, https://bob:pw@example.net/a"
    )
    out, counts = pii.redact(text)
    assert counts == {"email": 1, "phone": 1, "credit_card": 1, "national_id": 2, "ip": 1, "url_credentials": 1}
    assert "jane" not in out and "4111" not in out and "1949" not in out and "bob" not in out
    assert "https://<URL_CREDENTIALS>@example.net/a" in out


# ----------------------------------------------------------------------------------------------
# Detection in text: false-positive traps
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "born 1987",
        "only $19.99 today",
        "1920x1080 wallpaper",
        "resolution 3840 x 2160",
        "release v1.2.3",
        "version 1.2.3",
        "version 1.2.3.4.5",
        "ISBN 978-3-16-148410-0",
        "ISBN 0-306-40615-2",
        "ISBN 9783161484100",
        "EAN 4006381333931",  # a barcode that starts like a Visa number
        "order 1234 5678 9012 3456",  # 16 digits, fails Luhn
        "order #4111111111111112",  # Luhn fails by one digit
        "ID 110105194912310021",  # Chinese ID with a wrong check digit
        "ID 110105199013320014",  # ... and one with an impossible birth date
        "SSN 666-12-3456",
        "Call me at noon",
        "meet at 10:30:00",
        "MAC 00:1a:2b:3c:4d:5e",
        "see std::vector and add::b",
        "on 2021-10-15 at 14:00",
        "on 15.10.2021",
        "up 25% to 1,234,567 units",
        "+20% more",
        "score 3-2-1",
        "localhost 127.0.0.1 and 0.0.0.0",
        "netmask 255.255.255.0",
        "logo@2x.png",
        "ssh://git@github.com/owner/repo",  # a user name alone is no credential
        "https://example.com/img/4111111111111111.jpg?w=1920",
        "timestamp 1609459200000",
        "Route 66 and I-95",
        "the year 2020 in 4K",
        "room 101, floor 3",
        "lat 40.7128, lon -74.0060",
        "Canon EOS 5D Mark III 24-105mm f/4",
        "Intel Core i7-10700K 3.8 GHz",
        "Model No. 1234-567-8901",
        "Part number 555-1234",
        "Serial 2023-0001-1234",
        "Photo 1 of 12 (2048 x 1536)",
        "Population 1,403,500,365",
        "Windows 10.0.19041.1",
        "Lottery numbers 4 8 15 16 23 42",
        "1234 5678 9012 3456 7890",
        "UPC 036000291452",
        "ISBN-13: 978-0-596-52068-7",
    ],
)
def test_false_positive_traps(text):
    if text.startswith("https://example.com/img/"):
        # in caption text a Luhn-valid number is redacted even in a path; in meta, URL values are spared
        assert pii.Redactor().redact_url(text) == (text, {})
        return
    assert pii.redact(text) == (text, {})


# ----------------------------------------------------------------------------------------------
# Redactor options and JSON metadata
# ----------------------------------------------------------------------------------------------


def test_kinds_and_tokens():
    text = "mail a@example.com, call +1 415 555 2671"
    assert pii.redact(text, kinds=["email"]) == ("mail <EMAIL>, call +1 415 555 2671", {"email": 1})
    out, _ = pii.redact(text, tokens={"phone": "[phone]"})
    assert out == "mail <EMAIL>, call [phone]"


def test_redact_is_idempotent():
    text = "mail a@example.com, call +1 415 555 2671, card 4111111111111111, ip 8.8.4.4"
    once, _ = pii.redact(text)
    assert pii.redact(once) == (once, {})


def test_redact_json_values_only():
    redactor = pii.Redactor()
    meta = json.dumps(
        {
            "url": "https://cdn.example.com/4111111111111111/1920x1080.jpg",
            "private": "https://u:secret@example.com/a.jpg",
            "caption": "mail me at a@example.com",
            "nested": {"list": ["call +44 20 7946 0958", 5551234567]},
            "a@example.com": "key stays",
        }
    )
    out, counts = redactor.redact_json(meta)
    doc = json.loads(out)
    assert doc["url"] == "https://cdn.example.com/4111111111111111/1920x1080.jpg"
    assert doc["private"] == "https://<URL_CREDENTIALS>@example.com/a.jpg"
    assert doc["caption"] == "mail me at <EMAIL>"
    assert doc["nested"] == {"list": ["call <PHONE>", 5551234567]}  # numbers are not text
    assert doc["a@example.com"] == "key stays"
    assert counts == {"url_credentials": 1, "email": 1, "phone": 1}


@pytest.mark.parametrize(
    "meta",
    [
        None,
        "",
        "{}",
        '{"width": 1920, "url": "https://example.com/a.jpg"}',
        "not json @ 123",
        '{"key": "000000123", "sha256": "ab12"}',
    ],
)
def test_redact_json_untouched_byte_for_byte(meta):
    assert pii.Redactor().redact_json(meta) == (meta, {})


def test_merge_counts():
    assert pii.merge_counts({"email": 1}, {"email": 2, "ip": 1}) == {"email": 3, "ip": 1}


def test_redact_json_not_json_is_redacted_as_text():
    out, counts = pii.Redactor().redact_json("contact a@example.com {not json")
    assert out == "contact <EMAIL> {not json" and counts == {"email": 1}


def test_redact_json_walks_any_depth_iteratively_up_to_the_bound():
    doc = "mail a@example.com"
    for _ in range(pii.MAX_META_DEPTH - 1):
        doc = [doc]
    out, counts = pii.Redactor().redact_json(json.dumps(doc))
    assert counts == {"email": 1} and "<EMAIL>" in out
    for meta in (json.dumps([[doc]]), "[" * 100_000 + "]" * 100_000, "[" * 300 + "]" * 300):
        with pytest.raises(pii.Unredactable) as err:
            pii.Redactor().redact_json(meta)
        assert err.value.reason == "meta_too_deep"


def test_redact_json_max_chars_per_string():
    meta = json.dumps({"conversations": [{"from": "gpt", "value": "x" * 50}]})
    with pytest.raises(pii.Unredactable) as err:
        pii.Redactor().redact_json(meta, max_chars=40)
    assert err.value.reason == "text_too_long" and "xxx" not in err.value.detail
    assert pii.Redactor().redact_json(meta, max_chars=50) == (meta, {})
