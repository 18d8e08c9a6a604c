"""PII detection: a cheap regex prefilter finds candidates, well-kept validators confirm them.

Validators: ``python-stdnum`` (Luhn, IBAN country formats and mod-97), ``phonenumbers`` (numbering
plans of every country), the stdlib ``ipaddress``. Detection is pure and returns spans only; the
caller decides what to do with them and never logs the values.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn

from sidegate.config.guard import Entity
from sidegate.features.guard.secret_keys import find_secrets

MAX_FINDINGS = 10_000
"""Per text fragment; a bound on work for pathological inputs."""


class Span(NamedTuple):
    start: int
    end: int
    entity: Entity


# --- credit cards ----------------------------------------------------------------------------------

_CARD = re.compile(r"(?<!\d)(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![ -]?\d)")

# (prefix range low, high, allowed lengths) by issuer (IIN). Numbers outside every range are not cards.
_IIN: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)),  # Mastercard
    (2221, 2720, (16,)),  # Mastercard 2-series
    (34, 34, (15,)),  # Amex
    (37, 37, (15,)),
    (6011, 6011, (16, 17, 18, 19)),  # Discover
    (644, 649, (16, 17, 18, 19)),
    (65, 65, (16, 17, 18, 19)),
    (3528, 3589, (16, 17, 18, 19)),  # JCB
    (300, 305, (14, 15, 16, 17, 18, 19)),  # Diners
    (36, 36, (14, 15, 16, 17, 18, 19)),
    (38, 39, (14, 15, 16, 17, 18, 19)),
    (62, 62, (16, 17, 18, 19)),  # UnionPay
    (50, 50, (12, 13, 14, 15, 16, 17, 18, 19)),  # Maestro
    (56, 58, (12, 13, 14, 15, 16, 17, 18, 19)),
    (63, 63, (12, 13, 14, 15, 16, 17, 18, 19)),
    (67, 67, (12, 13, 14, 15, 16, 17, 18, 19)),
)


def is_card(digits: str) -> bool:
    """Known issuer prefix and length, and a valid Luhn check digit."""
    n = len(digits)
    for low, high, lengths in _IIN:
        width = len(str(low))
        if n in lengths and low <= int(digits[:width]) <= high:
            return _luhn.is_valid(digits)
    return False


def _cards(text: str, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text, lo, hi):
        digits = m.group().replace(" ", "").replace("-", "")
        if is_card(digits):
            yield m.start(), m.end()


# --- US SSN ----------------------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-]|[ ]\d)")
_SSN_INVALID = frozenset({"078051120", "219099999", "457555462"})  # publicised sample numbers


def is_ssn(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    a = int(area)
    return (
        a != 0
        and a != 666
        and a < 900
        and group != "00"
        and serial != "0000"
        and area + group + serial not in _SSN_INVALID
    )


def _ssns(text: str, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    for m in _SSN.finditer(text, lo, hi):
        if is_ssn(m.group(1), m.group(3), m.group(4)):
            yield m.start(), m.end()


# --- IBAN ------------------------------------------------------------------------------------------

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}")


def _shrinking(
    pattern: re.Pattern[str],
    text: str,
    lo: int,
    hi: int,
    valid: Callable[[str], bool],
    tries: int,
    taken: Callable[[int], bool] | None = None,
) -> Iterator[tuple[int, int]]:
    """Matches of `pattern` confirmed by `valid`, dropping up to `tries` trailing space-separated groups
    (a greedy match may have eaten a neighbouring word or number). After a miss the search resumes at
    the next group, so a valid value right after a rejected one is still found."""
    pos = lo
    while pos < hi:
        m = pattern.search(text, pos, hi)
        if m is None:
            return
        cand = m.group()
        if taken is not None and taken(m.start()):  # starts inside a value already found: skip it
            cand = ""
        for _ in range(tries + 1 if cand else 0):
            if valid(cand):
                yield m.start(), m.start() + len(cand)
                pos = m.start() + len(cand)
                break
            cut = cand.rstrip().rfind(" ")
            if cut <= 0:
                cand = ""
                break
            cand = cand[:cut].rstrip(" -.(")
        else:
            cand = ""
        if not cand:
            nxt = text.find(" ", m.start() + 1, m.end())
            pos = nxt + 1 if nxt > 0 else m.end()


def _ibans(text: str, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    return _shrinking(_IBAN, text, lo, hi, _iban.is_valid, 6)


# --- e-mail ----------------------------------------------------------------------------------------

_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.!#$%&'*+/=?^_`{|}~-")
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)


def _emails(text: str) -> Iterator[tuple[int, int]]:
    at = text.find("@")
    seen = 0
    while at >= 0 and seen < MAX_FINDINGS:
        seen += 1
        start = at
        low = max(0, at - 64)
        while start > low and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        while start < at and text[start] in ".'`{|}":  # not a valid local-part start
            start += 1
        if start < at and text[at - 1] != ".":
            m = _DOMAIN.match(text, at + 1)
            if m is not None:
                yield start, m.end()
        at = text.find("@", at + 1)


# --- IP addresses ----------------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.:])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d|\w)")
_IPV6_HINT = re.compile(r":(?=[0-9A-Fa-f]{0,4}:)")  # starts with a literal: a fast scan
_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]{0,41}(?![\w:])")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")


def _ipv4s(text: str, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    for m in _IPV4.finditer(text, lo, hi):
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        yield m.start(), m.end()


def _ipv6s(text: str) -> Iterator[tuple[int, int]]:
    pos = 0
    for _ in range(MAX_FINDINGS):
        h = _IPV6_HINT.search(text, pos)
        if h is None:
            return
        start = h.start()
        low = max(0, start - 40)
        while start > low and text[start - 1] in _IPV6_CHARS:
            start -= 1
        while start < h.start() and text[start] == ".":
            start += 1
        pos = h.end()
        if start and (text[start - 1].isalnum() or text[start - 1] in "_:"):
            continue
        m = _IPV6.match(text, start)
        if m is None:
            continue
        pos = max(pos, m.end())
        cand = m.group().rstrip(".")
        if cand.endswith(":") and not cand.endswith("::"):
            cand = cand[:-1]
        if sum(1 for g in cand.split(":") if g) < 2:  # "::", "::1", "fe80::": too ambiguous in prose
            continue
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        yield start, start + len(cand)


# --- phone numbers ---------------------------------------------------------------------------------

_PHONE = re.compile(r"(?<![\w+.\-/])(?:\+|\(\+?)?\d[\d ().\-]{5,22}\d(?![\w/]|[.\-]\d)")
# Dates, decimals and times are never phone numbers.
_NOT_PHONE = re.compile(r"\d{4}[-. ]\d{1,2}[-. ]\d{1,2}|\d{1,2}[-. ]\d{1,2}[-. ]\d{2,4}|\d+\.\d+")


def _is_phone(cand: str, regions: tuple[str, ...]) -> bool:
    digits = sum(c.isdigit() for c in cand)
    if not 7 <= digits <= 15 or _NOT_PHONE.fullmatch(cand):
        return False
    intl = cand.lstrip("(").startswith("+")
    if not intl and cand.startswith("00"):
        cand, intl = "+" + cand[2:], True
    try:
        if intl:
            return phonenumbers.is_valid_number(phonenumbers.parse(cand, None))
        for region in regions:
            if phonenumbers.is_valid_number(phonenumbers.parse(cand, region)):
                return True
    except phonenumbers.NumberParseException:
        return False
    return False


def _phones(
    text: str, lo: int, hi: int, regions: tuple[str, ...], taken: Callable[[int], bool]
) -> Iterator[tuple[int, int]]:
    return _shrinking(_PHONE, text, lo, hi, lambda cand: _is_phone(cand, regions), 3, taken)


# --- orchestration ---------------------------------------------------------------------------------

# Most specific first: a span found earlier wins over overlapping later ones.
_ORDER = (
    Entity.SECRET,
    Entity.EMAIL,
    Entity.IBAN,
    Entity.CREDIT_CARD,
    Entity.US_SSN,
    Entity.IP_ADDRESS,
    Entity.PHONE,
)

# Every numeric entity holds a run of >= 7 digits and separators: find those runs first (a regex that
# starts with a character class scans fast), then run the precise patterns only around them.
_CLUSTER = re.compile(r"\d[\d \-.()]{5,}\d")
_MARGIN = 40
"""Context around a digit run: an IBAN's letters before/after it, a phone's ``+``/``(``."""


_NO_DIGIT_RUNS = frozenset({Entity.SECRET, Entity.EMAIL})
"""The entities found without the digit runs (secrets and e-mails alone: the runs' scan is skipped)."""


def _regions(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    n = len(text)
    for m in _CLUSTER.finditer(text):
        lo, hi = max(0, m.start() - _MARGIN), min(n, m.end() + _MARGIN)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
        if len(out) >= MAX_FINDINGS:
            break
    return out


def _candidates(
    entity: Entity,
    text: str,
    regions: list[tuple[int, int]],
    phone_regions: tuple[str, ...],
    taken: Callable[[int], bool],
) -> Iterator[tuple[int, int]]:
    if entity is Entity.SECRET:
        yield from find_secrets(text)
    elif entity is Entity.EMAIL:
        if "@" in text:
            yield from _emails(text)
    elif entity is Entity.IP_ADDRESS:
        for lo, hi in regions:
            yield from _ipv4s(text, lo, hi)
        if ":" in text:
            yield from _ipv6s(text)
    else:
        for lo, hi in regions:
            if entity is Entity.IBAN:
                yield from _ibans(text, lo, hi)
            elif entity is Entity.CREDIT_CARD:
                yield from _cards(text, lo, hi)
            elif entity is Entity.US_SSN:
                yield from _ssns(text, lo, hi)
            else:
                yield from _phones(text, lo, hi, phone_regions, taken)


def find_pii(text: str, entities: Iterable[Entity], phone_regions: tuple[str, ...] = ("US",)) -> list[Span]:
    """Non-overlapping PII spans in `text`, sorted by start, for the requested entity types."""
    wanted = set(entities)
    if not text or not wanted:
        return []
    regions = _regions(text) if wanted - _NO_DIGIT_RUNS else []
    starts: list[int] = []
    spans: list[Span] = []

    def taken(pos: int) -> bool:
        i = bisect.bisect_right(starts, pos)
        return bool(i) and spans[i - 1].end > pos

    for entity in _ORDER:
        if entity not in wanted:
            continue
        for start, end in _candidates(entity, text, regions, phone_regions, taken):
            i = bisect.bisect_right(starts, start)
            if i and spans[i - 1].end > start:
                continue
            if i < len(spans) and spans[i].start < end:
                continue
            starts.insert(i, start)
            spans.insert(i, Span(start, end, entity))
            if len(spans) >= MAX_FINDINGS:
                return spans
    return spans
