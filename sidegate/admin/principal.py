"""Who is acting on the control plane, and what each admin role may do.

Roles: ``owner`` (everything, every tenant), ``tenant_admin`` (its tenant's teams, users, keys and
limits), ``viewer`` (reads usage; its tenant, or every tenant when it has none). The admin API's
middleware (:mod:`sidegate.admin.server`) turns a request's credential into a :class:`Principal`;
the CLI acts as ``owner`` (it holds the store's credentials anyway). Operations record the
principal in the audit log.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Action = Literal["read", "write", "owner"]
"""read: look (usage, keys, limits); write: change a tenant's keys, teams, users, limits; owner:
what only an owner does (tenants themselves, admin tokens, the audit log of every tenant)."""


class Role(StrEnum):
    OWNER = "owner"
    TENANT_ADMIN = "tenant_admin"
    VIEWER = "viewer"


@dataclass(slots=True, frozen=True)
class Principal:
    id: str
    """Who: ``env`` (SIDEGATE_ADMIN_TOKEN), ``token:<id>`` (a stored admin token), ``oidc:<sub>``, ``cli:<user>``."""
    role: Role
    tenant: str | None = None
    """The one tenant a tenant_admin or viewer may see; None = every tenant (owners, global viewers)."""
    source: str = ""
    """Where the change came from (the client address, or ``local`` for the CLI)."""

    def may(self, action: Action, tenant: str | None = None) -> bool:
        """Whether this principal may do ``action`` on ``tenant`` (None: on no single tenant, e.g. listing)."""
        if self.role is Role.OWNER:
            return True
        if action == "owner":
            return False
        if self.role is Role.VIEWER and action != "read":
            return False
        # Scoped to one tenant: only that tenant's things (a listing is filtered by the caller).
        return self.tenant is None or tenant is None or tenant == self.tenant

    def sees(self, tenant: str) -> bool:
        """Whether a listing shows ``tenant``'s things to this principal."""
        return self.tenant is None or tenant == self.tenant


OWNER_ENV = Principal("env", Role.OWNER)
"""The holder of SIDEGATE_ADMIN_TOKEN (and everyone under --insecure-no-auth)."""


def cli_principal() -> Principal:
    """The CLI's principal, ``cli:<os user>`` from ``local``: an owner (it holds the store's
    credentials anyway), named in the audit log by the operating-system account that ran it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = f"uid{os.getuid()}"
    return Principal(f"cli:{user}", Role.OWNER, None, "local")
