"""Teams and users inside a tenant (seeded into the store at start, then managed live like keys).

A request belongs to its tenant, and to a team and/or a user when its key (or its JWT's claims)
says so; it is charged at every level and admitted only if every level admits it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from pydantic import Field

from sidegate.config.base import NAME_PATTERN, StrictModel
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


class _KeyRef(Protocol):
    id: str
    team: str | None
    user: str | None


def check_references(
    tenant: str, teams: Mapping[str, TeamConfig], users: Mapping[str, UserConfig], keys: Iterable[_KeyRef]
) -> None:
    """Every name a tenant's users and keys refer to exists in that tenant: a key's team and user, a
    user's team; a key naming both a team and a user must name the user's own team."""
    where = f"tenants.{tenant}"
    for name in [*teams, *users]:
        if not NAME_PATTERN.match(name):
            raise ValueError(f"{where}: team/user name {name!r} must match {NAME_PATTERN.pattern}")
    for uname, user in users.items():
        if user.team is not None and user.team not in teams:
            raise ValueError(f"{where}.users.{uname}.team: unknown team {user.team!r}")
    for key in keys:
        if key.team is not None and key.team not in teams:
            raise ValueError(f"{where}.keys.{key.id}.team: unknown team {key.team!r}")
        if key.user is not None:
            if key.user not in users:
                raise ValueError(f"{where}.keys.{key.id}.user: unknown user {key.user!r}")
            their = users[key.user].team
            if key.team is not None and key.team != their:
                raise ValueError(
                    f"{where}.keys.{key.id}: user {key.user!r} is not in team {key.team!r}"
                    f" (its team: {their or 'none'}); name the user alone"
                )
