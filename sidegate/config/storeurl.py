"""The `redis+cluster://` store URL: parsed once here, by the config's validation (so a bad URL is
refused when the file loads, with its location) and by the cluster clients (sidegate/store/cluster.py)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

SCHEME = "redis+cluster"


def is_cluster_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """Seed nodes, ACL user name and password of a `redis+cluster://[user:password@]...` URL;
    ValueError says what is wrong with it."""
    u = urlsplit(url)
    if u.scheme != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL")
    if u.query or u.path.strip("/") not in ("", "0"):
        raise ValueError("a cluster store takes no database number or options (a cluster has database 0 only)")
    netloc = u.netloc.rpartition("@")[2]
    password = unquote(u.password) if u.password else None
    username = unquote(u.username) if u.username else None
    seeds: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster seed node {part!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    return seeds, username, password
