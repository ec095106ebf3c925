"""The HTML report: self-contained, escaped, and its what-if widgets recompute in a real browser
(headless Chromium driven by Selenium; Debian's ``chromium`` and ``chromium-driver``, see .ci/run)."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from support import headless_chromium
from eeki_label.models import Label
from eeki_label.render import html as html_mod
from eeki_label.render.html import energy_parameters, render_html

from render_support import (  # noqa: F401  (fixtures)
    ISSUED_AT, example_outputs, markup_model, run,
)



def script_blocks(page: str) -> dict:
    return dict(re.findall(r'<script type="application/json" id="([a-z-]+)">(.*?)</script>', page, flags=re.S))


def test_template_ships_as_package_data():
    assert resources.files("eeki_label.render.templates").joinpath("report.html.j2").is_file()


def test_report_loads_nothing_from_the_network(example_outputs):
    page = example_outputs["html"].read_text()
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # the CSP forbids any fetch


def test_embedded_label_json_is_the_label_and_cannot_close_the_script(markup_model, tmp_path):
    out = tmp_path / "r.html"
    assert run(["assess", markup_model, "--runs", "0", "-d", "edge-gpu-batch1", "--issued-at", ISSUED_AT,
                "--html", out, "--json", tmp_path / "l.json", "-q"]) == 0
    page = out.read_text()
    assert page.count("<script") == 3 and page.count("</script>") == 3
    blocks = script_blocks(page)
    assert json.loads(blocks["label-json"]) == json.loads((tmp_path / "l.json").read_text())
    assert "<" not in blocks["label-json"] and "\\u003c/script\\u003e" in blocks["label-json"]
    # model text is shown escaped, never as markup
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;font color=&#39;red&#39;&gt;" in page
    assert "<b>bold</b>" not in page and "<font" not in page


def _driver(tmp_path_factory):
    return headless_chromium(tmp_path_factory, "1100,2600")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = _driver(tmp_path_factory)
    yield driver
    driver.quit()


def _open(browser, path):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(path.resolve().as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")


def _value(browser, element_id) -> float:
    return float(browser.find_element("id", element_id).get_attribute("data-value"))


def _type(browser, element_id, text):
    el = browser.find_element("id", element_id)
    el.clear()
    el.send_keys(text)


def _set(browser, element_id, value):
    browser.execute_script(
        "var e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input', {bubbles: true}));", element_id, str(value))


def test_what_if_recomputes_energy_co2_cost_and_car_km(browser, example_outputs, tmp_path):
    from selenium.webdriver.support.ui import Select

    lab = example_outputs["label"]
    energy_j = lab["inference"]["energy_j"]
    params = energy_parameters()
    _open(browser, example_outputs["html"])
    assert _value(browser, "out-energy-kwh") == pytest.approx(energy_j * 100e6 / 3.6e6, rel=1e-9)

    _type(browser, "inferences", "250")
    kwh = energy_j * 250e6 / 3.6e6
    assert _value(browser, "out-energy-kwh") == pytest.approx(kwh, rel=1e-9)
    assert browser.find_element("id", "out-energy-kwh").text not in ("", "n/a")

    Select(browser.find_element("id", "location")).select_by_value("FR")
    fr = next(loc for loc in params["locations"] if loc["id"] == "FR")["g_per_kwh"]
    assert _value(browser, "out-co2-kg") == pytest.approx(kwh * fr / 1000, rel=1e-9)
    assert _value(browser, "out-car-km") == pytest.approx(kwh * fr / params["car_g_per_km"], rel=1e-9)

    _set(browser, "price", 0.25)
    assert _value(browser, "out-cost-eur") == pytest.approx(kwh * 0.25, rel=1e-9)
    assert browser.find_element("id", "price-value").text == "0.250"
    # the plot follows the volume: 21 points, last one at the total energy
    pts = browser.find_element("css selector", "#plot-inference polyline").get_attribute("points").split()
    assert len(pts) == 21
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


def _labels(doc) -> list:
    return doc["labels"] if "labels" in doc else [doc]


@pytest.mark.parametrize("mode", ["periodic-updates", "one-time", "federated-learning"])
def test_transfer_what_if_defaults_reproduce_the_labels_scenarios(browser, example_outputs, mode):
    """Opened as written, the transfer widgets show the label's own scenario figures (JSON): its
    devices, updates, rounds, link, powers, grid, and the codec energy of the transfer device."""
    from selenium.webdriver.support.ui import Select

    lab = _labels(example_outputs["label"])[0]
    t = lab["transfer"]
    scenario = next(s for s in t["scenarios"] if s["id"] == mode)
    _open(browser, example_outputs["html"])
    assert browser.find_element("id", "transfer-mode").get_attribute("value") == "periodic-updates"
    Select(browser.find_element("id", "transfer-mode")).select_by_value(mode)
    plain, nnc = _value(browser, "out-transfer-plain-wh"), _value(browser, "out-transfer-nnc-wh")
    assert plain == pytest.approx(scenario["uncompressed_wh"], rel=1e-9)
    assert nnc == pytest.approx(scenario["nnc_wh"], rel=1e-9)
    assert _value(browser, "out-transfer-saving-pct") == pytest.approx(scenario["nnc_saving_share"] * 100, rel=1e-9)
    car = energy_parameters()["car_g_per_km"]
    saved_g = scenario["uncompressed_co2_g"] - scenario["nnc_co2_g"]
    assert _value(browser, "out-transfer-km") == pytest.approx(saved_g / car, rel=1e-9)
    assert "the label's own inputs" in browser.find_element("id", "out-transfer-note").text
    # the shown (rounded) figure is the label's, to the digits shown
    shown = float(browser.find_element("id", "out-transfer-nnc-wh").text.replace(",", ""))
    assert shown == pytest.approx(scenario["nnc_wh"], rel=1e-3)


def test_transfer_what_if_follows_devices_rounds_and_links(browser, example_outputs, tmp_path):
    """Changed inputs reprice with the label's device figures (codec seconds of the transfer device,
    not the assessing host's measured encode time)."""
    from selenium.webdriver.support.ui import Select

    t = _labels(example_outputs["label"])[0]["transfer"]
    _open(browser, example_outputs["html"])
    Select(browser.find_element("id", "transfer-mode")).select_by_value("federated-learning")
    _type(browser, "devices", "3")
    _type(browser, "rounds", "7")
    _type(browser, "link-up", "22.51")
    _type(browser, "link-down", "66.42")
    power, codec_w = t["transfer_power_w"], t["codec_power_w"]

    def per_transfer(size):
        return power * (size * 8 / 22.51e6 + size * 8 / 66.42e6)

    enc_j, dec_j = codec_w * t["device_encode_s"], codec_w * t["device_decode_s"]
    plain_wh = 7 * 6 * per_transfer(t["original_bytes"]) / 3600
    nnc_wh = 7 * (6 * per_transfer(t["compressed_bytes"]) + 4 * enc_j + 6 * dec_j) / 3600
    assert _value(browser, "out-transfer-plain-wh") == pytest.approx(plain_wh, rel=1e-9)
    assert _value(browser, "out-transfer-nnc-wh") == pytest.approx(nnc_wh, rel=1e-9)
    assert _value(browser, "out-transfer-saving-pct") == pytest.approx((plain_wh - nnc_wh) / plain_wh * 100, rel=1e-9)
    assert "the label's own inputs" not in browser.find_element("id", "out-transfer-note").text
    # one uncompressed transfer at the study's links reproduces the study's 0.0878 Wh (BRIEF section 3)
    assert per_transfer(46_800_000) / 3600 == pytest.approx(0.0878, rel=0.01)
    pts = browser.find_element("css selector", "#plot-transfer polyline").get_attribute("points").split()
    assert len(pts) == 8
    browser.execute_script("document.getElementById(\"transfer-whatif\").scrollIntoView()")
    browser.save_screenshot("/tmp/wt14-transfer.png")
