"""PII detectors: positives and look-alikes per entity type."""

from __future__ import annotations

import base64
import itertools
import json

import pytest

from sidegate.config.guard import Entity
from sidegate.features.guard.pii import find_pii, is_card, is_ssn

ALL = list(Entity)


def found(text: str, regions: tuple[str, ...] = ("US",)) -> list[tuple[Entity, str]]:
    return [(s.entity, text[s.start : s.end]) for s in find_pii(text, ALL, regions)]


def only(entity: Entity, value: str, regions: tuple[str, ...] = ("US",)) -> None:
    text = f"please check {value} today."
    assert found(text, regions) == [(entity, value)]


def nothing(value: str, regions: tuple[str, ...] = ("US",)) -> None:
    text = f"please check {value} today."
    assert found(text, regions) == []


# --- e-mail ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", ["jane.doe@example.com", "a+tag@sub.example.co.uk", "x_y-z@mail-server.io"])
def test_email_positive(v: str) -> None:
    only(Entity.EMAIL, v)


@pytest.mark.parametrize("v", ["@mention", "user@localhost", "a@b", "foo@.com", "name@domain."])
def test_email_negative(v: str) -> None:
    nothing(v)


# --- cards -----------------------------------------------------------------------------------------

VALID_CARDS = [
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "2223003122003222",
]


@pytest.mark.parametrize("v", VALID_CARDS)
def test_card_positive(v: str) -> None:
    only(Entity.CREDIT_CARD, v)


def _break_luhn(card: str) -> str:
    last = card[-1]
    return card[:-1] + str((int(last) + 1) % 10)


@pytest.mark.parametrize(
    "v", [_break_luhn(c) for c in VALID_CARDS] + ["1234567812345670", "9999 9999 9999 9995"]
)
def test_card_negative_luhn_or_issuer(v: str) -> None:
    digits = v.replace(" ", "").replace("-", "")
    assert not is_card(digits)
    assert Entity.CREDIT_CARD not in {e for e, _ in found(f"id {v} end")}


def test_card_not_carved_out_of_longer_number() -> None:
    assert found("ref 4111111111111111123456 ok") == []


# --- IBAN ------------------------------------------------------------------------------------------

VALID_IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00",
    "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456",
    "CH93 0076 2011 6238 5295 7",
    "BE71096123456769",
    "AT611904300234573201",
    "PL61 1090 1014 0000 0712 1981 2874",
    "NO93 8601 1117 947",
]


@pytest.mark.parametrize("v", VALID_IBANS)
def test_iban_positive(v: str) -> None:
    only(Entity.IBAN, v)


@pytest.mark.parametrize(
    "v",
    [
        "DE89 3704 0044 0532 0130 01",
        "GB82 WEST 1234 5698 7654 33",
        "FR15 2004 1010 0505 0001 3M02 606",
        "NL91 ABNA 0417 1643 01",
        "ES92 2100 0418 4502 0005 1332",
        "BE71096123456768",
    ],
)
def test_iban_negative_checksum(v: str) -> None:
    assert Entity.IBAN not in {e for e, _ in found(f"pay to {v} please")}


def test_two_ibans_next_to_each_other() -> None:
    text = "from DE89 3704 0044 0532 0130 00 AND GB82 WEST 1234 5698 7654 32 ok"
    assert [v for e, v in found(text) if e is Entity.IBAN] == [VALID_IBANS[0], VALID_IBANS[1]]


# --- phones ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "v",
    [
        "(415) 555-2671",
        "+1 415-555-2671",
        "415-555-2671",
        "+44 20 7946 0958",
        "+49 30 12345678",
        "+33 1 42 68 53 00",
        "+91 98765 43210",
        "0044 20 7946 0958",
    ],
)
def test_phone_international_and_us(v: str) -> None:
    only(Entity.PHONE, v)


@pytest.mark.parametrize(
    ("v", "region"),
    [("020 7946 0958", "GB"), ("030 12345678", "DE"), ("01 42 68 53 00", "FR"), ("098765 43210", "IN")],
)
def test_phone_national_needs_region(v: str, region: str) -> None:
    nothing(v, ("US",))
    only(Entity.PHONE, v, ("US", region))


@pytest.mark.parametrize(
    "v",
    [
        "2024-01-15",
        "15.01.2024",
        "12/05/2024",
        "order 83920174659321",
        "1699999999",
        "1234567",
        "3.14159265",
        "1 000 000",
        "12:30:45",
        "v1.2.3",
    ],
)
def test_phone_negative(v: str) -> None:
    assert Entity.PHONE not in {e for e, _ in found(f"see {v} now", ("US", "GB", "FR"))}


def test_phone_drops_trailing_group() -> None:
    assert found("call 020 7946 0958 12 items", ("GB",)) == [(Entity.PHONE, "020 7946 0958")]


