"""The one small interface every provider credential scheme implements.

A scheme is built once per provider at start (:func:`sidegate.credentials.for_provider`) and then
applied on every upstream try, so ``apply`` is the hot path: it only writes precomputed strings
(or takes the next key of a pool), never does I/O, never parses.

How the schemes still to come fit, without changing this interface for the ones here:

- A token fetched and refreshed in the background (OAuth client credentials, cloud identity):
  the scheme owns the refresh task (started and closed with the app) and keeps the current token
  in an attribute; ``apply`` reads that attribute synchronously, so a refresh never sits on a
  request's path. The token goes into ``secrets`` as it changes.
- A signature over the final request (AWS SigV4: method, path, headers and body): the scheme says
  so with a ``signs_body`` attribute and a ``sign(method, path, headers, body) -> dict[str, str]``
  that the per-try stage calls once the translated body is known (such a provider then never
  takes the skip-the-body path); its ``apply`` sets nothing.
"""

from __future__ import annotations

from typing import Protocol

MIN_SECRET_LEN = 8
"""Values shorter than this are not scrubbed from answers: they would match ordinary text (real
provider keys are long)."""


class Credential(Protocol):
    """How the gateway proves itself to one provider on each try."""

    secrets: tuple[str, ...]
    """Values that must never reach a client or the cache: scrubbed from every answer."""

    def apply(self, headers: dict[str, str]) -> None:
        """Set this try's credential header(s) in ``headers`` (the try's header mutations)."""
        ...


def scrubbable(keys: list[str]) -> tuple[str, ...]:
    """The keys long enough to scrub from answers."""
    return tuple(k for k in keys if len(k) >= MIN_SECRET_LEN)
