"""The guard stage core: scan a parsed request, redact / block / count PII, score injections.

Pure: no I/O, no logging. Values found are only ever kept in ``GuardResult.restore_map`` (for the
response path, and only when the policy restores); counts and rule names are safe to export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.config.guard import Entity, GuardPolicy, InjectionAction, InjectionPolicy, PiiAction
from sidegate.errors import Api, GatewayError
from sidegate.features.guard.classifiers import get_classifier
from sidegate.features.guard.fragments import Slot, slots
from sidegate.features.guard.injection import score_text
from sidegate.features.guard.pii import Span, find_pii
from sidegate.features.guard.restore import Placeholders, reserved_in

_ENTITY_WORDS = {
    Entity.EMAIL: "an e-mail address",
    Entity.PHONE: "a phone number",
    Entity.CREDIT_CARD: "a payment card number",
    Entity.IBAN: "a bank account number (IBAN)",
    Entity.US_SSN: "a US social security number",
    Entity.IP_ADDRESS: "an IP address",
    Entity.SECRET: "a secret credential (API key, token or private key)",
}


@dataclass(slots=True)
class GuardResult:
    """What the guard did to one request. Holds no detected value except in ``restore_map``."""

    changed: bool = False
    """The body was modified in place (re-serialise it)."""
    findings: dict[tuple[Entity, PiiAction], int] = field(default_factory=dict)
    """Count per (entity type, action taken) for metrics."""
    injection_score: float = 0.0
    injection_rules: tuple[str, ...] = ()
    """Names of the heuristic rules that fired (no text), for the access log."""
    flagged: bool = False
    """Injection score reached the threshold and the action is ``flag``."""
    classifier_error: str | None = None
    """Set when the configured classifier is missing or raised; the heuristic score was used."""
    restore_map: dict[str, str] = field(default_factory=dict)
    """Placeholder -> original value; empty unless the policy restores. Never log it."""

    def counts(self) -> dict[str, int]:
        """``{"EMAIL:redact": 2, ...}`` (JSON-friendly, e.g. for Envoy metadata)."""
        return {f"{e.value}:{a.value}": n for (e, a), n in self.findings.items()}


class GuardBlocked(GatewayError):
    """A guard refusal (400). ``result`` holds what was found so far, for metrics."""

    result: GuardResult

    def __init__(self, message: str, code: str, result: GuardResult) -> None:
        super().__init__(400, message, code)
        self.result = result


# --- injection -------------------------------------------------------------------------------------


def _classify(policy: InjectionPolicy, texts: list[str], heuristic: float, result: GuardResult) -> float:
    if policy.classifier is None:
        return heuristic
    fn = get_classifier(policy.classifier)
    if fn is None:
        result.classifier_error = f"classifier {policy.classifier!r} is not registered"
        return heuristic
    try:
        model = max((min(1.0, max(0.0, float(fn(t)))) for t in texts), default=0.0)
    except Exception as exc:  # a broken plug-in must not take the gateway down
        result.classifier_error = f"classifier {policy.classifier!r} failed: {type(exc).__name__}"
        return heuristic
    if policy.combine == "override":
        return model
    if policy.combine == "mean":
        return (model + heuristic) / 2
    return max(model, heuristic)


def _injection(policy: InjectionPolicy, frags: list[Slot], result: GuardResult) -> None:
    texts = [s.text for s in frags if s.role in policy.roles and s.text]
    if not texts:
        return
    best = 0.0
    rules: set[str] = set()
    for t in texts:
        v = score_text(t, policy.max_chars)
        if v.score > best:
            best = v.score
        rules |= v.rules
    score = _classify(policy, texts, best, result)
    result.injection_score = round(score, 4)
    result.injection_rules = tuple(sorted(rules))
    if score >= policy.threshold and score > 0.0:
        if policy.action is InjectionAction.BLOCK:
            raise GuardBlocked(
                "Request blocked by the gateway guard: the input looks like a prompt-injection attempt.",
                "prompt_injection",
                result,
            )
        result.flagged = True


# --- PII -------------------------------------------------------------------------------------------


def _apply(text: str, spans: list[Span], redact: set[Entity], ph: Placeholders) -> str:
    out: list[str] = []
    pos = 0
    for s in spans:
        if s.entity in redact:
            out.append(text[pos : s.start])
            out.append(ph.get(s.entity, text[s.start : s.end]))
            pos = s.end
    out.append(text[pos:])
    return "".join(out)


def _json_strings(obj: Any, depth: int = 0) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    if depth > 32:
        return out
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if isinstance(v, str):
            out.append((obj, k))
        elif isinstance(v, dict | list):
            out.extend(_json_strings(v, depth + 1))
    return out


def _pii(policy: GuardPolicy, frags: list[Slot], result: GuardResult) -> None:
    active = policy.active()
    if not active:
        return
    scanned = [s for s in frags if s.role in policy.roles and s.text]
    if not scanned:
        return
    entities = tuple(active)
    redact = {e for e, a in active.items() if a is PiiAction.REDACT}
    ph = Placeholders(reserved_in([s.text for s in scanned]) if redact else None)
    regions = policy.phone_regions
    for slot in scanned:
        text = slot.text
        spans = find_pii(text, entities, regions)
        if not spans:
            continue
        for s in spans:
            key = (s.entity, active[s.entity])
            result.findings[key] = result.findings.get(key, 0) + 1
        for s in spans:
            if active[s.entity] is PiiAction.BLOCK:
                raise GuardBlocked(
                    f"Request blocked by the gateway guard: it contains {_ENTITY_WORDS[s.entity]} ({s.entity.value}).",
                    "pii_detected",
                    result,
                )
        if not any(s.entity in redact for s in spans):
            continue
        if slot.json_text:
            new = _redact_json_text(text, entities, regions, redact, ph)
        else:
            new = _apply(text, spans, redact, ph)
        if new != text:
            slot.set(new)
            result.changed = True
    if policy.restore:
        result.restore_map = ph.restore_map


def _redact_json_text(
    text: str, entities: tuple[Entity, ...], regions: tuple[str, ...], redact: set[Entity], ph: Placeholders
) -> str:
    """Tool-call arguments: redact inside the decoded JSON strings so the result stays valid JSON and
    the restore map holds raw (unescaped) values."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _apply(text, find_pii(text, entities, regions), redact, ph)
    if isinstance(obj, str):
        return orjson.dumps(_apply(obj, find_pii(obj, entities, regions), redact, ph)).decode()
    changed = False
    for container, key in _json_strings(obj):
        value = container[key]
        new = _apply(value, find_pii(value, entities, regions), redact, ph)
        if new != value:
            container[key] = new
            changed = True
    return orjson.dumps(obj).decode() if changed else text


