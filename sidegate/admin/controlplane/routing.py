"""The control plane's operations on the routing document (providers, models, prices, default
policies: :mod:`sidegate.config.routing`; its versions in the store: :mod:`sidegate.routingstore`).

Every change, whole document or one entry, is validated as part of the whole configuration
(``with_routing`` against the process's own config file, so a change naming an unknown provider is
refused with its location and nothing is stored) and then committed as ONE new version: the
document, its history entry, the version bump, its announcement and the change's audit entry in one
MULTI/EXEC. A change of one entry is applied to the version it read and committed expecting that
version; if another change came in between, it is re-applied to the newer one (a caller's own
``expect_version`` instead makes that a 409, for read-modify-write clients).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from sidegate import routingstore
from sidegate.admin.audit import queue_audit
from sidegate.admin.controlplane.rules import TENANT_PATTERN, Conflict, Invalid, NotFound, _match
from sidegate.admin.principal import OWNER_ENV, Principal
from sidegate.config.root import ConfigError, SidegateConfig
from sidegate.config.routing import inline_secrets, routing_doc, with_routing

_TRIES = 8
Doc = dict[str, Any]
MODEL_NAME_PATTERN = r"^[!-~]{1,200}$"
"""A model's name: a client model name (printable ASCII, no spaces)."""
PROVIDER_NAME_PATTERN = TENANT_PATTERN
"""A provider's name: the config's name rule."""
MAX_INT = 2**53 - 1
"""The largest version number (or limit) the API takes: JSON's exact integers."""


class InvalidConfig(Invalid):
    """A change the whole configuration refuses; ``problems`` name each location in the document."""

    code = "invalid_config"

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("the routing document is invalid: " + "; ".join(problems))


class VersionMoved(Conflict):
    code = "version_conflict"

    def __init__(self, expected: int, current: int):
        self.current = current
        super().__init__(
            f"the routing document is at version {current}, not {expected}: re-read it and retry"
        )


def check_model_name(name: Any) -> str:
    return _match(MODEL_NAME_PATTERN, name, "model name")


def check_provider_name(name: Any) -> str:
    return _match(PROVIDER_NAME_PATTERN, name, "provider name")


def _action(section: str, verb: str) -> str:
    """The audit action of a change of one entry: ``model.put``, ``provider.delete``...; any change
    of the price table, one price or the whole table, is ``prices.put`` (target ``price:<model>``)."""
    return "prices.put" if section == "prices" else f"{section[:-1]}.{verb}"


