"""Issue 28: the web console in a real headless browser (Debian's chromium through chromium-driver).

The stack is the real one (Envoy + authz + extproc + Valkey + the admin API serving the console);
usage is seeded with real requests through Envoy (the openai SDK), so the charts are drawn from real
ledger records. A screenshot of each page goes to ``$SIDEGATE_SCREENSHOTS`` or the pytest tmp path.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from harness import ADMIN_TOKEN

from sidegate.features.ledger.ledger import STREAM, LedgerRecord

pytestmark = pytest.mark.e2e
# Prices, so the spend chart has something to draw (USD per million tokens).
STACK_EXTRA = {"quota": {"prices": {"*": {"input_per_mtok": 1000.0, "output_per_mtok": 4000.0}}}}
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PROMPT = "console-e2e: what is the capital of France?"
"""A prompt the pages must never show (the tail is metadata only)."""
SEED = [("acme", "gpt-4o-mini"), ("acme", "gpt-4o-mini"), ("acme", "claude-haiku"), ("globex", "gpt-4o-mini"),
        ("globex", "gpt-4o")]  # fmt: skip


def _until(what: str, pred: Callable[[], Any], timeout_s: float = 10.0, every_s: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy: bounded in time, failing with ``what``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:  # a page mid-render: an element replaced under us
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s}s: {what} (last: {last!r})")


def oai(stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0, timeout=20)


def admin_url(stack) -> str:
    return f"http://127.0.0.1:{stack.sup.cfg.services.admin_port}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("SIDEGATE_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Any]:
    """Headless chromium driven by Debian's chromedriver, named explicitly: Selenium Manager never runs
    (it would try to download a driver). Missing browser = a failure that says how to fix it."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; scripts/test does it)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager must not reach the network
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1100",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        driver.set_page_load_timeout(20)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        if offline is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = offline


@pytest.fixture(scope="module")
def seeded(stack) -> list[Any]:
    """Real requests through Envoy; returns their ledger records once all are written."""
    for tenant, model in SEED:
        r = oai(stack, stack.keys[tenant].key).chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}]
        )
        assert r.usage and r.usage.total_tokens > 0

    def written() -> list[Any] | None:
        recs = stack.ledger()
        return recs if len(recs) >= len(SEED) else None

    return _until("the seeded requests in the ledger", written)


