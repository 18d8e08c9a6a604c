"""`observability.ledger_ship.url` never carries ClickHouse credentials: the HTTP sink would ignore
them (every insert refused) and the config file would hold the password. A readable error instead."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidegate.config.ledger_ship import LedgerShipConfig


@pytest.mark.parametrize("url", ["http://default:s3cret@ch.example:8123", "https://admin@ch.example"])
def test_credentials_in_the_url_are_refused_with_the_fields_to_use(url: str) -> None:
    with pytest.raises(ValidationError) as err:
        LedgerShipConfig(url=url)
    text = str(err.value)
    assert "user_env and password_env" in text and "s3cret" not in text.split("input_value")[0]


def test_plain_urls_still_pass() -> None:
    assert LedgerShipConfig(url="http://ch.example:8123").url == "http://ch.example:8123"
    assert LedgerShipConfig(url="chdb:///var/lib/sidegate/ch@1").url == "chdb:///var/lib/sidegate/ch@1"
