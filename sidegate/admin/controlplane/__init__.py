"""Live management of tenants, limits and keys in the store: what the admin API and the CLI call.

One import for both callers (``from sidegate.admin import controlplane as cp``): the input rules and
refusals (:mod:`.rules`), what is shown about keys and tenants (:mod:`.views`) and the transactional
operations (:mod:`.operations`; teams and users: :mod:`.org`). See :mod:`sidegate.keystore` for the store's layout.
"""

from sidegate.admin.controlplane.operations import ControlPlane
from sidegate.admin.controlplane.org import MEMBER_PATTERN, TeamInfo, UserInfo, check_member, check_member_opt
from sidegate.admin.controlplane.rules import (
    DEFAULT_OVERLAP_S,
    KEY_ID_PATTERN,
    MAX_EXPIRES_AT,
    MAX_LIMIT,
    MAX_MODELS,
    MAX_OVERLAP_S,
    MODEL_PATTERN,
    TENANT_PATTERN,
    Conflict,
    ControlPlaneError,
    Invalid,
    NotFound,
    check_expires_at,
    check_key_id,
    check_limits,
    check_models,
    check_overlap,
    check_tenant,
)
from sidegate.admin.controlplane.views import KeyInfo, Rotation, TenantInfo
from sidegate.keystore import LIMIT_FIELDS

__all__ = [
    "DEFAULT_OVERLAP_S",
    "KEY_ID_PATTERN",
    "LIMIT_FIELDS",
    "MAX_EXPIRES_AT",
    "MAX_LIMIT",
    "MAX_MODELS",
    "MAX_OVERLAP_S",
    "MEMBER_PATTERN",
    "MODEL_PATTERN",
    "TENANT_PATTERN",
    "Conflict",
    "ControlPlane",
    "ControlPlaneError",
    "Invalid",
    "KeyInfo",
    "NotFound",
    "Rotation",
    "TeamInfo",
    "TenantInfo",
    "UserInfo",
    "check_expires_at",
    "check_key_id",
    "check_limits",
    "check_member",
    "check_member_opt",
    "check_models",
    "check_overlap",
    "check_tenant",
]
