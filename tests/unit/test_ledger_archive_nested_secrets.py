"""`ledger_archive.storage_options` refuses credentials nested in the options s3fs hands to botocore
(`client_kwargs`, `config_kwargs`) as it does at the top level: the config file never holds them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidegate.config.ledger_archive import LedgerArchiveConfig


@pytest.mark.parametrize(
    "options",
    [
        {"client_kwargs": {"aws_secret_access_key": "x", "endpoint_url": "http://s3:9000"}},
        {"client_kwargs": {"aws_session_token": "x"}},
        {"config_kwargs": {"nested": {"password": "x"}}},
    ],
)
def test_nested_credentials_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="look like credentials"):
        LedgerArchiveConfig(url="s3://bucket/prefix", storage_options=options)


def test_nested_plain_options_pass() -> None:
    opts = {"client_kwargs": {"endpoint_url": "http://s3:9000", "region_name": "eu-west-1"}}
    assert LedgerArchiveConfig(url="s3://b/p", storage_options=opts).storage_options == opts
