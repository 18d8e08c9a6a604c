"""Teams and users inside tenants in the Redis-protocol store (the runtime source of truth).

Layout (beside :mod:`sidegate.keystore`'s, all under the ``sg:`` prefix):
- ``sg:teams:<tenant>``  set of the tenant's team names.
- ``sg:team:<tenant>/<team>``  hash: the team's limits (``rpm``, ``tpm``, ``daily_usd``, ``monthly_usd``,
  as in ``sg:tenant:<name>``; a missing field = no limit) and ``models`` (JSON list, ``["*"]`` = every
  model the tenant's keys may use).
- ``sg:users:<tenant>``  set of the tenant's user names.
- ``sg:user:<tenant>/<user>``  hash: the user's limits and ``models`` as a team's, and ``team`` (absent =
  the user belongs to no team).

Every change bumps ``sg:config:version`` and publishes on ``sg:config:changed`` (as tenant limits do),
so authz's key cache (allow-lists) and the quota feature (limits) reload within one poll.

A key (``sg:key:<id>``) belongs to a team (field ``team``) or to a user (field ``user``); a user key
belongs to the user's team too, read live from the user's record (so moving a user moves its keys).
:meth:`Org.resolve` turns a stored key record into the identity requests carry: the effective team,
and the effective allow-list key ∩ team ∩ user. A key naming a team or user the store does not know
(a half-applied manual edit) is refused every model: fail closed, never unlimited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from sidegate import keystore
from sidegate.keystore import KeyRecord, TenantLimits
from sidegate.store.layout import CONFIG_PREFIX

WILDCARD = "*"


def teams_key(tenant: str) -> str:
    return f"{CONFIG_PREFIX}teams:{tenant}"


def team_key(tenant: str, team: str) -> str:
    return f"{CONFIG_PREFIX}team:{tenant}/{team}"


def users_key(tenant: str) -> str:
    return f"{CONFIG_PREFIX}users:{tenant}"


def user_key(tenant: str, user: str) -> str:
    return f"{CONFIG_PREFIX}user:{tenant}/{user}"


def intersect(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    """Models both lists allow, ``*`` meaning every model: ``*`` ∩ x = x; otherwise a's names in b."""
    if WILDCARD in a:
        return tuple(b)
    if WILDCARD in b:
        return tuple(a)
    return tuple(m for m in a if m in b)


@dataclass(slots=True, frozen=True)
class TeamRecord:
    tenant: str
    name: str
    limits: TenantLimits = field(default_factory=TenantLimits)
    models: tuple[str, ...] = (WILDCARD,)

    def to_redis(self) -> dict[str, str]:
        return {**self.limits.to_redis(), "models": orjson.dumps(list(self.models)).decode()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "team": self.name,
            "limits": self.limits.to_dict(),
            "models": list(self.models),
        }

    @classmethod
    def from_redis(cls, tenant: str, name: str, raw: dict[bytes, bytes]) -> TeamRecord:
        return cls(tenant, name, TenantLimits.from_redis(raw), _models(raw))


@dataclass(slots=True, frozen=True)
class UserRecord:
    tenant: str
    name: str
    team: str = ""
    """"" = the user belongs to no team."""
    limits: TenantLimits = field(default_factory=TenantLimits)
    models: tuple[str, ...] = (WILDCARD,)

    def to_redis(self) -> dict[str, str]:
        out = {**self.limits.to_redis(), "models": orjson.dumps(list(self.models)).decode()}
        if self.team:
            out["team"] = self.team
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "user": self.name, "team": self.team or None,
                "limits": self.limits.to_dict(), "models": list(self.models)}  # fmt: skip

    @classmethod
    def from_redis(cls, tenant: str, name: str, raw: dict[bytes, bytes]) -> UserRecord:
        return cls(tenant, name, raw.get(b"team", b"").decode(), TenantLimits.from_redis(raw), _models(raw))


def _models(raw: dict[bytes, bytes]) -> tuple[str, ...]:
    return tuple(orjson.loads(raw.get(b"models", b'["*"]')))


