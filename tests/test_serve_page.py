"""The web page at `/` in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium)
against the real server: Speak streams pcm into the page's Web Audio player, Stop ends the generation on the
server, a clip from ../shared and a recording from the (fake) microphone become voices in the picker, and
the server's errors show in words. In CI a missing browser is a failure, not a skip."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from _reference import IN_CI, shared_path
from _server import running_server

# A stream is pcm at 24 kHz, one 80 ms latent frame per chunk.
SAMPLE_RATE = 24000
FRAME_SAMPLES = 1920
WAIT_SECONDS = 120  # bound of every wait on the page, generous for a loaded CI machine
API_KEY = "page-test-key"


def _missing(what: str):
    if IN_CI:
        pytest.fail(f"{what} is required in CI", pytrace=False)
    pytest.skip(f"{what} not available")


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        _missing("chromium and chromedriver (apt-get install chromium chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = _browser_paths()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # without these Chromium phones home at start, and on a closed network its connections are refused
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        # a microphone that plays a test tone, allowed without a prompt: the recording path runs for real
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--window-size=1000,1220",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server():
    with running_server("--workers", "1") as server:
        yield server


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.05).until(condition, f"waited for {what}")


def _by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def _stats(driver) -> dict:
    return driver.execute_script("return Object.assign({}, window.pocketStats)")


def _state(driver) -> str:
    return driver.find_element("tag name", "body").get_attribute("data-state")


def _voice_options(driver) -> dict[str, str]:
    """value -> visible text of the picker's options."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#voice option')].map(o => [o.value, o.text]))"
    )


def _open(driver, server) -> None:
    driver.get(server.url + "/")
    _wait(driver, lambda d: _voice_options(d), "the voice picker to fill")