# --- entry point -----------------------------------------------------------------------------------


def guard_request(api: Api, body: dict[str, Any], policy: GuardPolicy) -> GuardResult:
    """Run the guard on a parsed request body of the client's `api`, before translation.

    Injection scoring runs first (on the original text), then PII. Redaction mutates `body` in place
    (``result.changed``). Raises :class:`GuardBlocked` (a 400 :class:`GatewayError` with code
    ``prompt_injection`` or ``pii_detected``; the message names the entity type, never the value).
    """
    result = GuardResult()
    frags = slots(api, body)
    if not frags:
        return result
    if policy.injection.enabled:
        _injection(policy.injection, frags, result)
    _pii(policy, frags, result)
    return result


def guard_embeddings(body: dict[str, Any], policy: GuardPolicy) -> GuardResult:
    """The guard on an embeddings request, over every string of `input`: the policy's `block`
    actions, and its redaction of secrets (a credential means nothing to embed, and must reach
    neither a provider nor the vector store the embeddings go to). Other values are not redacted:
    a placeholder embeds as something else (the vector would describe `<EMAIL_1>`, not the text),
    and there is no answer to restore into. No injection score: an embedding model follows no
    instructions. Mutates `body` in place (``result.changed``), never restores."""
    result = GuardResult()
    kept = {e: a for e, a in policy.active().items()
            if a is PiiAction.BLOCK or (e is Entity.SECRET and a is PiiAction.REDACT)}  # fmt: skip
    if not kept:
        return result
    inp = body.get("input")
    if isinstance(inp, str):
        frags = [Slot(body, "input", "user")]
    else:  # a list of strings (token arrays carry no text)
        frags = [Slot(inp, i, "user") for i, v in enumerate(inp) if isinstance(v, str)] if isinstance(inp, list) else []
    only = policy.model_copy(update={"entities": kept, "default_action": PiiAction.ALLOW,
                                     "roles": frozenset({"user"}), "restore": False})  # fmt: skip
    _pii(only, frags, result)
    return result