@dataclass(slots=True, frozen=True)
class Org:
    """Every tenant's teams and users, keyed by (tenant, name): one immutable snapshot per reload."""

    teams: dict[tuple[str, str], TeamRecord] = field(default_factory=dict)
    users: dict[tuple[str, str], UserRecord] = field(default_factory=dict)

    def team_of(self, tenant: str, team: str, user: str) -> str | None:
        """The effective team of a caller naming ``team`` and/or ``user``: the user's team when a user
        is named, else ``team``; None when a named team or user is unknown or they disagree."""
        if user:
            u = self.users.get((tenant, user))
            if u is None or (team and team != u.team):
                return None
            team = u.team
        if team and (tenant, team) not in self.teams:
            return None
        return team

    def allowed(
        self, tenant: str, team: str, user: str, models: Sequence[str] = (WILDCARD,)
    ) -> tuple[str, ...]:
        """``models`` ∩ the team's ∩ the user's allow-list (``team`` already the effective one)."""
        out = tuple(models)
        if team:
            out = intersect(out, self.teams[(tenant, team)].models)
        if user:
            out = intersect(out, self.users[(tenant, user)].models)
        return out

    def caller(self, tenant: str, team: str, user: str, models: Sequence[str]) -> tuple[str, tuple[str, ...]]:
        """(effective team, allow-list) of a caller whose identity provider names its team and user
        (a JWT's claims). Unlike a key's, these names need not be registered: an unknown team or user
        is charged and recorded at its level with no limits of its own. A registered user's team is
        the directory's (the store, not the token, says which team's limits apply)."""
        u = self.users.get((tenant, user)) if user else None
        if u is not None and u.team:
            team = u.team
        out = tuple(models)
        if team and (tenant, team) in self.teams:
            out = intersect(out, self.teams[(tenant, team)].models)
        if u is not None:
            out = intersect(out, u.models)
        return team, out

    def resolve(self, rec: KeyRecord) -> KeyRecord:
        """The key as requests see it: effective team, allow-list key ∩ team ∩ user."""
        if not rec.team and not rec.user:
            return rec
        team = self.team_of(rec.tenant, rec.team, rec.user)
        if team is None:  # dangling reference: refuse every model rather than lift a team's limits
            return replace(rec, models=())
        return replace(rec, team=team, models=self.allowed(rec.tenant, team, rec.user, rec.models))

    def resolve_all(self, records: dict[str, KeyRecord]) -> dict[str, KeyRecord]:
        """:meth:`resolve` of every record, each (tenant, team, user, allow-list) worked out once:
        keys share few of them, and a reload of many keys stays cheap."""
        memo: dict[tuple[str, str, str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
        out: dict[str, KeyRecord] = {}
        for kid, rec in records.items():
            if not rec.team and not rec.user:
                out[kid] = rec
                continue
            k = (rec.tenant, rec.team, rec.user, rec.models)
            got = memo.get(k)
            if got is None:
                r = self.resolve(rec)
                got = memo[k] = (r.team, r.models)
            out[kid] = KeyRecord(
                rec.id, rec.tenant, rec.hash, got[1], rec.revoked, rec.expires_at, got[0], rec.user
            )
        return out


async def load_org(redis: Redis) -> Org:
    """Teams and users of every known tenant (three pipelined round trips)."""
    tenants = sorted(n.decode() for n in await redis.smembers(keystore.TENANT_SET))
    pipe = redis.pipeline(transaction=False)
    for t in tenants:
        pipe.smembers(teams_key(t))
        pipe.smembers(users_key(t))
    sets = await pipe.execute()
    names: list[tuple[str, str, str]] = []  # (kind, tenant, name)
    for i, t in enumerate(tenants):
        names += [("team", t, n.decode()) for n in sorted(sets[2 * i])]
        names += [("user", t, n.decode()) for n in sorted(sets[2 * i + 1])]
    pipe = redis.pipeline(transaction=False)
    for kind, t, n in names:
        pipe.hgetall(team_key(t, n) if kind == "team" else user_key(t, n))
    org = Org()
    for (kind, t, n), raw in zip(names, await pipe.execute(), strict=True):
        if kind == "team":
            org.teams[(t, n)] = TeamRecord.from_redis(t, n, raw)
        else:
            org.users[(t, n)] = UserRecord.from_redis(t, n, raw)
    return org


# Writers queued on a MULTI pipeline, shared by the control plane and the start-up seed; the caller
# announces the change (keystore.announce_config) in the same transaction.


def queue_team(pipe: Pipeline, rec: TeamRecord) -> None:
    pipe.sadd(teams_key(rec.tenant), rec.name)
    pipe.delete(team_key(rec.tenant, rec.name))
    pipe.hset(team_key(rec.tenant, rec.name), mapping=rec.to_redis())


def queue_user(pipe: Pipeline, rec: UserRecord) -> None:
    pipe.sadd(users_key(rec.tenant), rec.name)
    pipe.delete(user_key(rec.tenant, rec.name))
    pipe.hset(user_key(rec.tenant, rec.name), mapping=rec.to_redis())


def queue_delete_team(pipe: Pipeline, tenant: str, name: str) -> None:
    pipe.srem(teams_key(tenant), name)
    pipe.delete(team_key(tenant, name))


def queue_delete_user(pipe: Pipeline, tenant: str, name: str) -> None:
    pipe.srem(users_key(tenant), name)
    pipe.delete(user_key(tenant, name))


def queue_forget_tenant(pipe: Pipeline, tenant: str, teams: Sequence[str], users: Sequence[str]) -> None:
    """Remove every team and user of a deleted tenant."""
    for t in teams:
        pipe.delete(team_key(tenant, t))
    for u in users:
        pipe.delete(user_key(tenant, u))
    pipe.delete(teams_key(tenant), users_key(tenant))