def _by(driver, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def _one(driver, css: str) -> Any:
    return _until(f"element {css}", lambda: next(iter(_by(driver, css)), None))


def _go(driver, view: str) -> None:
    driver.execute_script("location.hash = arguments[0]", "#" + view)
    _until(f"the {view} view ready", lambda: driver.execute_script(
        "return document.body.dataset.ready === arguments[0] && !document.body.dataset.loading", view))  # fmt: skip


def _no_page_errors(driver) -> None:
    """No script error and no Content-Security-Policy violation in the page's console."""
    bad = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not bad, bad


def _sign_in(stack, driver) -> None:
    driver.get(admin_url(stack) + "/console/")
    if driver.execute_script("return Boolean(sessionStorage.getItem('sidegate.console.token'))"):
        return
    field = _one(driver, "#signin-token")
    field.clear()
    field.send_keys(ADMIN_TOKEN)
    _one(driver, "#signin-form button[type=submit]").click()
    _until("signed in", lambda: _one(driver, "#nav").is_displayed())


def _select(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(_one(driver, "#" + element_id)).select_by_value(value)


def test_sign_in_and_see_the_seeded_usage_in_the_chart(stack, browser, seeded, shots) -> None:
    browser.get(admin_url(stack) + "/console/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    field = _one(browser, "#signin-token")
    field.send_keys("not-the-token")
    _one(browser, "#signin-form button[type=submit]").click()
    _until("a refused token said so", lambda: "refused" in _one(browser, "#signin-error").text)
    assert not _one(browser, "#nav").is_displayed() and not _one(browser, "#signout").is_displayed()
    browser.save_screenshot(str(shots / "01-sign-in.png"))
    assert browser.execute_script("return sessionStorage.getItem('sidegate.console.token')") is None
    # The one error the page's console may show: the refused sign-in's 401 (reading the log empties it).
    assert all("401" in e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE")

    _sign_in(stack, browser)
    assert _one(browser, "#who").text == "signed in with admin token"
    # An OIDC token (a JWT) is named by its email; the server alone decides what it may do.
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "u1", "email": "ops@example.com"}).encode()).rstrip(
        b"="
    )
    assert browser.execute_script(
        "return whoLabel(arguments[0])", f"eyJhbGciOiJub25lIn0.{claims.decode()}.sig"
    ) == ("ops@example.com")
    _go(browser, "usage")
    for element_id, value in (("usage-range", "1h"), ("usage-group", "tenant"), ("usage-metric", "tokens")):
        _select(browser, element_id, value)
    # What the ledger says, per (tenant, minute): the chart's marks must carry exactly these numbers.
    tokens: Counter[tuple[str, int]] = Counter()
    spend: dict[tuple[str, int], float] = {}
    for rec in seeded:
        at = (rec.tenant, int(rec.ts // 60 * 60))
        tokens[at] += rec.input_tokens + rec.output_tokens
        spend[at] = spend.get(at, 0.0) + rec.cost_usd
    assert all(v > 0 for v in spend.values())

    def marks() -> dict[tuple[str, int], float]:
        got: dict[tuple[str, int], float] = {}
        for mark in _by(browser, "#usage-chart svg rect.mark"):
            at = (mark.get_attribute("data-group"), int(float(mark.get_attribute("data-bucket"))))
            got[at] = got.get(at, 0.0) + float(mark.get_attribute("data-value"))
        return got

    _until(f"the chart's token marks to match the ledger {dict(tokens)}", lambda: marks() == tokens)
    _select(browser, "usage-metric", "cost_usd")

    def spend_drawn() -> bool:
        got = marks()
        return got.keys() == spend.keys() and all(abs(got[k] - v) < 1e-6 for k, v in spend.items())

    _until(f"the chart's spend marks to match the ledger {spend}", spend_drawn)
    legend = _one(browser, "#usage-legend").text
    assert "acme" in legend and "globex" in legend
    top = [tr.text for tr in _by(browser, "#top-table tbody tr")]
    assert any(row.startswith("gpt-4o-mini 3 0 0.0%") for row in top), top
    browser.save_screenshot(str(shots / "02-usage.png"))
    _no_page_errors(browser)


def test_create_use_and_revoke_a_key_in_the_console(stack, browser, shots) -> None:
    _sign_in(stack, browser)
    _go(browser, "keys")
    _one(browser, "#key-tenant").send_keys("acme")
    models = _one(browser, "#key-models")
    models.clear()
    models.send_keys("gpt-4o-mini")
    _one(browser, "#key-form button[type=submit]").click()
    secret = _until(
        "the new key shown once", lambda: (t := _one(browser, "#new-secret").text).startswith("sgk_") and t
    )
    kid = secret.split("_")[1]
    revoke_css = f"button.revoke[data-key='{kid}']"
    _one(browser, revoke_css)  # listed
    browser.save_screenshot(str(shots / "03-keys-created.png"))

    client = oai(stack, secret)
    ask: Callable[[], Any] = lambda: client.chat.completions.create(  # noqa: E731
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    answer = _until("the new key accepted through Envoy", lambda: ask(), timeout_s=5)
    assert answer.choices[0].message.content

    _one(browser, "#secret-done").click()
    assert _one(browser, "#new-secret").text == ""  # gone from the page once dismissed

    # Rotate: a new key shown once, usable at once; the old one stays valid for the overlap.
    rotate_css = f"button.rotate[data-key='{kid}']"
    _one(browser, rotate_css).click()
    _until("the rotate button armed", lambda: "Confirm" in _one(browser, rotate_css).text)
    _one(browser, rotate_css).click()
    rotated = _until(
        "the rotated key shown once", lambda: (t := _one(browser, "#new-secret").text) != secret and t
    )
    assert rotated.startswith("sgk_") and f"Replaces {kid}" in _one(browser, "#secret-note").text
    browser.save_screenshot(str(shots / "04-keys-rotated.png"))
    rotated_client = oai(stack, rotated)
    assert _until("the rotated key accepted through Envoy", lambda: rotated_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]), timeout_s=5)  # fmt: skip
    _one(browser, "#secret-done").click()
    _one(browser, revoke_css).click()
    _until("the revoke button armed", lambda: "Confirm" in _one(browser, revoke_css).text)
    _one(browser, revoke_css).click()
    _until("the revocation confirmed", lambda: f"Key {kid} revoked" in _one(browser, "#flash").text)
    browser.save_screenshot(str(shots / "05-keys-revoked.png"))

    def refused() -> bool:
        try:
            ask()
        except openai.AuthenticationError as exc:
            return exc.status_code == 401
        return False

    _until("the revoked key refused through Envoy (live key reload)", refused, timeout_s=5, every_s=0.2)
    keys = httpx.get(
        f"{admin_url(stack)}/admin/v1/keys/{kid}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert keys.json()["status"] == "revoked"
    _no_page_errors(browser)


def test_limits_audit_and_live_pages(stack, browser, seeded, shots) -> None:
    _sign_in(stack, browser)
    _go(browser, "limits")
    form_css = "form.limits-form[data-level=tenants][data-name=globex]"
    rpm = _one(browser, form_css + " input[name=rpm]")
    rpm.clear()
    rpm.send_keys("1000")
    _one(browser, form_css + " button[type=submit]").click()
    _until("the limits saved", lambda: "Saved the limits of tenants globex" in _one(browser, "#flash").text)
    got = httpx.get(
        f"{admin_url(stack)}/admin/v1/tenants/globex", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert got.json()["limits"]["rpm"] == 1000
    browser.save_screenshot(str(shots / "06-limits.png"))

    _go(browser, "audit")
    audit = httpx.get(
        f"{admin_url(stack)}/admin/v1/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert audit.status_code == 200, audit.text
    # The limits just saved in the page are the newest change: its entry is listed, as the API has it.
    newest = audit.json()["entries"][0]
    assert (newest["action"], newest["target"]) == ("tenant.limits", "tenant:globex")
    _until(
        "the page's limits change listed in the audit page",
        lambda: any("tenant.limits" in r.text and "tenant:globex" in r.text
                    for r in _by(browser, "#audit-table tbody tr")),
    )  # fmt: skip
    browser.save_screenshot(str(shots / "07-audit.png"))

    _go(browser, "live")

    def listed() -> list[Any] | None:
        rows = _by(browser, "#live-table tbody tr")
        return rows if len(rows) >= len(SEED) else None

    rows = _until("the live tail listing the seeded requests", listed)
    texts = [r.text for r in rows]
    assert any("globex" in t and "gpt-4o" in t and "200" in t for t in texts), texts
    # A new request appears in the tail by itself (polled every 2 s).
    oai(stack, stack.keys["globex"].key).chat.completions.create(
        model="claude-haiku", messages=[{"role": "user", "content": PROMPT}]
    )
    _until(
        "the new request in the tail", lambda: "claude-haiku" in _one(browser, "#live-table tbody tr").text
    )
    assert PROMPT not in browser.page_source  # metadata only
    # A hostile value in the ledger (written straight to the stream) is shown as text, never run.
    hostile = '<img src=x onerror="document.title=1">'
    store = redis.Redis.from_url(stack.sup.redis_url)
    try:
        store.xadd(
            STREAM, LedgerRecord(ts=time.time(), tenant="globex", model=hostile, status=200).to_fields()
        )
    finally:
        store.close()
    _until("the hostile name shown as text", lambda: hostile in _one(browser, "#live-table tbody tr").text)
    assert not _by(browser, "#live-table img") and browser.title == "Sidegate console"
    browser.save_screenshot(str(shots / "08-live.png"))
    _no_page_errors(browser)
