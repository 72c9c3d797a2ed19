"""The docs page in a real headless Chromium: served locally, complete, and usable.

Needs Debian's ``chromium`` and ``chromium-driver``. Locally the test skips when
they are absent; CI installs them and sets ``MSGAPI_TEST_REQUIRE_BROWSER=1``,
which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from conftest import PASSWORD, http_json

ROOT = Path(__file__).resolve().parent.parent
HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("MSGAPI_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail("MSGAPI_TEST_REQUIRE_BROWSER=1 but chromium or chromedriver is missing")
        pytest.skip("the browser test needs Debian's chromium and chromium-driver")
    return chromium, driver


@pytest.fixture
def browser():
    chromium, driver_path = _browser_paths()
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1400,2000",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver path: Selenium Manager never tries to download anything.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _wait_for(driver, css: str, timeout: float = 30.0):
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.element_to_be_clickable(("css selector", css)))


def test_docs_page_lists_every_operation_and_creates_a_message(live_server, browser):
    server = live_server()
    assert http_json(server.url, "POST", "/api/auth/register/", {"username": "browser", "password": PASSWORD})[0] == 201
    access = http_json(server.url, "POST", "/api/auth/token/", {"username": "browser", "password": PASSWORD})[1][
        "access"
    ]

    browser.get(server.url + "/")
    _wait_for(browser, ".opblock")
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    expected = {
        (method.upper(), path) for path, item in spec["paths"].items() for method in item if method in HTTP_METHODS
    }
    shown = {
        (
            block.find_element("css selector", ".opblock-summary-method").text.strip(),
            block.find_element("css selector", ".opblock-summary-path").get_attribute("data-path"),
        )
        for block in browser.find_elements("css selector", ".opblock")
    }
    assert shown == expected

    # Authorize with a token from the API.
    _wait_for(browser, ".btn.authorize").click()
    _wait_for(browser, ".auth-container input").send_keys(access)
    _wait_for(browser, ".auth-btn-wrapper .btn.modal-btn.auth.authorize").click()
    _wait_for(browser, ".auth-btn-wrapper .btn-done").click()

    # Try it out: POST /api/messages.
    _wait_for(browser, "#operations-messages-createMessage .opblock-summary").click()
    _wait_for(browser, "#operations-messages-createMessage .try-out__btn").click()
    body = _wait_for(browser, "#operations-messages-createMessage textarea.body-param__text")
    body.clear()
    body.send_keys(json.dumps({"content": "made in the browser"}))
    _wait_for(browser, "#operations-messages-createMessage .execute").click()
    deadline = time.monotonic() + 30
    status = ""
    while time.monotonic() < deadline and status != "201":
        cells = browser.find_elements(
            "css selector", "#operations-messages-createMessage .live-responses-table tbody .response-col_status"
        )
        status = cells[0].text.strip() if cells else ""
        time.sleep(0.2)
    assert status == "201"

    listed = http_json(server.url, "GET", "/api/messages")[1]
    assert [m["content"] for m in listed] == ["made in the browser"]
    assert listed[0]["author"] == "browser"

    # The token lives only in the page, never in the browser's storage.
    stored = browser.execute_script(
        "return JSON.stringify([Object.assign({}, window.localStorage), Object.assign({}, window.sessionStorage)])"
    )
    assert access not in stored

    origin = server.url
    outside = [url for url in _requested_urls(browser) if not url.startswith((origin, "data:", "blob:"))]
    assert outside == [], f"the docs page requested outside resources: {outside}"
