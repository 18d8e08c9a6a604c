"""The control plane's operations on teams and users inside a tenant (layout: :mod:`sidegate.orgstore`).

Like every change, each is one MULTI/EXEC under WATCH that announces ``sg:config:version`` and appends
its audit entry in the same transaction. Deleting a team or a user revokes the keys that belong to it
(as deleting a tenant does): a key left without its team would escape the team's limits. A team still
holding users is not deleted (409): moving people is a decision, not a side effect. Deleting a team or
user that is not there (or whose tenant is not) succeeds with nothing done: the end state holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from sidegate.admin.audit import queue_audit
from sidegate.admin.controlplane.rules import (
    TENANT_PATTERN,
    Conflict,
    Invalid,
    NotFound,
    _match,
    check_models,
    check_tenant,
)
from sidegate.admin.controlplane.views import KeyInfo
from sidegate.admin.principal import Principal
from sidegate.keystore import KEY_SET, TENANT_SET, TenantLimits, announce_config, announce_keys, record_key
from sidegate.orgstore import (
    TeamRecord,
    UserRecord,
    queue_delete_team,
    queue_delete_user,
    queue_team,
    queue_user,
    team_key,
    teams_key,
    user_key,
    users_key,
)

T = TypeVar("T")
MEMBER_PATTERN = TENANT_PATTERN  # team and user names follow the tenants' rule (as the config's names)
Member = Literal["team", "user"]


@dataclass(slots=True, frozen=True)
class _Layout:
    """Where the store keeps one kind of member (:mod:`sidegate.orgstore`), for the operations both
    kinds share."""

    key: Callable[[str, str], str]
    queue: Callable[[Pipeline, Any], None]
    queue_delete: Callable[[Pipeline, str, str], None]


_LAYOUT: dict[Member, _Layout] = {
    "team": _Layout(team_key, queue_team, queue_delete_team),
    "user": _Layout(user_key, queue_user, queue_delete_user),
}


def check_member(name: Any, what: str) -> str:
    return _match(MEMBER_PATTERN, name, f"{what} name")


def check_member_opt(name: Any, what: str) -> str | None:
    return None if name is None else check_member(name, what)


def owner_keys(tenant: str, team: str | None, user: str | None) -> list[str]:
    """The store keys a key's owner check reads (to WATCH)."""
    return [*([team_key(tenant, team)] if team else []), *([user_key(tenant, user)] if user else [])]


async def check_owner(pipe: Pipeline, tenant: str, team: str | None, user: str | None) -> str:
    """The named team and user exist in ``tenant`` (and the user is in the team when both are named);
    returns the key's effective team."""
    if team and not await pipe.exists(team_key(tenant, team)):
        raise NotFound(f"no team {team} in tenant {tenant}")
    if not user:
        return team or ""
    raw = await pipe.hgetall(user_key(tenant, user))
    if not raw:
        raise NotFound(f"no user {user} in tenant {tenant}")
    theirs = UserRecord.from_redis(tenant, user, raw).team
    if team and team != theirs:
        raise Invalid(
            f"user {user} is not in team {team} (its team: {theirs or 'none'}); name the user alone"
        )
    return theirs


async def member_names(r: Redis | Pipeline, tenant: str) -> tuple[list[str], list[str]]:
    """(team names, user names) of a tenant, sorted."""
    teams = sorted(n.decode() for n in await r.smembers(teams_key(tenant)))
    users = sorted(n.decode() for n in await r.smembers(users_key(tenant)))
    return teams, users


@dataclass(slots=True, frozen=True)
class TeamInfo:
    record: TeamRecord
    users: tuple[str, ...]
    """Names of the users in the team."""
    keys: int
    """Usable keys that belong to the team itself (its users' keys are counted with them)."""

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "users": list(self.users), "active_keys": self.keys}


@dataclass(slots=True, frozen=True)
class UserInfo:
    record: UserRecord
    keys: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "active_keys": self.keys}


