"""The batch leaderboard: the Pareto front, the references priced with the rows' data versions, and the
page itself, static and in headless Chromium (sorting, scatter markers, hostile paths shown as text)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from support import ROOT, headless_chromium
from eeki_label.batch.leaderboard import number, pareto_front, reference_points, render_leaderboard
from eeki_label.catalogue import load_catalogue
from eeki_label.cli import main

from leaderboard_rows import HOSTILE, row, synthetic_rows

TASK = "image-classification"
EDGE, SBC = "edge-gpu-batch1", "single-board-cpu"
GENERATED_AT = "2026-11-29T23:50:00+00:00"


# --------------------------------------------------------------------------------------------
# pareto_front


def test_pareto_front_keeps_the_points_no_other_beats_on_both():
    pts = [(1.0, 60.0), (2.0, 70.0), (3.0, 65.0), (4.0, 80.0), (5.0, 80.0), (0.5, 50.0)]
    assert pareto_front(pts) == [5, 0, 1, 3]  # energy ascending; (3, 65) and (5, 80) are dominated


def test_pareto_front_ties_and_equal_energies():
    # equal points do not dominate each other; at one energy only the best quality stays
    assert pareto_front([(1.0, 70.0), (1.0, 70.0), (1.0, 60.0), (2.0, 70.0)]) == [0, 1]
    # the same quality at a higher energy is dominated
    assert pareto_front([(2.0, 70.0), (1.0, 70.0)]) == [1]


def test_pareto_front_skips_missing_values_and_follows_the_metric_direction():
    pts = [(1.0, None), (None, 90.0), (float("nan"), 90.0), (0.0, 99.0), (-1.0, 99.0), (2.0, 10.0),
           (3.0, float("inf")), (4.0, ""), ("5", "20")]
    assert pareto_front(pts) == [5, 8]  # CSV text numbers count, missing and non-positive energies do not
    wer = [(1.0, 9.0), (2.0, 5.0), (3.0, 7.0), (4.0, 2.0)]  # a word error rate: lower is better
    assert pareto_front(wer, higher_is_better=False) == [0, 1, 3]
    assert pareto_front(wer) == [0]
    assert pareto_front([]) == []


def _dominated(p, q, hib):
    """q dominates p."""
    better_or_equal = q[0] <= p[0] and (q[1] >= p[1] if hib else q[1] <= p[1])
    return better_or_equal and q != p


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6).map(float), st.integers(0, 6).map(float)), max_size=14), st.booleans())
def test_pareto_front_matches_the_definition(pts, hib):
    front = pareto_front(pts, higher_is_better=hib)
    expected = {i for i, p in enumerate(pts) if not any(_dominated(p, q, hib) for q in pts)}
    assert set(front) == expected
    assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)


# --------------------------------------------------------------------------------------------
# reference_points


@pytest.fixture(scope="module")
def real_label(tmp_path_factory) -> dict:
    """One real ``assess`` (no transfer, no timed runs) of the bundled example as an image classifier
    with a declared quality, on two device classes: the references a label prices, to compare with."""
    out = tmp_path_factory.mktemp("label") / "label.json"
    code = main([str(a) for a in [
        "assess", ROOT / "examples" / "ppocr_mobile_v2_cls.onnx", "--input-shape", "x=1x3x48x192", "--runs", "0",
        "-d", EDGE, "-d", SBC, "--task", TASK, "--accuracy", "70", "--no-transfer", "--json", out, "-q"]])
    assert code == 0
    return json.loads(out.read_text())


def _rows_of(label_doc) -> list[dict]:
    rows = []
    for lab in label_doc["labels"]:
        g = lab["label"]
        ci = g.get("index_ci95") or [None, None]
        rows.append(row("examples/ppocr_mobile_v2_cls.onnx", lab["device_class"]["id"], cls=g["class"] or "",
                        index=g["index"], ci=tuple(ci), energy_j=lab["inference"]["energy_j"], quality=70.0,
                        reference_id=lab["reference"]["model_id"], reference_energy_j=lab["reference"]["energy_j"],
                        catalogue_version=lab["catalogue"]["version"], rules_version=lab["rules"]["version"],
                        device_data_version=lab["device_data"]["version"]))
    return rows


def test_reference_points_price_the_catalogue_references_as_the_label_does(real_label):
    rows = _rows_of(real_label) + [row("zoo/broken.onnx", "", task="", status="failed", exit_code=3)]
    points = reference_points(rows)
    refs = {m.id: m for m in load_catalogue("2.0.0").for_task(TASK)}
    assert len(refs) >= 10
    for dc in (EDGE, SBC):
        mine = [p for p in points if p["device_class"] == dc]
        assert {p["model_id"] for p in mine} == set(refs) and len(mine) == len(refs)
        for p in mine:
            assert p["task"] == TASK and p["unavailable"] is None and p["higher_is_better"] is True
            assert p["quality"] == refs[p["model_id"]].quality and p["quality_metric"] == "top1_percent"
            assert p["name"] == refs[p["model_id"]].name
            assert p["energy_j"] is not None and p["energy_j"] > 0  # all of them fit both classes
    by = {(p["device_class"], p["model_id"]): p["energy_j"] for p in points}
    for lab in real_label["labels"]:  # the label's own reference energy is the point's
        ref = lab["reference"]
        assert by[(lab["device_class"]["id"], ref["model_id"])] == pytest.approx(ref["energy_j"], rel=1e-12)
    # a single-board CPU spends more per image than an edge GPU on every reference
    assert all(by[(SBC, m)] > by[(EDGE, m)] for m in refs)


def test_reference_points_say_why_they_are_missing(tmp_path):
    rows = [row("a.onnx", EDGE, device_data_version="own-calibration-1"),
            row("b.onnx", EDGE, task="keyword-spotting", catalogue_version="1.0.0", device_data_version="1.0.0"),
            row("c.onnx", "no-such-class"),
            row("d.onnx", EDGE, status="failed"),
            row("e.onnx", EDGE, task="text-detection"),
            row("f.onnx", "host", method="measured")]
    points = reference_points(rows)
    missing = {p["task"] + "@" + p["device_class"]: p["unavailable"] for p in points if p["model_id"] is None}
    assert "own-calibration-1" in missing[f"{TASK}@{EDGE}"]
    assert "no-such-class" in missing[f"{TASK}@no-such-class"]
    assert "keyword-spotting" in missing[f"keyword-spotting@{EDGE}"]
    assert "measured on the assessing machine" in missing[f"{TASK}@host"]
    assert "without references" in missing[f"text-detection@{EDGE}"]  # a task the catalogue knows, pending
    assert not [p for p in points if p["model_id"] is not None]  # d.onnx failed: no section, no points

    # the batch's own device-data file prices them when its version is the rows' version
    own = json.loads((ROOT / "data" / "energy" / "device-classes-2.0.0.json").read_text())
    own["version"] = "own-calibration-1"
    path = tmp_path / "own.json"
    path.write_text(json.dumps(own))
    priced = reference_points(rows[:1], device_data=str(path))
    assert priced and all(p["unavailable"] is None and p["energy_j"] > 0 for p in priced)
    own["version"] = "another"
    path.write_text(json.dumps(own))
    wrong = reference_points(rows[:1], device_data=str(path))
    assert len(wrong) == 1 and "another" in wrong[0]["unavailable"]


# --------------------------------------------------------------------------------------------
# The page


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return synthetic_rows()


@pytest.fixture(scope="module")
def refs(rows) -> list[dict]:
    return reference_points(rows)


@pytest.fixture(scope="module")
def page_file(rows, refs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("board") / "leaderboard.html"
    path.write_text(render_leaderboard(rows, refs, title="Batch of zoo/", generated_at=GENERATED_AT), encoding="utf-8")
    return path


def test_template_ships_as_package_data():
    from importlib import resources

    assert resources.files("eeki_label.render.templates").joinpath("leaderboard.html.j2").is_file()


def test_page_is_self_contained_and_escapes_paths(page_file):
    page = page_file.read_text()
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page
    assert page.count("<script") == 1 and page.count("</script>") == 1  # ours only
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;.onnx" in page
    assert "truncated protobuf &lt;b&gt;" in page and "<b>" not in page


def test_page_summary_and_failures(page_file):
    page = page_file.read_text()
    assert re.search(r'id="count-models">8<', page) and re.search(r'id="count-ok">5<', page)
    assert re.search(r'id="count-skipped">1<', page) and re.search(r'id="count-failed">2<', page)
    assert re.search(r'id="catalogue-versions">2\.0\.0<', page)
    failed = page[page.index('id="failed"'):]
    assert "zoo/broken.onnx" in failed and "zoo/huge.onnx" in failed and ">3<" in failed and ">4<" in failed


def test_page_from_csv_rows_equals_the_page_from_jsonl_rows(rows, refs):
    """results.csv cells are text, missing values empty: the same page."""
    as_csv = [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
    assert render_leaderboard(as_csv, refs, title="t", generated_at="g") == \
        render_leaderboard(rows, refs, title="t", generated_at="g")


def test_page_without_graded_models_and_without_references():
    failed = [row("zoo/broken.onnx", "", task="", status="failed", exit_code=3, reason="bad")]
    page = render_leaderboard(failed, [], title="t", generated_at="g")
    assert 'id="no-sections"' in page and "zoo/broken.onnx" in page
    assert "<h2>Summary</h2>" in render_leaderboard([], [], title="t", generated_at="g")
    own = [row("a.onnx", EDGE, quality=70.0, energy_j=1e-3, device_data_version="own-calibration-1")]
    page = render_leaderboard(own, reference_points(own), title="t", generated_at="g")
    assert "References not shown" in page and "own-calibration-1" in page


def test_number_reads_jsonl_and_csv_values():
    assert number(1) == 1.0 and number("2.5") == 2.5 and number(" 3 ") == 3.0
    assert all(number(v) is None for v in (None, "", "n/a", float("nan"), float("inf"), True, [1]))


# --------------------------------------------------------------------------------------------
# In a browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = headless_chromium(tmp_path_factory, "1200,2400")
    # record script errors from the first line of the page on (CDP scripts are not subject to the CSP)
    catch = ("window.__errors = [];"
             "window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });")
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": catch})
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def loaded(browser, page_file):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page_file.resolve().as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    return browser


def _section(browser, dc):
    return browser.find_element("css selector", f'section.board-section[data-device-class="{dc}"]')


def _paths(browser, dc) -> list[str]:
    return [tr.get_attribute("data-path") for tr in _section(browser, dc).find_elements("css selector", "tbody tr")]


def _header(browser, dc, starts):
    return next(th for th in _section(browser, dc).find_elements("css selector", "thead th")
                if th.text.startswith(starts))


def test_page_loads_without_script_errors_and_runs_nothing_from_a_path(loaded):
    assert loaded.execute_script("return window.__errors") == []
    assert "pwned" not in loaded.title and loaded.title == "Batch of zoo/: leaderboard"
    assert loaded.execute_script("return document.scripts.length") == 1


def test_hostile_path_is_shown_as_text(loaded):
    cells = [tr.find_element("css selector", "td .mono").text
             for tr in _section(loaded, EDGE).find_elements("css selector", "tbody tr")]
    assert HOSTILE in cells
    failed = loaded.find_element("id", "failed-table").text
    assert "truncated protobuf <b>" in failed


def test_clicking_a_header_sorts_the_rows(loaded, rows):
    edge = [r for r in rows if r["device_class"] == EDGE]
    by_index = [r["path"] for r in sorted(edge, key=lambda r: r["index"])]
    assert _paths(loaded, EDGE) == by_index  # the page opens sorted by index

    _header(loaded, EDGE, "energy").click()
    assert _paths(loaded, EDGE) == [r["path"] for r in sorted(edge, key=lambda r: r["energy_j"])]
    _header(loaded, EDGE, "energy").click()
    assert _paths(loaded, EDGE) == [r["path"] for r in sorted(edge, key=lambda r: -r["energy_j"])]
    assert _header(loaded, EDGE, "energy").get_attribute("aria-sort") == "descending"

    quality = _header(loaded, EDGE, "quality")
    with_q = [r for r in edge if r["quality"] is not None]
    last = ["zoo/no_quality.onnx"]
    quality.click()  # numerically ascending; the model without quality last
    assert _paths(loaded, EDGE) == [r["path"] for r in sorted(with_q, key=lambda r: r["quality"])] + last
    quality.click()  # descending; still last
    assert _paths(loaded, EDGE) == [r["path"] for r in sorted(with_q, key=lambda r: -r["quality"])] + last

    nnc = _header(loaded, EDGE, "after NNC")  # numbers, not text: 12 MB after 2 MB
    nnc.click()
    assert _paths(loaded, EDGE) == [r["path"] for r in sorted(edge, key=lambda r: r["transfer_bytes"])]
    index = _header(loaded, EDGE, "index")
    index.click()  # ascending again (40 after 5), then descending
    assert _paths(loaded, EDGE) == by_index
    index.click()
    assert _paths(loaded, EDGE) == by_index[::-1]

    _header(loaded, EDGE, "model").click()
    assert _paths(loaded, EDGE) == sorted(r["path"] for r in edge)
    assert _paths(loaded, SBC) == by_index  # the other section is left alone


def test_scatter_marks_models_front_and_references(loaded, refs, tmp_path):
    for dc in (EDGE, SBC):
        s = _section(loaded, dc)
        models = s.find_elements("css selector", "svg circle.model-mark")
        assert len(models) == 5  # six models, one without a declared quality is listed, not plotted
        front = s.find_elements("css selector", "svg circle.model-mark.front")
        front_paths = {loaded.execute_script(
            "return arguments[0].closest('section').querySelector('tr[data-n=\"' + arguments[1] + '\"]').dataset.path",
            c, c.get_attribute("data-n")) for c in front}
        assert front_paths == {HOSTILE, "zoo/mobilenet_a.onnx", "zoo/effnet_c.onnx"}
        assert s.find_elements("css selector", "svg path.pareto-line")
        expected_refs = [p for p in refs if p["device_class"] == dc and p["energy_j"] is not None]
        marks = s.find_elements("css selector", "svg g.ref-mark")
        assert len(marks) == len(expected_refs) >= 10
        assert {m.get_attribute("data-model-id") for m in marks} == {p["model_id"] for p in expected_refs}
        labels = {t.text for t in s.find_elements("css selector", "svg text.ref-label")}
        assert {p["name"] for p in expected_refs} == labels
        assert "zoo/no_quality.onnx" in s.find_element("css selector", ".no-quality").text
    shot = tmp_path / "leaderboard.png"
    loaded.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_front_of_a_lower_is_better_metric():
    """Word error rate: the front keeps the models no other beats on energy and a lower WER."""
    dc, task = "datacenter-gpu-batch1", "speech-recognition"
    rows = [row("asr/small.onnx", dc, task=task, cls="C", index=2.1, energy_j=0.5, quality=4.1),
            row("asr/big.onnx", dc, task=task, cls="F", index=9.0, energy_j=2.0, quality=2.5),
            row("asr/worse.onnx", dc, task=task, cls="D", index=4.0, energy_j=1.0, quality=4.5)]
    refs = reference_points(rows)
    assert refs and all(p["higher_is_better"] is False and p["unavailable"] is None for p in refs)
    page = render_leaderboard(rows, refs, title="t", generated_at="g")
    paths = dict(re.findall(r'<tr data-n="(\d+)" data-path="([^"]+)"', page))
    front = {paths[n] for n in re.findall(r'<circle class="model-mark front" data-n="(\d+)"', page)}
    assert front == {"asr/small.onnx", "asr/big.onnx"}
    assert "lower is better, axis reversed" in page
