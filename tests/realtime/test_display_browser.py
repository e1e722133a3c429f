"""The display pages in a real headless Chromium, driven by Selenium and Debian's chromedriver.

Chromium and chromedriver come from Debian's packages (``make browser`` installs them when run as root);
without them the test skips with the reason. Screenshots of both pages are written under the test's
temporary folder and, if ``THERAMARK_TEST_ARTIFACTS`` is set, copied there.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the display needs starlette")
pytest.importorskip("uvicorn", reason="the display needs uvicorn")
webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium is not installed (pip install selenium)")

from theramark.realtime.display import DisplayServer  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's 'chromium' and 'chromium-driver' packages (make browser installs them as root)")

RUN = {"n_volumes": 40, "tr": 2.0, "rois": ["amygdala_l"], "feedback": "roi_psc", "fd_threshold": 0.5,
       "blocks": [{"onset": 0.0, "duration": 20.0, "trial_type": "baseline"},
                  {"onset": 20.0, "duration": 20.0, "trial_type": "regulate"},
                  {"onset": 40.0, "duration": 20.0, "trial_type": "baseline"},
                  {"onset": 60.0, "duration": 20.0, "trial_type": "regulate"}],
       "instructions": {"regulate": "Think of a happy memory", "baseline": "Rest"}}


def _record(v, feedback=None, block=None):
    missing = v in (7, 19)
    nan = float("nan")
    return {"volume": v, "status": "missing" if missing else "ok", "t_ready": 2.0 * v, "t_feedback": 2.0 * v,
            "roi": nan if missing else 100 + (v % 10 - 5) * 0.3,
            "roi_amygdala_l": nan if missing else 0.1 * v,
            "feedback": nan if missing else (feedback if feedback is not None else (v % 10) / 10),
            "fd": 0.9 if v == 12 else 0.05 * (v % 4),
            "block": block or ("baseline" if (v - 1) // 10 % 2 == 0 else "regulate"),
            "latency_ms": 15.0 + v % 5, "message": "no volume from the scanner" if missing else ""}


def _wait(condition, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("display-screenshots")


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def server():
    display = DisplayServer(host="127.0.0.1", port=0)
    display.start()
    display.set_run_info(RUN)
    yield display
    display.stop()


def _save(driver, artifacts: Path, name: str) -> Path:
    path = artifacts / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    assert path.stat().st_size > 1000
    target = os.environ.get("THERAMARK_TEST_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(target) / name)
    return path


def _fill_fraction(driver):
    """The bar's drawn height over the thermometer's inner height (after the CSS transition)."""
    return driver.execute_script(
        "const t = document.getElementById('thermometer'), f = document.getElementById('fill');"
        "return f.getBoundingClientRect().height / t.clientHeight;")


def _settled_fraction(driver, target):
    return _wait(lambda: (lambda f: f if abs(f - target) < 0.01 else None)(_fill_fraction(driver)),
                 what=f"the bar to reach {target}")


def test_participant_bar_follows_feedback_and_instruction_follows_block(browser, server, artifacts):
    browser.get(server.url + "/")
    instruction = browser.find_element("id", "instruction")
    thermometer = browser.find_element("id", "thermometer")
    # before any volume: the first block's instruction
    _wait(lambda: instruction.text == "Rest", what="the first block's instruction")

    server.publish(_record(1, feedback=0.2, block="baseline"))
    _wait(lambda: thermometer.get_attribute("data-value") == "0.2", what="feedback 0.2")
    assert instruction.text == "Rest"
    low = _settled_fraction(browser, 0.2)

    server.publish(_record(11, feedback=0.8, block="regulate"))
    _wait(lambda: thermometer.get_attribute("data-value") == "0.8", what="feedback 0.8")
    _wait(lambda: instruction.text == "Think of a happy memory", what="the regulate instruction")
    high = _settled_fraction(browser, 0.8)
    assert high > low + 0.5
    _save(browser, artifacts, "participant.png")

    # a volume without feedback (missing, or between intermittent updates) holds the bar
    server.publish(_record(7))  # missing: feedback NaN
    _wait(lambda: thermometer.get_attribute("data-volume") == "7", what="volume 7")
    assert thermometer.get_attribute("data-value") == "0.8"
    assert abs(_fill_fraction(browser) - 0.8) < 0.01
    # out-of-range values are clipped to the thermometer
    server.publish(_record(12, feedback=1.7, block="regulate"))
    _wait(lambda: thermometer.get_attribute("data-value") == "1", what="clipped feedback")
    # the instruction is large (projector) and nothing else is on screen
    size = float(browser.execute_script(
        "return parseFloat(getComputedStyle(document.getElementById('instruction')).fontSize)"))
    assert size >= 48
    visible = browser.execute_script(
        "return Array.from(document.body.querySelectorAll('*')).filter(e => e.offsetWidth > 8 &&"
        " getComputedStyle(e).visibility !== 'hidden' && !['SCRIPT','MAIN'].includes(e.tagName))"
        ".map(e => e.id)")
    assert sorted(visible) == ["fill", "instruction", "thermometer"]

    # new run info reaches an open page: the bar can be limited to the regulation blocks
    server.set_run_info({**RUN, "feedback_blocks": ["regulate"]})
    server.publish(_record(21, feedback=0.5, block="baseline"))
    _wait(lambda: instruction.text == "Rest", what="the baseline instruction")
    _wait(lambda: not thermometer.is_displayed(), what="the bar hidden during baseline")
    server.publish(_record(31, feedback=0.5, block="regulate"))
    _wait(lambda: thermometer.is_displayed(), what="the bar back in regulate")


def test_operator_page_shows_every_volume_even_when_opened_mid_run(browser, server, artifacts):
    n_before, n_after = 25, 6
    for v in range(1, n_before + 1):
        server.publish(_record(v))
    server.message("volume 7 did not arrive within one TR", level="warning")
    browser.get(server.url + "/operator")  # late join: history comes with the snapshot

    def rows():
        return browser.execute_script("return document.querySelectorAll('#volumes tbody tr').length")

    _wait(lambda: rows() == n_before, what=f"{n_before} table rows")
    _wait(lambda: browser.find_element("id", "plot-roi").get_attribute("data-n") == str(n_before - 2),
          what="the ROI trace's points")
    for v in range(n_before + 1, n_before + n_after + 1):
        server.publish(_record(v))
    server.message("FD 0.9 mm at volume 12", level="error")
    n = n_before + n_after
    _wait(lambda: rows() == n, what=f"{n} table rows")
    _wait(lambda: browser.find_element("id", "progress").text == f"volume {n} / 40", what="the progress")

    ok = [v for v in range(1, n + 1) if v not in (7, 19)]
    assert browser.find_element("id", "plot-roi").get_attribute("data-n") == str(len(ok))
    assert browser.find_element("id", "plot-feedback").get_attribute("data-n") == str(len(ok))
    assert browser.find_element("id", "plot-fd").get_attribute("data-n") == str(n)
    assert browser.find_element("id", "plot-latency").get_attribute("data-n") == str(n)
    # the latency plot names the TR budget (2000 ms) instead of flattening 20 ms latencies under it
    assert "TR (ms) 2000" in browser.find_element("css selector", "#plot-latency text.off-scale").text
    # the operator can switch the ROI plot to a named ROI's series
    from selenium.webdriver.support.select import Select

    Select(browser.find_element("id", "roi-choice")).select_by_visible_text("amygdala_l")
    _wait(lambda: browser.execute_script(
        "return document.querySelector('#plot-roi path.trace').dataset.series") == "roi_amygdala_l",
        what="the amygdala_l series")
    assert browser.find_element("id", "plot-roi").get_attribute("data-n") == str(len(ok))
    # the FD plot draws the threshold line
    assert browser.execute_script("return document.querySelectorAll('#plot-fd line.threshold').length") == 1
    volumes = browser.execute_script(
        "return Array.from(document.querySelectorAll('#volumes tbody tr')).map(r => +r.dataset.volume)")
    assert sorted(volumes) == list(range(1, n + 1))
    issues = browser.execute_script(
        "return Array.from(document.querySelectorAll('#issues li')).map(li => li.textContent)")
    assert [i.split(":")[0] for i in issues] == ["volume 7", "volume 19"]
    assert "no volume from the scanner" in issues[0]
    messages = [m.text for m in browser.find_elements("css selector", "#messages li")]
    assert any("FD 0.9 mm" in m for m in messages) and any("volume 7 did not arrive" in m for m in messages)
    assert browser.find_element("id", "connection").text == "connected"
    _save(browser, artifacts, "operator.png")

    # the connection status tells the operator when the display server is gone
    server.stop()
    _wait(lambda: browser.find_element("id", "connection").text.startswith("disconnected"),
          what="the disconnected status")
