"""The web page of `digits serve`, used as a person would: Debian's headless chromium via selenium.

`make test` installs chromium and chromedriver (Makefile target `browser`); without them these
tests are skipped.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from digits_cli.config import Settings
from digits_cli.inference import load_model
from digits_cli.server import create_app

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "tests" / "data" / "real" / "seed-api-test.png"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# Everything that could make the browser reach beyond this machine is switched off.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,1000",
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (`make browser` installs them)",
)


@pytest.fixture(scope="module")
def settings() -> Settings:
    # The one-epoch test model is unsure of many digits: keep them all, whatever the confidence.
    return Settings(segment={"min_confidence": 0.0})


@pytest.fixture(scope="module")
def base_url(small_onnx: Path, settings: Settings) -> Iterator[str]:
    """A real uvicorn serving the app on a free loopback port, in a thread."""
    import uvicorn

    model = load_model(str(small_onnx), settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(
        create_app(settings, model=model), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: selenium never looks for (or downloads) a driver of its own.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for_result(driver: Any) -> None:
    """Until the page shows an annotated picture that has loaded, or an error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d: Any) -> bool:
        if d.find_element(By.ID, "error").is_displayed():
            return True
        picture = d.find_element(By.ID, "annotated")
        return bool(
            picture.is_displayed() and d.execute_script("return arguments[0].naturalWidth", picture)
        )

    WebDriverWait(driver, 30).until(shown)
    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed(), error.text


def test_uploading_a_picture_shows_it_annotated_with_the_text_read(
    browser: Any, base_url: str
) -> None:
    from selenium.webdriver.common.by import By

    expected = httpx.post(
        f"{base_url}/predictions",
        files={"file": (PICTURE.name, PICTURE.read_bytes(), "image/png")},
        timeout=30,
    ).json()
    browser.get(base_url + "/")
    browser.find_element(By.ID, "file").send_keys(str(PICTURE))
    wait_for_result(browser)
    picture = browser.find_element(By.ID, "annotated")
    size = browser.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", picture
    )
    assert size == [expected["width"], expected["height"]]
    assert browser.find_element(By.ID, "text").text == expected["text"].strip()
    assert expected["text"].strip()
    rows = browser.find_elements(By.CSS_SELECTOR, "#digits tbody tr")
    assert len(rows) == len(expected["digits"]) > 0
    status = browser.find_element(By.ID, "status").text
    assert status.startswith(f"{len(rows)} digit"), status
    assert PICTURE.name in status


def test_drawing_with_the_pointer_sends_the_drawing_and_shows_the_result(
    browser: Any, base_url: str
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(base_url + "/")
    pad = browser.find_element(By.ID, "pad")
    stroke = ActionChains(browser)
    # a "7" left of the pad's centre: a bar to the right, then down and back to the left
    stroke.move_to_element_with_offset(pad, -170, -50).click_and_hold()
    for _ in range(6):
        stroke.move_by_offset(10, 0)
    for _ in range(11):
        stroke.move_by_offset(-4, 10)
    stroke.release().perform()
    browser.find_element(By.ID, "read-drawing").click()
    wait_for_result(browser)
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("1 digit found in drawing.png "), status
    assert len(browser.find_elements(By.CSS_SELECTOR, "#digits tbody tr")) == 1
    assert browser.find_element(By.ID, "text").text == "7"


def test_the_api_page_shows_every_operation_and_reads_an_uploaded_picture(
    browser: Any, base_url: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(base_url + "/docs")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
    shown = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/predictions", "/probabilities", "/annotations", "/health", "/ready"} <= shown
    operation = browser.find_element(By.ID, "operations-default-post_predictions")
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    WebDriverWait(browser, 10).until(
        lambda d: operation.find_elements(By.CSS_SELECTOR, "input[type=file]")
    )
    operation.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(PICTURE))
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = WebDriverWait(browser, 30).until(
        lambda d: operation.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
        )
    )
    assert status[0].text == "200"
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded and all(url.startswith(base_url + "/") for url in loaded), loaded
