"""Per-route guard policy (pydantic, config-ready): what to do with each PII type and with injections."""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Entity(StrEnum):
    """The PII / secret types the guard detects (also the placeholder stems: ``<EMAIL_1>``)."""

    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CREDIT_CARD = "CREDIT_CARD"
    IBAN = "IBAN"
    US_SSN = "US_SSN"
    IP_ADDRESS = "IP_ADDRESS"
    SECRET = "SECRET"


class PiiAction(StrEnum):
    REDACT = "redact"
    """Replace the value by a stable placeholder (``<EMAIL_1>``) before the provider sees it."""
    BLOCK = "block"
    """Refuse the request (400, code ``pii_detected``)."""
    LOG = "log"
    """Count it (metrics), send it unchanged."""
    ALLOW = "allow"
    """Do not even look for it."""


class InjectionAction(StrEnum):
    BLOCK = "block"
    """Refuse the request (400, code ``prompt_injection``)."""
    FLAG = "flag"
    """Let it through; ``GuardResult.flagged`` is set (for a header, a metric, the access log)."""


Role = Literal["system", "user", "assistant", "tool"]
"""Normalised message roles: OpenAI ``developer`` counts as ``system``; OpenAI ``tool``/``function``
messages and Anthropic ``tool_result`` blocks count as ``tool``."""


def _default_entities() -> dict[Entity, PiiAction]:
    return {Entity.IP_ADDRESS: PiiAction.LOG}


class InjectionPolicy(BaseModel):
    """Prompt-injection detection on user-controlled text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    threshold: float = Field(0.8, ge=0.0, le=1.0)
    """Scores >= threshold trigger ``action``. Heuristic scores: one strong attack phrase ~0.9, a weak
    hint alone 0.3-0.7, several hints combine (noisy-OR)."""
    action: InjectionAction = InjectionAction.BLOCK
    roles: frozenset[Role] = frozenset({"user", "tool"})
    """Roles whose text is scanned. System prompts are the operator's own text, and earlier assistant
    turns are model output, so neither is scanned by default."""
    classifier: str | None = None
    """Name of a classifier registered with :func:`sidegate.features.guard.register_classifier`."""
    combine: Literal["max", "override", "mean"] = "max"
    """How a classifier score meets the heuristic score: the larger, the classifier's alone, or the mean."""
    max_chars: int = Field(200_000, ge=1_000)
    """Per text fragment, only the first and last max_chars/2 characters are scanned (bound on work)."""


class GuardPolicy(BaseModel):
    """What the guard does on a route. ``GuardPolicy()`` is a sane default:

    - every PII type is redacted (placeholders restored in the response), except IP addresses which are
      only counted (they are common and mostly harmless in technical prompts);
    - user, assistant and tool text is scanned for PII (assistant turns too, since with ``restore`` the
      client sees the original values and sends them back in the history); system prompts are not;
    - prompt injections scoring >= 0.8 in user and tool text are blocked.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_action: PiiAction = PiiAction.REDACT
    entities: dict[Entity, PiiAction] = Field(default_factory=_default_entities)
    """Per-type override of ``default_action``."""
    restore: bool = True
    """Put the original values back into the response (also in streams)."""
    roles: frozenset[Role] = frozenset({"user", "assistant", "tool"})
    """Roles whose text is scanned for PII."""
    phone_regions: tuple[str, ...] = ("US",)
    """Regions (ISO 3166 alpha-2) used to read phone numbers written without a ``+``/``00`` country
    prefix. International numbers are recognised for every country regardless. Adding regions with
    permissive numbering plans (e.g. DE) makes more bare digit runs count as phones."""
    injection: InjectionPolicy = Field(default_factory=InjectionPolicy)

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import phonenumbers

        out = tuple(r.upper() for r in v)
        bad = [r for r in out if r not in phonenumbers.SUPPORTED_REGIONS]
        if bad:
            raise ValueError(f"unknown phone regions: {bad}")
        return out

    def action(self, entity: Entity) -> PiiAction:
        return self.entities.get(entity, self.default_action)

    def active(self) -> dict[Entity, PiiAction]:
        """Entity -> action for every entity the guard must look for (action is not ``allow``).
        Worked out once per distinct setting (the guard asks on every request). Read only."""
        return _active(self.default_action, tuple(self.entities.items()))


@functools.lru_cache(maxsize=256)
def _active(default: PiiAction, overrides: tuple[tuple[Entity, PiiAction], ...]) -> dict[Entity, PiiAction]:
    given = dict(overrides)
    acts = {e: given.get(e, default) for e in Entity}
    return {e: a for e, a in acts.items() if a is not PiiAction.ALLOW}
