"""The usage ledger's bound and its archive: where records go when the store cannot take them (the
spill) and where old records go before they are trimmed from the stream (the archive).
docs/observability.md, "The ledger's bound" and "Archive", explains both."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from sidegate.config.base import StrictModel

_AGE = re.compile(r"^\d+(\.\d+)?[smhdw]$")
_SECRET_OPTION = re.compile(r"(secret|password|token|credential|key$|_key_)", re.IGNORECASE)


class LedgerSpillConfig(StrictModel):
    """Local append-only file the ledger writer spills to when its queue is full or the store fails,
    replayed into the stream in order when the store is back."""

    dir: str | None = None
    """Directory of the spill files (one per writer process). None: a directory under the system's
    temporary directory, one per store URL (survives a restart of the services, not of the host):
    set a persistent volume path in production."""
    max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    """Bound of one process's spill file (~400 bytes a record: 256 MiB holds ~650,000). Past it
    records are dropped, counted in `sidegate_ledger_records_total{outcome="dropped_spill_full"}`
    and logged. 0: no spill (a full queue or a store error drops records, counted and logged)."""
    overflow: int = Field(10_000, ge=0, le=1_000_000)
    """Records the response path may hand the writer beyond its full queue; the writer spills them."""


class LedgerArchiveConfig(StrictModel):
    """Records older than `older_than` written as gzip JSON-lines objects to object storage, then
    trimmed from the stream (never records a consumer group has not acknowledged)."""

    url: str | None = None
    """Where objects go, an fsspec URL: `s3://bucket/prefix` (s3fs; S3-compatible stores through
    `storage_options.endpoint_url`), `gs://bucket/prefix` (needs the `gcsfs` package) or
    `file:///path`. None: no archive (the stream is bounded by `ledger_maxlen` instead)."""
    older_than: str = "7d"
    """Age past which records are archived and trimmed: a number and a unit (s, m, h, d, w)."""
    interval_s: float = Field(300.0, gt=0)
    """Pause between two archive passes of `sidegate ledger run`/`archive_forever`."""
    max_records_per_object: int = Field(100_000, ge=1, le=10_000_000)
    """Records per object (~40 bytes each gzipped); the pass writes as many objects as it needs."""
    storage_options: dict[str, Any] = Field(default_factory=dict)
    """Options of the fsspec filesystem, non-secret only (e.g. `{"endpoint_url": ..., "region_name":
    ...}` for S3; s3fs takes `endpoint_url` into `client_kwargs`). Credentials come from the
    provider's standard chain (AWS: env, shared files, instance role; GCS: application default) or
    from the variables named below."""
    access_key_env: str | None = None
    """Environment variable holding the S3 access key id (else the standard AWS chain)."""
    secret_key_env: str | None = None
    """Environment variable holding the S3 secret access key (else the standard AWS chain)."""

    @field_validator("older_than")
    @classmethod
    def _age(cls, v: str) -> str:
        if not _AGE.match(v.strip()):
            raise ValueError(f"older_than {v!r}: expected a number and a unit (s, m, h, d, w), e.g. 7d")
        return v.strip()

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Configs get committed and logged: secrets belong in the environment (`*_env` fields)."""
        bad = sorted(_secret_keys(v))
        if bad:
            raise ValueError(
                f"storage_options {bad} look like credentials: use access_key_env/secret_key_env "
                "or the provider's standard credential chain"
            )
        return v


def _secret_keys(options: dict[str, Any], prefix: str = "") -> list[str]:
    """Option names that look like credentials, nested ones too (`client_kwargs`, `config_kwargs`:
    s3fs hands them to botocore, which takes `aws_secret_access_key` there as well)."""
    found: list[str] = []
    for k, val in options.items():
        name = f"{prefix}{k}"
        if _SECRET_OPTION.search(str(k)):
            found.append(name)
        elif isinstance(val, dict):
            found.extend(_secret_keys(val, f"{name}."))
    return found
