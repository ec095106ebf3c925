"""The SVG badge rendered by headless Chromium (Debian's ``chromium`` and ``chromium-driver``, as in
tests/render/test_render_html.py): it loads as an image of the size it declares, and the pixels of its
message half are the class colour. The screenshot is written to EEKI_BADGE_SCREENSHOT when set (for a
person to look at)."""

from __future__ import annotations

import base64
import os

import pytest

from support import headless_chromium
from eeki_label.export import export_text
from eeki_label.export.common import source_of
from eeki_label.models import LabelSet
from eeki_label.render.common import CLASS_COLOURS
from eeki_label.verify import read_label_file

from export_support import signed_set, key  # noqa: F401  (fixtures)



@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = headless_chromium(tmp_path_factory, "520,400")
    yield driver
    driver.quit()


def badges(path) -> list[tuple[str, str]]:
    """(class letter, SVG) for every class: the signed label's first label with its class replaced (the
    badge's text and colour depend only on the class), plus a not-gradable one."""
    _, doc = read_label_file(path)
    lab = doc.labels[0] if hasattr(doc, "labels") else doc
    out = []
    for letter in [*CLASS_COLOURS, None]:
        grade = lab.label.model_copy(update={"class_": letter, "gradable": letter is not None})
        variant = LabelSet(labels=[lab.model_copy(update={"label": grade})])
        out.append((letter, export_text(source_of(variant), "badge-svg")))
    return out


def test_badges_render_in_chromium_in_the_class_colours(browser, signed_set, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    items = badges(signed_set)
    imgs = "".join(
        f'<p><img id="b{i}" src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}"></p>'
        for i, (_, svg) in enumerate(items))
    page = tmp_path / "badges.html"
    page.write_text(f"<!doctype html><html><body style='margin:8px;background:#fff'>{imgs}</body></html>")
    browser.get(page.as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"))
    for i, (letter, svg) in enumerate(items):
        width = int(svg.split('width="', 1)[1].split('"', 1)[0])
        info = browser.execute_script("""
            const img = document.getElementById(arguments[0]);
            const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            const x = img.naturalWidth - 3;  // the message half's right edge, beside the text
            return [img.naturalWidth, img.naturalHeight, Array.from(g.getImageData(x, 4, 1, 1).data)];
        """, f"b{i}")
        assert info[0] == width and info[1] == 20
        expected = CLASS_COLOURS[letter] if letter else "#9f9f9f"
        rgb = [int(expected[k:k + 2], 16) for k in (1, 3, 5)]
        # the flat gradient overlay (10 % opacity) shifts the colour a little
        assert all(abs(a - b) <= 30 for a, b in zip(info[2][:3], rgb)), (letter, info[2], rgb)
    shot = os.environ.get("EEKI_BADGE_SCREENSHOT")
    png = browser.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG")
    if shot:
        with open(shot, "wb") as f:
            f.write(png)