class RoutingPlane:
    """Routing-document operations on one store, done (and audited) by ``principal``; ``base`` is
    the process's file configuration every document is validated inside."""

    def __init__(
        self,
        redis: Redis,
        base: SidegateConfig,
        principal: Principal = OWNER_ENV,
        clock: Callable[[], float] = time.time,
    ):
        self.redis, self.base, self.principal, self.clock = redis, base, principal, clock

    def validate(self, doc: Any) -> SidegateConfig:
        """The whole configuration ``doc`` makes with the file's other parts; InvalidConfig if it
        makes none, or carries a secret inline."""
        try:
            cfg = with_routing(self.base, doc)
        except ConfigError as exc:
            raise InvalidConfig(exc.problems) from None
        problems = inline_secrets(doc)
        if problems:
            raise InvalidConfig(problems)
        return cfg

    # reads

    async def current(self) -> tuple[int, Doc]:
        """(version, document); before the first seed, (0, the file's document): a change then
        starts from what seeding would have stored."""
        now = await routingstore.current(self.redis)
        return (now.number, now.doc) if now else (0, routing_doc(self.base))

    async def section(self, section: str) -> tuple[int, dict[str, Any]]:
        n, doc = await self.current()
        return n, dict(doc.get(section) or {})

    async def entry(self, section: str, name: str) -> tuple[int, Any]:
        n, entries = await self.section(section)
        if name not in entries:
            raise NotFound(f"no {section[:-1]} named {name} (version {n})")
        return n, entries[name]

    async def history(self, limit: int) -> list[dict[str, Any]]:
        if not 1 <= limit <= routingstore.KEEP:
            raise Invalid(f"limit must be 1..{routingstore.KEEP}")
        return await routingstore.history(self.redis, limit)

    async def version_at(self, n: int) -> Doc:
        doc = await routingstore.doc_at(self.redis, n) if n > 0 else None
        if doc is None:
            raise NotFound(f"no version {n} kept (the last {routingstore.KEEP} versions are kept)")
        return doc

    async def diff(self, a: int | None = None, b: int | None = None) -> dict[str, Any]:
        """What changed from version ``a`` (default: the one before ``b``) to ``b`` (default: current)."""
        n, doc_b = await self.current()
        b = n if b is None else b
        doc_b = doc_b if b == n else await self.version_at(b)
        a = b - 1 if a is None else a
        doc_a = await self.version_at(a) if a > 0 else {}
        return {"from": a, "to": b, **routingstore.diff(doc_a, doc_b)}

    # changes

    def _auditor(
        self, action: str, target: str, before: Any, after: Any, now: float
    ) -> Callable[[Pipeline, int, Doc | None], None]:
        """The audit entry of a change, queued in its commit's MULTI (with the version it made)."""

        def audit(pipe: Pipeline, version: int, _prev: Doc | None) -> None:
            views_after = {"version": version, **({"value": after} if after is not None else {})}
            queue_audit(pipe, self.principal, action, target, before, views_after, now, tenant="")

        return audit

    async def _commit(
        self,
        change: Callable[[Doc], tuple[Any, Any]],
        action: str,
        target: str,
        *,
        expect: int | None = None,
        message: str = "",
        source: str = "admin",
    ) -> int:
        """Apply ``change`` (doc -> (before, after) views for the audit; it mutates a copy) to the
        current document, validate the result and commit it expecting the version it was read at."""
        for _ in range(_TRIES):
            n, doc = await self.current()
            if expect is not None and n != expect:
                raise VersionMoved(expect, n)
            new = copy.deepcopy(doc)
            before, after = change(new)
            # Stored in the canonical form seeding uses (defaults left out), so equal documents
            # have equal digests however they were spelled.
            new = routing_doc(self.validate(new))
            now = self.clock()
            audit = self._auditor(action, target, before, after, now)
            try:
                return await routingstore.commit(self.redis, new, actor=self.principal.id, source=source,
                                                 message=message, expect=n, also=audit, now=now)  # fmt: skip
            except routingstore.VersionConflict as exc:
                if expect is not None:
                    raise VersionMoved(expect, exc.current) from None
        raise Conflict("the routing document changed during the operation too many times; try again")

    async def put_doc(self, doc: Any, message: str = "", expect: int | None = None) -> int:
        if not isinstance(doc, dict):
            raise InvalidConfig(["the routing document must be a mapping"])
        self.validate(doc)

        def change(current: Doc) -> tuple[Any, Any]:
            changed = routingstore.changed_names(current, doc)
            current.clear()
            current.update(copy.deepcopy(doc))
            return None, {"changed": changed}

        return await self._commit(change, "routing.put", "routing", expect=expect, message=message)

    async def put_entry(self, section: str, name: str, value: Any, expect: int | None = None) -> int:
        """Create or replace one model, provider or price."""
        kind = section[:-1]

        def change(doc: Doc) -> tuple[Any, Any]:
            entries = doc.setdefault(section, {})
            before = entries.get(name)
            entries[name] = value
            return before, value

        return await self._commit(change, _action(section, "put"), f"{kind}:{name}", expect=expect,
                                  message=f"{kind} {name} set")  # fmt: skip

    async def delete_entry(self, section: str, name: str, expect: int | None = None) -> int:
        kind = section[:-1]

        def change(doc: Doc) -> tuple[Any, Any]:
            entries = doc.get(section) or {}
            if name not in entries:
                raise NotFound(f"no {kind} named {name}")
            if section == "providers":
                users = sorted(m for m, cfg in (doc.get("models") or {}).items()
                               if any(r.get("provider") == name for r in cfg.get("routes", [])))  # fmt: skip
                if users:
                    raise Conflict(f"provider {name} is still routed to by model(s) {', '.join(users)}: "
                                   "change their routes first")  # fmt: skip
            return entries.pop(name), None

        return await self._commit(change, _action(section, "delete"), f"{kind}:{name}", expect=expect,
                                  message=f"{kind} {name} deleted")  # fmt: skip

    async def put_prices(self, prices: Any, expect: int | None = None) -> int:
        if not isinstance(prices, dict):
            raise InvalidConfig(["prices: the price table must be a mapping of model to price"])

        def change(doc: Doc) -> tuple[Any, Any]:
            before = doc.get("prices") or {}
            doc["prices"] = copy.deepcopy(prices)
            return before, prices

        return await self._commit(change, "prices.put", "prices", expect=expect, message="price table set")

    async def rollback(self, to: int | None = None) -> tuple[int, int]:
        """A NEW version with version ``to``'s document (default: the one before the current);
        -> (new version, ``to``). Validated like any change (the file may have changed since)."""
        n, doc = await self.current()
        target = n - 1 if to is None else to
        old = await self.version_at(target) if 0 < target < n else None
        if old is None:
            raise NotFound(f"no version {target} to roll back to (current: {n}; "
                           f"the last {routingstore.KEEP} versions are kept)")  # fmt: skip
        now = self.clock()

        def audit(pipe: Pipeline, version: int, _prev: Doc | None) -> None:
            after = {"version": version, "to": target, "changed": routingstore.changed_names(doc, old)}
            queue_audit(
                pipe, self.principal, "routing.rollback", "routing", {"version": n}, after, now, tenant=""
            )

        try:
            return await routingstore.rollback(self.redis, target, actor=self.principal.id, validate=self.validate,
                                               also=audit)  # fmt: skip
        except routingstore.VersionConflict as exc:
            raise VersionMoved(n, exc.current) from None
        except LookupError as exc:
            raise NotFound(str(exc)) from None
