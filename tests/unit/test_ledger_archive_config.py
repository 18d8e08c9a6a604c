"""The ledger's spill and archive configuration: validation, the filesystem an archive URL opens
(credentials only from the environment), deterministic object names, and how the ledger feature
wires them (no MAXLEN with an archive; one spill directory per store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidegate import config
from sidegate.config.ledger_archive import LedgerArchiveConfig
from sidegate.features.ledger import archive
from sidegate.features.ledger.feature import LedgerFeature, spill_dir
from sidegate.features.ledger.trim import format_id, next_id, parse_id


def cfg(**obs: Any) -> config.SidegateConfig:
    data = {"providers": {"p": {"api": "openai", "base_url": "http://127.0.0.1:9"}}, "models": {},
            "store": {"url": "redis://:hunter2@10.0.0.5:6380/0"}, "observability": obs}  # fmt: skip
    return config.parse(data, "test", env={})


def test_defaults_archive_off_spill_on() -> None:
    obs = cfg().observability
    assert obs.ledger_archive.url is None and obs.ledger_archive.older_than == "7d"
    assert obs.ledger_spill.max_bytes == 256 * 1024 * 1024 and obs.ledger_spill.dir is None


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"older_than": "a week"}, "older_than"),
        ({"storage_options": {"secret": "x"}}, "look like credentials"),
        ({"storage_options": {"aws_secret_access_key": "x"}}, "look like credentials"),
        ({"interval_s": 0}, "interval_s"),
        ({"max_records_per_object": 0}, "max_records_per_object"),
    ],
)
def test_archive_config_is_checked(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        cfg(ledger_archive={"url": "s3://b/p", **section})
    assert any(problem in p for p in err.value.problems)


def test_s3_options_and_credentials_from_the_named_variables() -> None:
    c = LedgerArchiveConfig(url="s3://bucket/some/prefix/", storage_options={"endpoint_url": "http://127.0.0.1:9000",
                            "region_name": "eu-west-1"}, access_key_env="K", secret_key_env="S")  # fmt: skip
    fs, root = archive.open_fs(c, env={"K": "key-id", "S": "the-secret"})
    assert root == "bucket/some/prefix"
    assert fs.client_kwargs == {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}
    assert fs.key == "key-id" and fs.secret == "the-secret"
    with pytest.raises(archive.ArchiveError, match="S is not set"):
        archive.open_fs(c, env={"K": "key-id"})


def test_gcs_without_gcsfs_names_the_package() -> None:
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(archive.ArchiveError, match="gcsfs"):
            archive.open_fs(LedgerArchiveConfig(url="gs://bucket/prefix"))
    else:  # pragma: no cover - gcsfs installed: it opens
        archive.open_fs(LedgerArchiveConfig(url="gs://bucket/prefix"))


def test_object_names_are_deterministic() -> None:
    a = archive.object_path("b/p", "sg:ledger", "1700000000000-3")
    assert a == "b/p/sg-ledger/2023/11/14/1700000000000-000003.jsonl.gz"
    assert a == archive.object_path("b/p", "sg:ledger", "1700000000000-3")
    entries = [(b"1700000000000-3", {b"ts": b"1700000000.0", b"request_id": b"r1"})]
    assert archive.encode(entries) == archive.encode(entries)  # same records, same bytes (gzip mtime 0)


def test_stream_ids() -> None:
    assert parse_id(b"5-7") == (5, 7) and parse_id("5") == (5, 0)
    assert format_id(next_id("5-7")) == "5-8" and format_id(next_id(f"5-{2**64 - 1}")) == "6-0"


def test_feature_wiring(tmp_path: Path) -> None:
    plain = LedgerFeature.from_config(cfg(), store=object())  # type: ignore[arg-type]
    assert plain is not None and plain.ledger.maxlen == 1_000_000 and plain.ledger.spill is not None
    archived = LedgerFeature.from_config(cfg(ledger_archive={"url": "file:///tmp/a"}), store=object())  # type: ignore[arg-type]
    assert archived is not None and archived.ledger.maxlen is None  # the archiver trims instead
    off = LedgerFeature.from_config(cfg(ledger_spill={"max_bytes": 0}), store=object())  # type: ignore[arg-type]
    assert off is not None and off.ledger.spill is None
    d = spill_dir(cfg())
    assert "hunter2" not in str(d) and d.parent.name.startswith("sidegate-ledger-spill-")
    assert d != spill_dir(cfg(ledger_spill={"dir": str(tmp_path)})) == tmp_path