def _set_text(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = _by_id(driver, "text")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    if text:
        box.send_keys(text)


def _speak(driver) -> None:
    before = _stats(driver)["requests"]
    _by_id(driver, "speak").click()
    _wait(driver, lambda d: _stats(d)["requests"] > before and _state(d) != "speaking", "the request to end")


def _downloaded_wav_bytes(driver) -> int:
    """Size of the WAV behind the Download link, read in the page."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(document.getElementById('download').href).then(r => r.blob()).then(b => done(b.size));"
    )


def test_speak_streams_pcm_into_the_page(browser, server, screenshots):
    _open(browser, server)
    assert _voice_options(browser) == {"synthetic": "synthetic"}
    _set_text(browser, "Hello from the page. It plays while the rest is generated.")
    _speak(browser)
    assert _state(browser) == "done", _by_id(browser, "speak-error").text
    stats = _stats(browser)
    samples = stats["samplesReceived"]
    # whole frames: the page joined samples split across network reads
    assert samples > 0 and samples % FRAME_SAMPLES == 0, samples
    assert stats["lastError"] is None
    assert browser.find_element("tag name", "body").get_attribute("data-samples-received") == str(samples)
    assert re.fullmatch(r"\d+ ms", _by_id(browser, "first-audio").text)
    assert _by_id(browser, "audio-seconds").text == f"{samples / SAMPLE_RATE:.2f} s"
    assert re.fullmatch(r"\d+\.\d\d×", _by_id(browser, "realtime-factor").text)
    assert _by_id(browser, "download").get_attribute("aria-disabled") == "false"
    assert _downloaded_wav_bytes(browser) == 44 + 2 * samples
    browser.save_screenshot(str(screenshots / "spoken.png"))


def test_stop_ends_the_generation_on_the_server(browser, server):
    _open(browser, server)
    # long enough that the stream is still running when Stop is pressed
    _set_text(browser, " ".join(f"Sentence number {i} of a long text that keeps the server busy." for i in range(60)))
    _by_id(browser, "speak").click()
    _wait(browser, lambda d: _stats(d)["samplesReceived"] > 0 and _state(d) == "speaking", "the first audio")
    _by_id(browser, "stop").click()
    _wait(browser, lambda d: _state(d) != "speaking", "the request to end")
    assert _state(browser) == "stopped"
    assert _by_id(browser, "speak-status").text == "Stopped."
    # the server saw the client leave and gave the instance back
    deadline = time.monotonic() + WAIT_SECONDS
    while httpx.get(f"{server.url}/health").json()["busy"] != 0 or " disconnected " not in server.log():
        assert time.monotonic() < deadline, "the server kept generating after Stop"
        time.sleep(0.1)


def test_clone_from_a_file_and_speak_with_it(browser, server, screenshots):
    _open(browser, server)
    _by_id(browser, "voice-name").send_keys("Speaker from a file")
    _by_id(browser, "voice-file").send_keys(str(shared_path("assets", "voices", "speaker-48k.wav")))
    _by_id(browser, "clone").click()
    status = _by_id(browser, "clone-status")
    _wait(browser, lambda d: "ready" in status.text or _by_id(d, "clone-error").text, "the clone to finish")
    assert _by_id(browser, "clone-error").text == ""
    registered = {v["id"]: v["name"] for v in httpx.get(f"{server.url}/v1/audio/voices").json()["data"]}
    voice_id = next(i for i, name in registered.items() if name == "Speaker from a file")
    assert _voice_options(browser)[voice_id] == f"Speaker from a file ({voice_id})"
    assert _by_id(browser, "voice").get_attribute("value") == voice_id  # selected once cloned
    before = _stats(browser)["samplesReceived"]
    _set_text(browser, "Now in the cloned voice.")
    _speak(browser)
    assert _state(browser) == "done" and _stats(browser)["samplesReceived"] > before
    assert f"voice={voice_id}" in server.log()
    browser.save_screenshot(str(screenshots / "cloned.png"))


def test_record_from_the_microphone(browser, server):
    _open(browser, server)
    record = _by_id(browser, "record")
    assert record.is_enabled()
    known = set(_voice_options(browser))
    record.click()
    _wait(browser, lambda d: "Recording" in _by_id(d, "record-note").text, "the recording to start")
    time.sleep(1.5)  # a clip of the fake microphone's tone
    record.click()
    status = _by_id(browser, "clone-status")
    _wait(browser, lambda d: "ready" in status.text or _by_id(d, "clone-error").text, "the recording's clone")
    assert _by_id(browser, "clone-error").text == ""
    new = set(_voice_options(browser)) - known
    assert len(new) == 1 and _by_id(browser, "voice").get_attribute("value") in new


def test_server_errors_show_in_words(browser, server, screenshots):
    _open(browser, server)
    _set_text(browser, "")
    _speak(browser)
    expected = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "", "response_format": "pcm"})
    assert expected.status_code == 400
    message = expected.json()["error"]["message"]
    error = _by_id(browser, "speak-error").text
    assert error == f"{message} (HTTP 400)"
    assert _stats(browser)["lastError"] == error
    assert _state(browser) == "HTTP 400"
    browser.save_screenshot(str(screenshots / "error.png"))


def test_api_key_is_asked_for_and_sent(browser):
    with running_server("--workers", "1", "--api-key", API_KEY) as server:
        browser.get(server.url + "/")  # a new origin (port): no key kept from before
        error = _by_id(browser, "speak-error")
        _wait(browser, lambda d: error.text, "the 401 to show")
        assert "Enter the server's API key" in error.text and "(HTTP 401)" in error.text
        assert _by_id(browser, "key-box").get_attribute("open") is not None
        key = _by_id(browser, "api-key")
        key.send_keys(API_KEY)
        key.send_keys("\t")  # leaving the field commits the key and lists the voices again
        _wait(browser, lambda d: _voice_options(d), "the voices with the key")
        assert error.text == ""
        _set_text(browser, "With the key.")
        _speak(browser)
        assert _state(browser) == "done", error.text
