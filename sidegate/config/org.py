"""Teams and users inside a tenant (seeded into the store at start, then managed live like keys).

A request belongs to its tenant, and to a team and/or a user when its key (or its JWT's claims)
says so; it is charged at every level and admitted only if every level admits it.
"""

from __future__ import annotations

from pydantic import Field

from sidegate.config.base import StrictModel
from sidegate.config.quota import Limits


class TeamConfig(StrictModel):
    limits: Limits = Field(default_factory=Limits)
    """rpm/tpm/daily_usd/monthly_usd of the whole team (every user and key in it)."""
    models: list[str] = Field(default_factory=lambda: ["*"])
    """Client model names the team may use; `*` = every model the tenant may use."""


class UserConfig(StrictModel):
    team: str | None = None
    """The team the user belongs to (its limits and allow-list apply too); None = no team."""
    limits: Limits = Field(default_factory=Limits)
    models: list[str] = Field(default_factory=lambda: ["*"])