class OrgOperations:
    """Team and user operations, mixed into :class:`sidegate.admin.controlplane.ControlPlane`."""

    redis: Redis
    clock: Callable[[], float]
    principal: Principal

    if TYPE_CHECKING:

        async def _transact(
            self, watch: Callable[[], list[str]], body: Callable[[Pipeline], Awaitable[T]]
        ) -> T: ...

        async def _all_keys(self, redis: Redis | Pipeline | None = None) -> list[KeyInfo]: ...

    async def _tenant_exists(self, r: Redis | Pipeline, tenant: str) -> None:
        if not await r.sismember(TENANT_SET, tenant):
            raise NotFound(f"no tenant named {tenant}")

    def _active(self, keys: list[KeyInfo], tenant: str, *, team: str = "", user: str = "") -> list[KeyInfo]:
        now = self.clock()
        return [
            k for k in keys
            if k.tenant == tenant and k.status(now) == "active" and (k.team == team if team else k.user == user)
        ]  # fmt: skip

    async def _queue_put(self, pipe: Pipeline, what: Member, rec: TeamRecord | UserRecord) -> bool:
        """Queue ``rec`` in place of the stored team or user, announced and audited as
        ``<what>.put`` in the same MULTI; -> whether it is new."""
        layout = _LAYOUT[what]
        raw = await pipe.hgetall(layout.key(rec.tenant, rec.name))
        before = type(rec).from_redis(rec.tenant, rec.name, raw).to_dict() if raw else None
        pipe.multi()
        layout.queue(pipe, rec)
        announce_config(pipe)
        audit_target = f"{what}:{rec.tenant}/{rec.name}"
        queue_audit(pipe, self.principal, f"{what}.put", audit_target, before, rec.to_dict(), self.clock())
        return before is None

    def _queue_delete(
        self, pipe: Pipeline, what: Member, rec: TeamRecord | UserRecord, mine: list[KeyInfo]
    ) -> int:
        """Queue deleting the team or user ``rec`` and revoking its keys ``mine``, announced and audited
        as ``<what>.delete`` in the same MULTI; -> how many keys are revoked."""
        now = self.clock()
        pipe.multi()
        _LAYOUT[what].queue_delete(pipe, rec.tenant, rec.name)
        _revoke(pipe, mine, now)
        announce_config(pipe)
        before = {**rec.to_dict(), "revoked_keys": [k.id for k in mine]}
        queue_audit(
            pipe, self.principal, f"{what}.delete", f"{what}:{rec.tenant}/{rec.name}", before, None, now
        )
        return len(mine)

    # teams

    async def list_teams(self, tenant: str) -> list[TeamInfo]:
        tenant = check_tenant(tenant)
        await self._tenant_exists(self.redis, tenant)
        keys = await self._all_keys()
        teams, users = await member_names(self.redis, tenant)
        pipe = self.redis.pipeline(transaction=False)
        for t in teams:
            pipe.hgetall(team_key(tenant, t))
        for u in users:
            pipe.hget(user_key(tenant, u), "team")
        answers = await pipe.execute()
        team_of = {u: (t or b"").decode() for u, t in zip(users, answers[len(teams) :], strict=True)}
        out = []
        for name, raw in zip(teams, answers[: len(teams)], strict=True):
            if raw:
                members = tuple(u for u in users if team_of[u] == name)
                out.append(TeamInfo(TeamRecord.from_redis(tenant, name, raw), members,
                                    len(self._active(keys, tenant, team=name))))  # fmt: skip
        return out

    async def get_team(self, tenant: str, name: str) -> TeamInfo:
        tenant, name = check_tenant(tenant), check_member(name, "team")
        return _named(await self.list_teams(tenant), "team", tenant, name)

    async def put_team(
        self, tenant: str, name: str, limits: TenantLimits | None = None, models: Iterable[str] = ("*",)
    ) -> tuple[TeamInfo, bool]:
        """Create or replace a team (its limits and allow-list). -> (team, created)."""
        tenant, name = check_tenant(tenant), check_member(name, "team")
        rec = TeamRecord(tenant, name, limits or TenantLimits(), check_models(models))

        async def body(pipe: Pipeline) -> bool:
            await self._tenant_exists(pipe, tenant)
            return await self._queue_put(pipe, "team", rec)

        created = await self._transact(lambda: [TENANT_SET, team_key(tenant, name)], body)
        return await self.get_team(tenant, name), created

    async def delete_team(self, tenant: str, name: str) -> int | None:
        """Delete a team and revoke its keys (-> how many; None: there was no such team, nothing done);
        409 while users are in it. Deleting what is not there is not an error (the end state holds)."""
        tenant, name = check_tenant(tenant), check_member(name, "team")
        watched: list[str] = []

        def watch() -> list[str]:
            return [
                TENANT_SET,
                KEY_SET,
                teams_key(tenant),
                users_key(tenant),
                team_key(tenant, name),
                *watched,
            ]

        async def body(pipe: Pipeline) -> int | None:
            raw = await pipe.hgetall(team_key(tenant, name))
            if not raw:
                return None
            _, users = await member_names(pipe, tenant)
            mine = self._active(await self._all_keys(pipe), tenant, team=name)
            # a user joining the team, or a key made for it, while this runs must fail this transaction
            new_watch = [*(user_key(tenant, u) for u in users), *(record_key(k.id) for k in mine)]
            if set(new_watch) - set(watched):
                watched[:] = new_watch
                raise WatchError("watching the users and keys")
            members = [
                u for u in users if (await pipe.hget(user_key(tenant, u), "team") or b"").decode() == name
            ]
            if members:
                raise Conflict(
                    f"team {name} still has users ({', '.join(members)}): move or delete them first"
                )
            return self._queue_delete(pipe, "team", TeamRecord.from_redis(tenant, name, raw), mine)

        return await self._transact(watch, body)

    # users

    async def list_users(self, tenant: str) -> list[UserInfo]:
        tenant = check_tenant(tenant)
        await self._tenant_exists(self.redis, tenant)
        keys = await self._all_keys()
        _, users = await member_names(self.redis, tenant)
        pipe = self.redis.pipeline(transaction=False)
        for u in users:
            pipe.hgetall(user_key(tenant, u))
        return [
            UserInfo(UserRecord.from_redis(tenant, name, raw), len(self._active(keys, tenant, user=name)))
            for name, raw in zip(users, await pipe.execute(), strict=True)
            if raw
        ]

    async def get_user(self, tenant: str, name: str) -> UserInfo:
        tenant, name = check_tenant(tenant), check_member(name, "user")
        return _named(await self.list_users(tenant), "user", tenant, name)

    async def put_user(
        self,
        tenant: str,
        name: str,
        team: str | None = None,
        limits: TenantLimits | None = None,
        models: Iterable[str] = ("*",),
    ) -> tuple[UserInfo, bool]:
        """Create or replace a user (its team, limits and allow-list); its keys follow it to a new team."""
        tenant, name = check_tenant(tenant), check_member(name, "user")
        team = check_member_opt(team, "team")
        rec = UserRecord(tenant, name, team or "", limits or TenantLimits(), check_models(models))

        async def body(pipe: Pipeline) -> bool:
            await self._tenant_exists(pipe, tenant)
            if team and not await pipe.exists(team_key(tenant, team)):
                raise NotFound(f"no team {team} in tenant {tenant}")
            return await self._queue_put(pipe, "user", rec)

        watch = [TENANT_SET, user_key(tenant, name), *([team_key(tenant, team)] if team else [])]
        created = await self._transact(lambda: watch, body)
        return await self.get_user(tenant, name), created

    async def delete_user(self, tenant: str, name: str) -> int | None:
        """Delete a user and revoke its keys; -> how many were revoked (None: there was no such user)."""
        tenant, name = check_tenant(tenant), check_member(name, "user")
        watched: list[str] = []

        def watch() -> list[str]:
            return [TENANT_SET, KEY_SET, users_key(tenant), user_key(tenant, name), *watched]

        async def body(pipe: Pipeline) -> int | None:
            raw = await pipe.hgetall(user_key(tenant, name))
            if not raw:
                return None
            mine = self._active(await self._all_keys(pipe), tenant, user=name)
            new_watch = [record_key(k.id) for k in mine]
            if set(new_watch) - set(watched):
                watched[:] = new_watch
                raise WatchError("watching the keys")
            return self._queue_delete(pipe, "user", UserRecord.from_redis(tenant, name, raw), mine)

        return await self._transact(watch, body)


Info = TypeVar("Info", TeamInfo, UserInfo)


def _named(infos: list[Info], what: Member, tenant: str, name: str) -> Info:
    """The one of ``infos`` called ``name``, or NotFound."""
    for info in infos:
        if info.record.name == name:
            return info
    raise NotFound(f"no {what} {name} in tenant {tenant}")


def _revoke(pipe: Pipeline, keys: list[KeyInfo], now: float) -> None:
    for k in keys:
        pipe.hset(record_key(k.id), mapping={"revoked": "1", "revoked_at": repr(now)})
    if keys:
        announce_keys(pipe)
