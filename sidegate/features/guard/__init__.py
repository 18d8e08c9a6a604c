"""Guard stage core: PII detection/redaction/restore and prompt-injection scoring (pure, no I/O).

Typical use on the request path::

    result = guard_request(ctx.api, ctx.body, policy)   # may raise GuardBlocked (a GatewayError)
    if result.changed: ...re-serialise ctx.body...

and on the response path, with ``result.restore_map``: :func:`restore_body` for JSON bodies, or an
:class:`SseRestorer` (client-format SSE bytes) / :class:`StreamRestorer` (one text channel) for streams.
"""

from sidegate.config.guard import Entity, GuardPolicy, InjectionAction, InjectionPolicy, PiiAction
from sidegate.features.guard.classifiers import register_classifier, registered, unregister_classifier
from sidegate.features.guard.core import GuardBlocked, GuardResult, guard_embeddings, guard_request
from sidegate.features.guard.injection import score_text
from sidegate.features.guard.pii import Span, find_pii
from sidegate.features.guard.responses_restore import (
    ResponsesSseRestorer,
    restore_response,
    restore_responses_body,
)
from sidegate.features.guard.restore import StreamRestorer, restore_body, restore_obj, restore_text
from sidegate.features.guard.sse_restore import SseRestorer

__all__ = [
    "Entity",
    "GuardBlocked",
    "GuardPolicy",
    "GuardResult",
    "InjectionAction",
    "InjectionPolicy",
    "PiiAction",
    "ResponsesSseRestorer",
    "Span",
    "SseRestorer",
    "StreamRestorer",
    "find_pii",
    "guard_embeddings",
    "guard_request",
    "register_classifier",
    "registered",
    "restore_body",
    "restore_obj",
    "restore_response",
    "restore_responses_body",
    "restore_text",
    "score_text",
    "unregister_classifier",
]