# --- SSN -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", ["123-45-6789", "219-09-9998", "772 12 3456"])
def test_ssn_positive(v: str) -> None:
    only(Entity.US_SSN, v)


@pytest.mark.parametrize(
    "v",
    ["000-12-3456", "666-12-3456", "900-12-3456", "987-65-4320", "123-00-4567", "123-45-0000", "078-05-1120"],
)
def test_ssn_negative(v: str) -> None:
    a, g, s = v.split("-")
    assert not is_ssn(a, g, s)
    assert Entity.US_SSN not in {e for e, _ in found(f"ssn {v}.")}


def test_ssn_mixed_separators_and_longer_runs_are_not_ssn() -> None:
    assert Entity.US_SSN not in {e for e, _ in found("ids 123-45 6789 and 1123-45-6789 and 123-45-67890")}


# --- IP addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "v",
    [
        "10.0.0.1",
        "192.168.1.254",
        "8.8.8.8",
        "2001:db8::8a2e:370:7334",
        "fe80::1ff:fe23:4567:890a",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "::ffff:192.0.2.128",
    ],
)
def test_ip_positive(v: str) -> None:
    only(Entity.IP_ADDRESS, v)


@pytest.mark.parametrize(
    "v",
    [
        "1.2.3",
        "10.0.0.256",
        "1.2.3.4.5",
        "v1.2.3.4",
        "999.1.1.1",
        "std::vector",
        "12:30:45",
        "00:1A:2B:3C:4D:5E",
        "::",
        "a::b::c",
    ],
)
def test_ip_negative(v: str) -> None:
    assert Entity.IP_ADDRESS not in {e for e, _ in found(f"see {v} now")}


def test_ip_at_sentence_end() -> None:
    assert found("the host is 10.1.2.3.") == [(Entity.IP_ADDRESS, "10.1.2.3")]


# --- secrets ---------------------------------------------------------------------------------------


def _jwt() -> str:
    def b64(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': '1234567890', 'name': 'x'})}.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"


PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7Vq3mT9rZ\nk2Jd8x0FQ==\n-----END RSA PRIVATE KEY-----"

SECRETS = [
    "sk-proj-Ab3dEf9hIjKlMn0pQrStUvWx12YzAb",
    "sk-ant-api03-Xy7_Kq2LmN9pRsTuVwZa4Bc6De8FgHiJ-kLmNoPq",
    "sk-Tx0Q9WbR8sVj3LkM2NpA7cZyUe5Fh1Dg",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6",
    "AIzaSyA-1234567890abcdefghijklmnopqrstu",
    "xoxb-123456789012-AbCdEfGhIjKl",
    PEM,
    _jwt(),
]


@pytest.mark.parametrize("v", SECRETS)
def test_secret_positive(v: str) -> None:
    only(Entity.SECRET, v)


def test_truncated_pem_is_still_a_secret() -> None:
    text = "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
    spans = find_pii(text, [Entity.SECRET])
    assert len(spans) == 1 and text[spans[0].start :].rstrip() == text[spans[0].start : spans[0].end]


@pytest.mark.parametrize(
    "v",
    [
        "sk-learn",
        "sk-learn-compatible-estimator-wrapper",
        "task-manager-Abc1234567890abcdefghij",
        "sk-short1A",
        "AKIA1234",
        "akiaiosfodnn7example",
        "ghp_short",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJub3Rqd3QiOjF9.eyJzdWIiOjF9.abcdefghijklmnop",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
        "AIzaShort",
    ],
)
def test_secret_negative(v: str) -> None:
    assert Entity.SECRET not in {e for e, _ in found(f"value {v} end")}


# --- orchestration ---------------------------------------------------------------------------------


def test_spans_do_not_overlap_and_are_sorted() -> None:
    text = "mail a@b.io, ip 10.0.0.1, card 4111111111111111, ssn 123-45-6789, +44 20 7946 0958"
    spans = find_pii(text, ALL)
    assert [s.start for s in spans] == sorted(s.start for s in spans)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
    assert {s.entity for s in spans} == {
        Entity.EMAIL,
        Entity.IP_ADDRESS,
        Entity.CREDIT_CARD,
        Entity.US_SSN,
        Entity.PHONE,
    }


def test_only_requested_entities() -> None:
    text = "mail a@b.io, card 4111111111111111"
    assert [s.entity for s in find_pii(text, [Entity.CREDIT_CARD])] == [Entity.CREDIT_CARD]
    assert find_pii(text, []) == []
    assert find_pii("", ALL) == []


def test_large_clean_text_has_no_findings() -> None:
    text = "Version 2.4.1 retries 6 times at 250 ms, 1200 rps for 15 minutes. " * 400
    assert find_pii(text, ALL) == []
