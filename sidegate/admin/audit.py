"""The audit log: every control-plane change (who, what, before/after, when, from where) as one
entry of the store's ``sg:audit`` stream, appended in the same MULTI/EXEC as the change itself, so
a change without its entry (or the reverse) cannot happen.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio.client import Pipeline

from sidegate.admin.principal import Principal

AUDIT_STREAM = "sg:audit"


def queue_audit(
    pipe: Pipeline, who: Principal, action: str, target: str, before: Any, after: Any, now: float
) -> None:
    """Queue one entry on a MULTI pipeline. ``action`` is e.g. ``key.create``, ``team.limits``;
    ``target`` names the thing (``key:ab12cd34``, ``team:acme/ml``); before/after are JSON-able
    views (never a secret or a hash: :mod:`sidegate.admin.controlplane.views`)."""
    pipe.xadd(
        AUDIT_STREAM,
        {
            "ts": repr(now),
            "actor": who.id,
            "role": who.role.value,
            "tenant_scope": who.tenant or "",
            "source": who.source,
            "action": action,
            "target": target,
            "before": orjson.dumps(before),
            "after": orjson.dumps(after),
        },
    )
