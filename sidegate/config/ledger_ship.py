"""`observability.ledger_ship`: the shipper that copies the usage ledger (the store's `sg:ledger`
stream) into ClickHouse continuously (docs/observability.md, "The ledger in ClickHouse")."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from sidegate.config.base import StrictModel

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LedgerShipConfig(StrictModel):
    url: str | None = None
    """Where to: `http(s)://host:port` (a ClickHouse server, through clickhouse-connect) or
    `chdb:///path/to/dir` (ClickHouse in this process, chDB: one process per directory). None: off."""
    database: str = "sidegate"
    table: str = "ledger"
    """The ledger table; the spend-per-day view is `<table>_daily` (fed by `<table>_daily_mv`)."""
    group: str = "clickhouse"
    """The store's consumer group on `sg:ledger`: one per destination (each ships every record once)."""
    consumer: str = ""
    """This shipper's name in the group (default: the host name). Keep it stable across restarts:
    a restarted shipper first re-sends its own unacknowledged batch, deduplicated by ClickHouse."""
    since: str | None = None
    """Where a NEW group starts: a time (epoch s, ISO date, `7d`) or a stream id; None: the
    stream's beginning. An existing group resumes where it was."""
    batch_size: int = Field(5000, ge=1, le=100_000)
    """Most records per INSERT. ClickHouse writes a part per insert: fewer, larger inserts are cheaper
    (measured on chDB: ~140 µs per record at 1000 per insert, ~70 µs at 5000)."""
    flush_interval_s: float = Field(1.0, gt=0, le=300)
    """A partial batch is inserted once its first record waited this long."""
    claim_idle_s: float = Field(60.0, gt=0)
    """Entries another consumer of the group has held unacknowledged this long are taken over (its
    process died): the whole of its batch, re-sent under the same deduplication token."""
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    """A failed insert is retried with exponential back-off between these bounds, forever (the
    records stay in the store, unacknowledged, meanwhile; the lag metric shows them)."""
    user_env: str | None = None
    """Environment variable holding the ClickHouse user (never the value itself in the file)."""
    password_env: str | None = None
    """Environment variable holding the ClickHouse password."""
    create_tables: bool = False
    """Create the database, table and spend view (sidegate/data/ledger_clickhouse.sql) if missing."""
    timeout_s: float = Field(30.0, gt=0)
    """Connect/send timeout of the HTTP client."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("http://", "https://", "chdb://")):
            raise ValueError(
                "must be http(s)://host:port (a ClickHouse server) or chdb:///path (ClickHouse in-process)"
            )
        if v.startswith("chdb://") and not v.removeprefix("chdb://"):
            raise ValueError("chdb:// needs a directory: chdb:///var/lib/sidegate/clickhouse")
        if not v.startswith("chdb://") and "@" in urlsplit(v).netloc:
            # the HTTP sink takes only host and port from it: a user:password here would be ignored
            # (every insert refused) and would sit in a file that gets committed and logged
            raise ValueError(
                "must not hold credentials (user:password@): name their environment variables in "
                "user_env and password_env"
            )
        return v

    @field_validator("database", "table")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError("must be a plain identifier (letters, digits, _)")
        return v

    @field_validator("user_env", "password_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError("must be the NAME of an environment variable (the secret stays out of the file)")
        return v

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError("must be a non-empty name without spaces")
        return v

    def consumer_name(self) -> str:
        return self.consumer or os.uname().nodename or "shipper"

    def credentials(self, env: dict[str, str] | None = None) -> tuple[str | None, str]:
        """(user, password) from the named environment variables (None/"" when unset)."""
        e = os.environ if env is None else env
        user = e.get(self.user_env) if self.user_env else None
        return (user or None), (e.get(self.password_env, "") if self.password_env else "")
