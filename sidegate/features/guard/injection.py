"""Heuristic prompt-injection score (0..1) for one piece of user-controlled text.

Known attack phrasings are regexes over a normalised text (NFKC, zero-width characters dropped,
common Cyrillic/Greek homoglyphs mapped to Latin, lower case). A rule's regex only runs in small
windows around occurrences of its anchor words (substring searches), so ordinary text costs a few
dozen ``in`` tests. Encoded payloads (base64, hex, rot13) are decoded and scanned once more, bounded
in count and size. Rule weights combine as a noisy-OR, ``1 - prod(1 - w)``; obfuscation that hid a
match and encoded payloads that carried one add their own weight.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass, field

# --- normalisation ---------------------------------------------------------------------------------

_ZERO_WIDTH = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e")
)
_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕԁԛԝвкмнтАЕОРСУХІЈЅВКМНТαεορτυχικνΑΕΟΡΤΥΧΙΚΝΒΜΗΖ",  # Cyrillic, Greek
    "aeopcyxijsdqwbkmhtAEOPCYXIJSBKMHTaeoptyxiknAEOPTYXIKNBMHZ",
)


def normalise(text: str) -> tuple[str, bool]:
    """(lower-cased comparable text, whether obfuscation characters were found)."""
    if text.isascii():
        return text.lower(), False
    cleaned = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    mapped = cleaned.translate(_HOMOGLYPHS)
    obfuscated = len(cleaned) != len(text) or mapped != cleaned
    return mapped.lower(), obfuscated


# --- rules -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    weight: float
    anchors: tuple[str, ...]
    """Substrings one of which every match contains (the regex runs only around them)."""
    before: int
    after: int
    """Window around an anchor occurrence: chars before its start / after its end."""
    pattern: re.Pattern[str]


_PRIOR = (
    r"(?:previous|prior|above|earlier|preceding|foregoing|initial|original|existing|old|system|developer"
    r"|your|all|any|every)"
)
_INSTR = (
    r"(?:instructions?|prompts?|rules|directions|directives|guidelines|guardrails|programming|constraints"
    r"|restrictions|commands|context|policies|training)"
)
_LIMITS = (
    r"(?:restrictions|rules|guidelines|limits|limitations|filters|filtering|censorship|ethics|ethical|morals"
    r"|moral|content polic(?:y|ies)|safety|boundaries|guardrails)"
)
_SECRET_ADJ = r"(?:system|initial|original|hidden|secret|internal|developer|pre-?prompt|starting)"


def _r(name: str, weight: float, anchors: tuple[str, ...], before: int, after: int, pattern: str) -> Rule:
    return Rule(name, weight, anchors, before, after, re.compile(pattern, re.S))


_VERBS = ("ignor", "disregard", "forget", "overrid", "bypass", "neglect", "abandon", "skip", "drop")
_PERSONA = ("you are now", "you're now", "from now on", "act as", "pretend", "role", "imagine")

RULES: tuple[Rule, ...] = (
    _r(
        "override_instructions",
        0.9,
        _VERBS,
        2,
        200,
        r"\b(?:ignore|disregard|forget(?: about)?|override|bypass|skip|neglect|abandon|drop)\s+"
        r"(?:(?:all|any|each|every|of|the|these|those|my|your|its|his|her|their|previous|prior|above|earlier"
        r"|preceding|foregoing|initial|original|existing|old|system|developer|safety|other|and|or|,)\s+){0,5}?"
        rf"{_PRIOR}\s+(?:(?:and|or|,)\s+)?(?:\w+\s+)?{_INSTR}\b"
        r"(?!\s+(?:i|we)\s+(?:gave|wrote|sent|mentioned|said|provided))",
    ),
    _r(
        "new_instructions",
        0.6,
        ("instruction", "system prompt", "task", "directive"),
        40,
        30,
        r"\b(?:new|updated|real|actual|true|revised|secret|hidden)\s+(?:instructions?|system\s+prompt|task"
        r"|directives?)\s*(?::|are\b|is\b)",
    ),
    _r(
        "reveal_your_prompt",
        0.85,
        ("prompt", "instruction", "rules", "guideline"),
        120,
        15,
        r"\b(?:reveal|show me|print|display|output|repeat|recite|tell me|give me|leak|dump|expose|share"
        r"|spell out|write out|copy)\b.{0,40}?\byour\s+(?:(?:full|entire|exact|complete|original|verbatim"
        rf"|whole)\s+)?{_SECRET_ADJ}\s+(?:prompt|instructions?|rules|guidelines)",
    ),
    _r(
        "ask_prompt",
        0.5,
        ("prompt", "instruction"),
        110,
        15,
        r"\b(?:what (?:is|are|were)|reveal|show|print|display|output|repeat|leak|dump)\b.{0,40}?"
        r"\b(?:your|the|its)\s+(?:(?:full|entire|exact|complete|original|verbatim)\s+)?"
        r"(?:system|initial|hidden|secret|internal|developer)\s+(?:prompt|instructions?)",
    ),
    _r(
        "repeat_above",
        0.6,
        ("above", "before this", "preceding"),
        80,
        15,
        r"\b(?:repeat|print|output|copy|recite)\b.{0,30}?\b(?:words|text|everything|all|content|instructions)"
        r"\s+(?:above|before this|preceding)",
    ),
    _r(
        "dan",
        0.9,
        ("dan", "do anything now"),
        40,
        20,
        r"\bdo anything now\b|\b(?:you are|you're|act as|pretend to be|become|enable|stay|activate|called)\s+"
        r"(?:a\s+|now\s+)?dan\b|\bdan\s+mode\b",
    ),
    _r(
        "unrestricted_persona",
        0.85,
        _PERSONA,
        2,
        220,
        r"\b(?:you are now|you're now|from now on,? you(?: are|'re| will be)?|act as|pretend (?:to be|you are"
        r"|you're)|roleplay as|role-play as|role play as|imagine you are)\b.{0,80}?\b(?:unrestricted|unfiltered"
        rf"|uncensored|jailbroken|amoral|evil|without (?:any\s+)?{_LIMITS}|no (?:longer\s+)?(?:bound|restricted"
        rf"|limited)|not bound by|free (?:of|from) (?:all\s+|any\s+)?{_LIMITS}|(?:has|have) no {_LIMITS})",
    ),
    _r(
        "roleplay_no_limits",
        0.8,
        ("pretend", "imagine", "role", "game", "hypothetical", "story", "character"),
        20,
        260,
        r"\b(?:pretend|imagine|roleplay|role-play|role play|let's play a game|hypothetical(?:ly)?|in a story"
        r"|stay in character)\b.{0,120}?\b(?:no|without|free from|not bound by|don't have|do not have"
        rf"|aren't bound by|ignore|ignores|ignoring)\s+(?:any\s+|all\s+|the\s+|your\s+)?{_LIMITS}",
    ),
    _r(
        "developer_mode",
        0.8,
        ("mode",),
        40,
        30,
        r"\b(?:developer|dev|god|jailbreak|unrestricted|admin|debug|sudo)\s+mode\s+(?:enabled|activated|on"
        r"|engaged)\b|\b(?:enable|activate|enter|switch to)\s+(?:developer|dev|god|jailbreak|unrestricted"
        r"|sudo)\s+mode\b",
    ),
    _r("jailbreak_word", 0.5, ("jailbr",), 2, 12, r"\bjailbr(?:eak|oken|eaking)\b"),
    _r(
        "limits_lifted",
        0.8,
        ("lifted", "removed", "disabled", "turned off", "no longer apply", "suspended", "deactivated"),
        90,
        20,
        rf"\b(?:your|all|the|these)\s+(?:previous\s+)?{_LIMITS}\s+(?:are|have been|were|is|has been)\s+"
        r"(?:now\s+)?(?:lifted|removed|disabled|turned off|suspended|deactivated|no longer apply)",
    ),
    _r(
        "bypass_safety",
        0.85,
        ("bypass", "disable", "overrid", "circumvent", "turn off", "ignor", "switch off"),
        2,
        90,
        r"\b(?:bypass|disable|override|circumvent|turn off|ignore|switch off)\s+(?:all\s+(?:of\s+)?)?your\s+"
        rf"(?:own\s+)?(?:safety|content|ethical|moral)?\s*{_LIMITS}",
    ),
    _r(
        "fake_role_tags",
        0.6,
        ("<|", "inst]", "[system", "system:", "system>", "###", "</s>"),
        12,
        30,
        r"<\|(?:im_start|im_end|system|endoftext|start_header_id)\|>|\[/?inst\]|\[system(?: message)?\]"
        r"|<\s*/?\s*system\s*>|(?:^|\n)\s*(?:#{1,4}\s*)?(?:system|new system message)\s*:"
        r"|#{2,4}\s*(?:system|instruction)s?\b|</s>",
    ),
    _r(
        "hide_from_user",
        0.6,
        ("user",),
        45,
        5,
        r"\b(?:do not|don't|never|without)\s+(?:tell(?:ing)?|inform(?:ing)?|alert(?:ing)?|notify(?:ing)?"
        r"|mention(?:ing)?|reveal(?:ing)? (?:this )?to)\s+(?:the\s+)?user\b",
    ),
    _r(
        "exfiltrate",
        0.6,
        ("http", "@"),
        200,
        5,
        r"\b(?:send|post|upload|forward|email|exfiltrate|transmit)\b.{0,60}?\b(?:conversation|chat history"
        r"|system prompt|api keys?|credentials|passwords?|secrets?|tokens?)\b.{0,60}?\b(?:to|at)\s+"
        r"(?:https?://|\S+@)",
    ),
)

_ANCHORS = tuple(sorted({a for r in RULES for a in r.anchors}))
_MAX_OCCURRENCES = 64
"""Per anchor and text: windows examined (bounded work on adversarial repetition)."""
_OBFUSCATION_WEIGHT = 0.3
"""Extra weight when a rule only matched after removing zero-width characters or homoglyphs."""
_ENCODED_WEIGHT = 0.5
"""Extra weight when a rule matched inside a base64/hex/rot13-encoded payload."""
_WEIGHTS = {r.name: r.weight for r in RULES}

# rot13 of words attack texts contain: "ignore", "instruction", "system", "previous".
_ROT13_KEYS = tuple(codecs.encode(k, "rot13") for k in ("ignore", "instruction", "system", "previous"))
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{24,}={0,2}")
_HEX_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2}){12,}")
_MAX_DECODES = 8
_MAX_DECODED = 8192
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(slots=True)
class Verdict:
    score: float = 0.0
    rules: set[str] = field(default_factory=set)


def _match(low: str) -> set[str]:
    """Names of the rules matching the normalised text `low`."""
    present = {a for a in _ANCHORS if a in low}
    if not present:
        return set()
    hits: set[str] = set()
    n = len(low)
    for rule in RULES:
        for anchor in rule.anchors:
            if anchor not in present or rule.name in hits:
                continue
            i = low.find(anchor)
            seen = 0
            while i >= 0 and seen < _MAX_OCCURRENCES:
                seen += 1
                end = min(n, i + len(anchor) + rule.after)
                # finish the word at the window's end so `\b` does not match inside it
                while end < n and low[end].isalnum() and end - i < len(anchor) + rule.after + 20:
                    end += 1
                if rule.pattern.search(low, max(0, i - rule.before), end) is not None:
                    hits.add(rule.name)
                    break
                i = low.find(anchor, i + 1)
    return hits


def _printable_text(raw: bytes) -> str | None:
    if len(raw) < 12:
        return None
    try:
        text = raw[:_MAX_DECODED].decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(c.isalpha() or c == " " for c in text)
    return text if letters >= 0.8 * len(text) and " " in text else None


def _decode(token: str) -> str | None:
    if len(token) % 2 == 0 and all(c in _HEX for c in token):
        try:
            return _printable_text(bytes.fromhex(token[: 2 * _MAX_DECODED]))
        except ValueError:
            return None
    tok = token[: _MAX_DECODED * 4 // 3 + 4].rstrip("=")
    try:
        raw = base64.b64decode(tok.replace("-", "+").replace("_", "/") + "=" * (-len(tok) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return _printable_text(raw)


def _decoded_payloads(text: str, low: str) -> list[str]:
    """Base64 / hex / ``\\x``-escaped / rot13 payloads of `text` that decode to readable text."""
    out: list[str] = []
    tried = 0
    for word in text.split():
        if len(word) < 24:
            continue
        for m in _B64_TOKEN.finditer(word):
            tried += 1
            dec = _decode(m.group())
            if dec is not None:
                out.append(dec)
        if len(out) >= _MAX_DECODES or tried >= 4 * _MAX_DECODES:
            break
    if "\\x" in text:
        for m in _HEX_ESCAPES.finditer(text):
            if len(out) >= _MAX_DECODES:
                break
            dec = _decode(m.group().replace("\\x", ""))
            if dec is not None:
                out.append(dec)
    if any(k in low for k in _ROT13_KEYS):
        out.append(codecs.encode(low, "rot13"))
    return out


def _combine(weights: list[float]) -> float:
    miss = 1.0
    for w in weights:
        miss *= 1.0 - w
    return 1.0 - miss


def score_text(text: str, max_chars: int = 200_000) -> Verdict:
    """The heuristic injection score of one piece of text, and the names of the rules that fired."""
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + "\n" + text[-half:]
    low, obfuscated = normalise(text)
    hits = _match(low)
    extra: list[float] = []
    if obfuscated and hits and hits - _match(text.lower()):
        extra.append(_OBFUSCATION_WEIGHT)
        hits.add("obfuscation")
    encoded_hits: set[str] = set()
    for payload in _decoded_payloads(text, low):
        encoded_hits |= _match(normalise(payload)[0])
    if encoded_hits:
        extra.append(_ENCODED_WEIGHT)
        hits |= encoded_hits
        hits.add("encoded")
    if not hits:
        return Verdict()
    weights = [_WEIGHTS[h] for h in hits if h in _WEIGHTS] + extra
    return Verdict(round(_combine(weights), 4), hits)
