"""Where admin tokens live in the store (their operations: :mod:`sidegate.admin.tokens`).

Here, below the operations, because deleting a tenant revokes its admin tokens in the same
transaction (a tenant created again later under the same name must not inherit them).
"""

from __future__ import annotations

from redis.asyncio.client import Pipeline

from sidegate.store.layout import CONFIG_PREFIX

TOKEN_SET = CONFIG_PREFIX + "admintokens"


def token_record_key(tid: str) -> str:
    return f"{CONFIG_PREFIX}admintoken:{tid}"


async def tenant_token_ids(pipe: Pipeline, tenant: str) -> list[str]:
    """The ids of ``tenant``'s admin tokens not revoked yet (in a WATCHed pipeline: runs at once)."""
    tids = sorted(t.decode() for t in await pipe.smembers(TOKEN_SET))
    mine = []
    for tid in tids:
        scope, revoked = await pipe.hmget(token_record_key(tid), ["tenant", "revoked"])
        if scope is not None and scope.decode() == tenant and revoked != b"1":
            mine.append(tid)
    return mine


def queue_revoke_token(pipe: Pipeline, tid: str, now: float) -> None:
    pipe.hset(token_record_key(tid), mapping={"revoked": "1", "revoked_at": repr(now)})
