"""The PDF certificate (reportlab): ``render_pdf(doc) -> bytes``, no I/O.

Page 1 (one page per device class for a label set) is the label laid out like an EU energy label:
the seven A..G arrows in the EU colours, the model's class marked, the model and its sha256, the
device class, the headline figures, the transfer and recycling figures when the label has them, the
rule set, catalogue, issue date, issuer, method, and a QR code with a compact verification payload
(``render.common.qr_payload``). The following pages hold the full profile, method and conditions,
the reference comparison, all device classes, tolerances and how to re-test, and the signature.

Text from the model (file name, graph name, producer, doc string) is untrusted: it is escaped for
reportlab's paragraph markup and stripped of control characters. The output is deterministic: the
PDF's dates are the label's ``issued_at`` and its document ID is derived from the label id, so the
same label gives the same bytes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
from xml.sax.saxutils import escape as _xml_escape

from reportlab.graphics import renderPDF
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.pdfbase.pdfdoc import DummyDoc, PDFText
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas as _canvas
from reportlab.platypus import (
    BaseDocTemplate, CondPageBreak, Flowable, Frame, KeepTogether, NextPageTemplate, PageBreak, PageTemplate,
    Paragraph, Spacer, Table, TableStyle,
)

from eeki_label import __version__
from eeki_label.render.common import (
    CLASS_COLOURS, CLASSES, INDEX_DEFINITION, bands_text, human_count, human_energy, human_size, human_wh,
    humanise_bytes_in, label_document, label_id_of, labels_of, mj, one_line, per_1000_text, qr_payload,
    quality_text, recycling_text, sig, signature_of, task_text, tolerance_text, transfer_text, yes_no,
)

PAGE_W, PAGE_H = A4
MARGIN = 34
INK = colors.HexColor("#1a1a1a")
MUTED = colors.HexColor("#5a5a5a")
BAND = colors.HexColor("#17324d")
RULE = colors.HexColor("#c8c8c8")
PANEL = colors.HexColor("#f3f5f7")


# Untrusted label text is bounded before reportlab lays it out: a table row cannot break across
# pages, and a 50,000-character word took reportlab minutes. The label JSON keeps the full text.
PDF_TEXT_CHARS = 1500
PDF_LIST_ITEMS = 16
PDF_NOTES = 200


def esc(text, limit: "int | None" = PDF_TEXT_CHARS) -> str:
    """Untrusted text for reportlab paragraph markup: one line, at most ``limit`` characters (then
    shortened, saying so), ``& < >`` escaped, WinAnsi only."""
    s = one_line(text)
    if limit is not None and len(s) > limit:
        s = f"{s[:limit]}… ({len(s):,} characters in all; the label JSON has the full text)"
    return _xml_escape(_latin(s))


def _first(items: list[str], n: int = PDF_LIST_ITEMS, sep: str = "; ") -> str:
    """The first ``n`` items joined, and how many more there are."""
    shown = sep.join(items[:n])
    return shown + (f"{sep}… and {len(items) - n:,} more (the label JSON lists all)" if len(items) > n else "")


def _latin(text: str) -> str:
    """The standard PDF fonts encode WinAnsi: replace what they cannot draw with '?'."""
    return text.encode("cp1252", "replace").decode("cp1252")


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """``text`` broken into lines of at most ``width`` points at spaces (a long word is shortened)."""
    lines: list[str] = []
    for word in _latin(one_line(text)).split(" "):
        if lines and stringWidth(lines[-1] + " " + word, font, size) <= width:
            lines[-1] += " " + word
        else:
            lines.append(_fit(word, font, size, width))
    return lines or [""]


def _fit(text: str, font: str, size: float, width: float) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` points (a binary search: widths only grow
    with the prefix, and a long hostile string must not cost one measurement per character)."""
    text = _latin(one_line(text))
    if stringWidth(text, font, size) <= width:
        return text
    lo, hi = 0, len(text)  # text[:lo] + "…" fits (or lo == 0); text[:hi] + "…" does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if stringWidth(text[:mid] + "…", font, size) <= width:
            lo = mid
        else:
            hi = mid
    return text[:lo] + "…"


def _fit_lines(text: str, font: str, size: float, min_size: float, width: float,
               max_lines: int = 2) -> "tuple[float, list[str]]":
    """Shrink-to-fit, then wrap: the largest size from ``size`` down to ``min_size`` (half-point
    steps) at which ``text`` fits one line; else ``text`` wrapped at ``min_size`` (a word wider than
    the line is broken, never cut). Only text longer than ``max_lines`` full lines (hostile input)
    ends with an ellipsis; the label JSON has it whole."""
    text = _latin(one_line(text))
    bound = 400 * max_lines  # more than max_lines full lines hold at any size: hostile text, bounded first
    if len(text) > bound:
        text = text[:bound] + "…"
    s = size
    while s >= min_size:
        if stringWidth(text, font, s) <= width:
            return s, [text]
        s -= 0.5
    lines: list[str] = []
    for word in text.split(" "):
        if len(lines) > max_lines:
            break
        while stringWidth(word, font, min_size) > width and len(lines) <= max_lines:  # break an over-long word
            cut = max(1, len(_fit(word, font, min_size, width)) - 1)
            lines.append(word[:cut])
            word = word[cut:]
        if lines and stringWidth(lines[-1] + " " + word, font, min_size) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [_fit(" ".join(lines[max_lines - 1:]), font, min_size, width)]
    return min_size, lines or [""]


def _draw_lines(c, x: float, y: float, text: str, font: str, size: float, min_size: float, width: float,
                max_lines: int = 2, leading: float = 1.18) -> float:
    """Draw ``text`` shrunk to fit or wrapped (``_fit_lines``) from baseline ``y`` down; returns the
    extra height used beyond one line of ``size``."""
    used, lines = _fit_lines(text, font, size, min_size, width, max_lines)
    c.setFont(font, used)
    for i, line in enumerate(lines):
        c.drawString(x, y - i * used * leading, line)
    return (len(lines) - 1) * used * leading


def _split_unit(text: str) -> "tuple[str, str]":
    """``'1.60 mJ'`` -> ``('1.60', 'mJ')``; ``'n/a'`` -> ``('n/a', '')``."""
    value, _, unit = text.partition(" ")
    return value, unit


# --------------------------------------------------------------------------------------------
# Determinism: dates from the label, document ID from the label id


class _FixedTime:
    """Stands in for reportlab's TimeStamp: the label's issue time, in UTC."""

    def __init__(self, issued_at: str) -> None:
        try:
            t = _dt.datetime.fromisoformat(issued_at.replace("Z", "+00:00"))
        except ValueError:
            t = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        t = t.astimezone(_dt.timezone.utc)
        self.t = t.timestamp()
        self.lt = t.timetuple()
        self.YMDhms = tuple(self.lt)[:6]
        self.dhh = self.dmm = 0
        self.tzname = "UTC"


def _canvas_maker(issued_at: str, document_id: bytes):
    class _Canvas(_canvas.Canvas):
        def __init__(self, *args, **kwargs):
            kwargs["invariant"] = 1
            super().__init__(*args, **kwargs)
            doc = self._doc
            doc._timeStamp = _FixedTime(issued_at)
            ident = PDFText(document_id, enc="raw").format(DummyDoc())
            doc._ID = b"\n[" + ident + ident + b"]\n% eeki-label certificate\n"

    return _Canvas


# --------------------------------------------------------------------------------------------
# Page 1: the label


class LabelPage(Flowable):
    """The EU-style label of one device class, drawn on a whole page."""

    def __init__(self, label, signature, position: tuple[int, int]) -> None:
        super().__init__()
        self.lab = label
        self.signature = signature
        self.position = position

    def wrap(self, avail_w, avail_h):
        return avail_w, avail_h

    def draw(self):
        c = self.canv
        lab = self.lab
        c.saveState()
        top = PAGE_H - MARGIN
        left, right = MARGIN, PAGE_W - MARGIN
        width = right - left

        # Header band
        c.setFillColor(BAND)
        c.rect(left, top - 58, width, 58, stroke=0, fill=1)
        c.setFillColor(colors.white)
        c.setFont("Helvetica-Bold", 20)
        c.drawString(left + 14, top - 29, "ENERGY LABEL FOR AI MODELS")
        c.setFont("Helvetica", 8)
        c.drawString(left + 14, top - 45, "Energy per inference against the most efficient catalogued model of the "
                                          "same task (EEKI concept). Laid out like the EU label; not an EU label.")
        c.setFont("Helvetica-Bold", 9)
        n, total = self.position
        if total > 1:
            c.drawRightString(right - 12, top - 27, f"device class {n} of {total}")

        # Identity: long texts shrink to a floor, then wrap; the space they take comes off the scale
        y = top - 80
        tw = width - 78
        self._caption(c, left, y, "MODEL")
        c.setFillColor(INK)
        y -= _draw_lines(c, left + 78, y - 2, lab.model.file_name, "Helvetica-Bold", 15, 9, tw, max_lines=3)
        y -= 15
        details = [f"{lab.model.parameters:,} parameters, {human_count(lab.model.macs)} multiply-accumulates "
                   "per inference"]
        if lab.model.producer:
            details.append(f"producer {one_line(lab.model.producer)}")
        if lab.model.graph_name:
            details.append(f"graph {one_line(lab.model.graph_name)}")
        c.setFillColor(MUTED)
        y -= _draw_lines(c, left + 78, y, "  ·  ".join(details), "Helvetica", 8.5, 7, tw)
        y -= 18
        self._caption(c, left, y, "SHA-256")
        c.setFillColor(INK)
        c.setFont("Courier", 8.6)
        c.drawString(left + 78, y, lab.model.sha256)
        y -= 20
        self._caption(c, left, y, "DEVICE CLASS")
        c.setFillColor(INK)
        y -= _draw_lines(c, left + 78, y - 1, lab.device_class.name, "Helvetica-Bold", 11, 8, tw)
        y -= 13
        c.setFillColor(MUTED)
        y -= _draw_lines(c, left + 78, y, f"{lab.device_class.id}  ·  {lab.device_class.reference_system}  ·  "
                                          f"{lab.device_class.batch_mode}, {lab.device_class.precision}",
                         "Helvetica", 8, 6.5, tw)
        y -= 17
        self._caption(c, left, y, "TASK")
        c.setFillColor(INK)
        ref = lab.reference
        ref_q = (f"reference quality {ref.quality:g} {lab.task.quality.metric}" if ref.quality is not None
                 else "no reference")
        y -= _draw_lines(c, left + 78, y, f"{task_text(lab)}  ·  declared quality: {quality_text(lab)}  ·  {ref_q}",
                         "Helvetica", 8.5, 7, tw)
        y -= 9
        c.setStrokeColor(RULE)
        c.setLineWidth(0.8)
        c.line(left, y, right, y)

        # Scale: its rows take what the identity block left (the layout below it is fixed)
        scale_top = y - 30
        figures_top = top - 494
        self.row_h = max(24.0, (scale_top - 16 - figures_top) / 7 - 6)
        self._scale(c, left + 6, scale_top)

        # Headline figures
        y = figures_top
        self._figures(c, left, y, width)

        # Transfer and recycling
        y -= 96
        half = (width - 10) / 2
        transfer = transfer_text(lab)
        self._panel(c, left, y, half, "TRANSFER (NNC, ISO/IEC 15938-17)",
                    list(transfer) if transfer else ["not assessed for this label"])
        recycling = recycling_text(lab)
        self._panel(c, left + half + 10, y, half, "RECYCLING / TRANSFER LEARNING",
                    [recycling] if recycling else ["not assessed for this label"])

        # Footer: provenance and QR
        y -= 74
        self._footer(c, left, y, width)
        c.restoreState()

    @staticmethod
    def _caption(c, x, y, text):
        c.setFillColor(MUTED)
        c.setFont("Helvetica-Bold", 7.5)
        c.drawString(x, y, text)

    def _scale(self, c, x0, top):
        lab = self.lab
        row_h, gap = getattr(self, "row_h", 36), 6
        c.setFillColor(MUTED)
        c.setFont("Helvetica", 7.5)
        basis = getattr(lab.inference.measurement, "reference_basis", None) if lab.inference.measurement else None
        measured_ref = basis and lab.inference.measurement.reference_measured
        caption = ("index = measured energy per inference / energy of the reference MEASURED on this machine "
                   "(same protocol)" if measured_ref else
                   "index = measured energy per inference / ESTIMATED energy of the reference on "
                   f"{lab.inference.measurement.reference_class!r} (no reference measured on this machine)" if basis
                   else INDEX_DEFINITION)
        _draw_lines(c, x0, top + 12, caption, "Helvetica", 7.5, 6.5, PAGE_W - 2 * MARGIN - 12, max_lines=1)
        thresholds = lab.label.thresholds
        for i, letter in enumerate(CLASSES):
            y = top - (i + 1) * (row_h + gap) + gap
            w = 156 + i * 27
            self._arrow(c, x0, y, w, row_h, colors.HexColor(CLASS_COLOURS[letter]))
            c.saveState()
            text = c.beginText()
            text.setTextOrigin(x0 + w - row_h / 2 - 24, y + row_h / 2 - 9)
            text.setFont("Helvetica-Bold", 26)
            text.setTextRenderMode(2)
            c.setFillColor(colors.white)
            c.setStrokeColor(colors.black)
            c.setLineWidth(0.7)
            text.textOut(letter)
            c.drawText(text)
            c.restoreState()
            bound = thresholds.get(letter)
            prev = thresholds.get(CLASSES[i - 1]) if i else None
            caption = (f"index up to {bound:g}" if bound is not None and prev is None
                       else f"{prev:g} to {bound:g}" if bound is not None else f"above {prev:g}")
            c.setFillColor(colors.white if letter in "ABFG" else INK)
            c.setFont("Helvetica-Bold", 8)
            c.drawString(x0 + 8, y + row_h / 2 - 3, caption)
        # Marker: beside the arrow of the model's class (a not-graded label: in the right column)
        letter = lab.label.class_
        if letter is not None:
            i = CLASSES.index(letter)
            mark_x = x0 + 156 + i * 27 + 14
            mark_w = 132
            y = top - (i + 1) * (row_h + gap) + gap - 6
            self._marker(c, mark_x, y, mark_w, row_h + 12, colors.black)
            c.setFillColor(colors.white)
            c.setFont("Helvetica-Bold", 36)
            c.drawRightString(mark_x + mark_w - 12, y + (row_h + 12) / 2 - 12, letter)
            c.setFont("Helvetica-Bold", 7.5)
            c.drawString(mark_x + 26, y + (row_h + 12) / 2 + 5, "CLASS")
            c.setFont("Helvetica", 8.5)
            c.drawString(mark_x + 26, y + (row_h + 12) / 2 - 9, f"index {sig(lab.label.index, 3)}")
        else:
            mark_x = x0 + 156 + 6 * 27 + 22
            mark_w = PAGE_W - MARGIN - mark_x
            y = top - 4 * (row_h + gap) + gap - 6
            self._marker(c, mark_x, y, mark_w, row_h + 12, colors.HexColor("#7a7a7a"))
            c.setFillColor(colors.white)
            c.setFont("Helvetica-Bold", 20)
            c.drawRightString(mark_x + mark_w - 12, y + (row_h + 12) / 2 - 7, "n/a")
            c.setFont("Helvetica-Bold", 7.5)
            c.drawString(mark_x + 26, y + (row_h + 12) / 2 + 5, "NOT GRADED")
            c.setFillColor(INK)
            reason = humanise_bytes_in(lab.label.reason or "not gradable")
            _draw_lines(c, mark_x, y - 12, f"Why: {reason}", "Helvetica", 7.5, 7, mark_w, max_lines=8)

    @staticmethod
    def _arrow(c, x, y, w, h, fill):
        p = c.beginPath()
        p.moveTo(x, y)
        p.lineTo(x + w - h / 2, y)
        p.lineTo(x + w, y + h / 2)
        p.lineTo(x + w - h / 2, y + h)
        p.lineTo(x, y + h)
        p.close()
        c.setFillColor(fill)
        c.drawPath(p, stroke=0, fill=1)

    @staticmethod
    def _marker(c, x, y, w, h, fill):
        p = c.beginPath()
        p.moveTo(x + h / 2, y)
        p.lineTo(x + w, y)
        p.lineTo(x + w, y + h)
        p.lineTo(x + h / 2, y + h)
        p.lineTo(x, y + h / 2)
        p.close()
        c.setFillColor(fill)
        c.drawPath(p, stroke=0, fill=1)

    def _figures(self, c, left, y, width):
        lab = self.lab
        half = (width - 10) / 2
        for k, (text, caption) in enumerate([
            (human_energy(lab.inference.energy_j), "energy per inference"),
            (per_1000_text(lab), "energy per 1,000 inferences"),
        ]):
            value, unit = _split_unit(text)
            x = left + k * (half + 10)
            c.setFillColor(PANEL)
            c.setStrokeColor(RULE)
            c.roundRect(x, y - 58, half, 58, 6, stroke=1, fill=1)
            c.setFillColor(INK)
            c.setFont("Helvetica-Bold", 24)
            c.drawString(x + 12, y - 30, value)
            c.setFont("Helvetica-Bold", 12)
            c.drawString(x + 16 + stringWidth(value, "Helvetica-Bold", 24), y - 30, _latin(unit))
            c.setFont("Helvetica", 8.5)
            c.setFillColor(MUTED)
            c.drawString(x + 12, y - 47, caption)
        method = lab.inference.method.upper()
        c.setFont("Helvetica-Bold", 8)
        badge_w = stringWidth(method, "Helvetica-Bold", 8) + 14
        c.setFillColor(BAND if lab.inference.method == "measured" else colors.HexColor("#8a5a00"))
        c.roundRect(left + width - badge_w, y - 80, badge_w, 14, 3, stroke=0, fill=1)
        c.setFillColor(colors.white)
        c.drawCentredString(left + width - badge_w / 2, y - 76, method)
        ref = lab.reference
        ref_text = (f"Reference: {ref.name} ({ref.model_id}), {human_energy(ref.energy_j)} per inference on this "
                    f"device class; {ref.selection}" if ref.model_id
                    else f"Reference: none ({humanise_bytes_in(ref.selection)})")
        c.setFillColor(INK)
        _draw_lines(c, left, y - 72, ref_text, "Helvetica", 8.5, 7, width - badge_w - 10)

    @staticmethod
    def _panel(c, x, y, w, title, lines):
        c.setFillColor(PANEL)
        c.setStrokeColor(RULE)
        c.roundRect(x, y - 58, w, 58, 5, stroke=1, fill=1)
        c.setFillColor(MUTED)
        c.setFont("Helvetica-Bold", 7.5)
        c.drawString(x + 10, y - 13, title)
        c.setFillColor(INK)
        size = 8.5
        wrapped = [part for line in lines for part in _wrap(line, "Helvetica", size, w - 20)]
        if len(wrapped) > 3:  # a smaller size rather than a cut
            size = 7
            wrapped = [part for line in lines for part in _wrap(line, "Helvetica", size, w - 20)]
            if len(wrapped) > 4:
                wrapped = wrapped[:3] + [_fit(" ".join(wrapped[3:]), "Helvetica", size, w - 20)]
        c.setFont("Helvetica", size)
        for i, line in enumerate(wrapped):
            c.drawString(x + 10, y - 25 - i * (size + 2), line)

    def _footer(self, c, left, y, width):
        lab = self.lab
        qr_size = 124
        sigtext = (f"Ed25519, key {self.signature.key_fingerprint[:23]}…" if self.signature is not None
                   else "UNSIGNED (assess --sign-key KEY)")
        rows = [
            ("Rules", f"{lab.rules.id} {lab.rules.version}"),
            ("Catalogue", f"{lab.catalogue.id} {lab.catalogue.version}"),
            ("Device data", f"{lab.device_data.version}"),
            ("Issued", lab.issued_at),
            ("Issuer", lab.issuer or "not stated (self-assessment)"),
            ("Figures", f"{lab.inference.method} ({lab.inference.estimator})"),
            ("Label id", label_id_of(lab)),
            ("Signature", sigtext),
            ("Tool", f"eeki-label {lab.tool.version}"),
        ]
        text_w = width - qr_size - 16
        yy = y - 10
        for key, value in rows:
            c.setFillColor(MUTED)
            c.setFont("Helvetica-Bold", 7.5)
            c.drawString(left, yy, key.upper())
            c.setFillColor(INK)
            yy -= _draw_lines(c, left + 70, yy, value, "Helvetica", 8.5, 6.5, text_w - 70) * 0.9
            yy -= 12.2 if yy > y - 110 else 11
        c.setFillColor(MUTED)
        _draw_lines(c, left, yy - 4, f"Verify: eeki-label verify label.json --model {lab.model.file_name} "
                                     "--public-key ISSUER.pub", "Helvetica", 7, 6, text_w, max_lines=3)
        # QR code
        widget = QrCodeWidget(qr_payload(lab, self.signature), barLevel="M")
        x0, y0, x1, y1 = widget.getBounds()
        drawing = Drawing(qr_size, qr_size, transform=[qr_size / (x1 - x0), 0, 0, qr_size / (y1 - y0), 0, 0])
        drawing.add(widget)
        renderPDF.draw(drawing, c, left + width - qr_size, y - qr_size + 6)
        c.setFont("Helvetica", 6.5)
        c.setFillColor(MUTED)
        c.drawCentredString(left + width - qr_size / 2, y - qr_size - 2, "verification payload (EEKI1)")


# --------------------------------------------------------------------------------------------
# Pages 2+: details


def _styles():
    base = getSampleStyleSheet()
    return {
        "h1": ParagraphStyle("h1", parent=base["Heading1"], fontSize=15, leading=18, spaceAfter=6, textColor=BAND),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontSize=11.5, leading=14, spaceBefore=10, spaceAfter=4,
                             textColor=BAND, keepWithNext=1),
        "body": ParagraphStyle("body", parent=base["BodyText"], fontSize=8.5, leading=11),
        "cell": ParagraphStyle("cell", parent=base["BodyText"], fontSize=7.5, leading=9.2),
        "key": ParagraphStyle("key", parent=base["BodyText"], fontSize=7.5, leading=9.2, textColor=MUTED,
                              fontName="Helvetica-Bold"),
        "mono": ParagraphStyle("mono", parent=base["BodyText"], fontSize=7, leading=8.6, fontName="Courier"),
    }


def _grid(rows, widths, st, header: bool = False):
    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0)
    style = [
        ("GRID", (0, 0), (-1, -1), 0.4, RULE),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), PANEL))
    table.setStyle(TableStyle(style))
    return table


def _kv(pairs, st, width, key_w=150):
    rows = [[Paragraph(esc(k), st["key"]), v if isinstance(v, Flowable) else Paragraph(esc(v), st["cell"])]
            for k, v in pairs]
    return _grid(rows, [key_w, width - key_w], st)


def _details(doc, labels, signature, width) -> list:
    st = _styles()
    first = labels[0]
    m = first.model
    out: list = [Paragraph("Certificate details", st["h1"]),
                 Paragraph(esc(f"{m.file_name} · sha256 {m.sha256} · {len(labels)} device class(es) · issued "
                               f"{first.issued_at}"), st["body"])]

    def size(n: int) -> str:
        return f"{human_size(n)} ({n:,} bytes)" if n >= 1000 else f"{n:,} bytes"

    out += [Paragraph("1. Model profile", st["h2"]), _kv([
        ("file name", m.file_name), ("graph name", m.graph_name or "none"), ("producer", m.producer or "none"),
        ("doc string", m.doc_string or "none"),
        ("sha256", Paragraph(esc(m.sha256), st["mono"])),
        ("file size / external data", f"{size(m.file_bytes)} / {size(m.external_data_bytes)}"),
        ("ONNX IR version / opsets", f"{m.ir_version} / " + ", ".join(f"{k or 'ai.onnx'} {v}"
                                                                       for k, v in sorted(m.opset.items()))),
        ("parameters (of them floating point)", f"{m.parameters:,} ({m.float_parameters:,})"),
        ("weights", size(m.weight_bytes)),
        ("multiply-accumulates per inference", f"{m.macs:,} ({human_count(m.macs)}; depthwise convolutions "
                                               f"{m.macs_depthwise:,})"),
        ("multiply-accumulates by operator", ", ".join(f"{k} {v:,}" for k, v in sorted(m.macs_by_op.items()))
         or "none counted"),
        ("activations (peak working set)", f"{size(m.activation_bytes)} ({size(m.activation_peak_bytes)})"),
        ("nodes", f"{m.node_count:,}"),
        ("operators (count)", ", ".join(f"{k} {v}" for k, v in sorted(m.op_histogram.items(), key=lambda kv: -kv[1]))),
        ("inputs", _first([f"{t.name} {t.dtype}, shape {' x '.join(map(str, t.shape))}" for t in m.inputs])),
        ("outputs", _first([f"{t.name} {t.dtype}, shape {' x '.join(map(str, t.shape))}" for t in m.outputs])),
        ("loop bodies / nodes with unknown shapes", f"{m.loop_bodies} / {len(m.unresolved_nodes)}"),
    ], st, width)]

    out += [Paragraph("2. All device classes assessed", st["h2"]),
            Paragraph(esc(f"{INDEX_DEFINITION}. Classes by index: {bands_text(first.label.thresholds)}."),
                      st["body"]), Spacer(1, 3)]
    head = ["device class", "energy per inference", "per 1,000 inferences", "method", "reference", "reference "
            "energy", "index", "class"]
    rows = [[Paragraph(f"<b>{esc(h)}</b>", st["cell"]) for h in head]]
    for lab in labels:
        g = lab.label
        rows.append([Paragraph(esc(x), st["cell"]) for x in [
            lab.device_class.id, human_energy(lab.inference.energy_j), per_1000_text(lab), lab.inference.method,
            lab.reference.model_id or "none", human_energy(lab.reference.energy_j), sig(g.index, 3),
            g.class_ or "not graded (section 3)",
        ]])
    out.append(_grid(rows, [0.18 * width, 0.12 * width, 0.12 * width, 0.1 * width, 0.2 * width, 0.1 * width,
                            0.07 * width, 0.11 * width], st, header=True))

    out += [Paragraph("3. Method, conditions and reference comparison, per device class", st["h2"])]
    for lab in labels:
        e, r, g, dc = lab.inference, lab.reference, lab.label, lab.device_class
        measured = []
        ci = getattr(e, "energy_j_ci95", None)
        if ci:
            measured.append(("95 % interval of the energy", f"{human_energy(ci[0])} to {human_energy(ci[1])} "
                                                             f"({getattr(e, 'interval_method', None) or 'see label'})"))
        reps = getattr(e, "repetitions", None)
        if reps is not None:
            measured.append(("repetitions (baseline / idle / scenario)",
                             f"{reps.baseline_runs} / {reps.idle_runs} / {reps.scenario_runs} runs, "
                             f"{reps.inferences_per_run} inferences per scenario run"))
        if getattr(e, "domains", None):
            measured.append(("meter domains", ", ".join(e.domains)))
        measured += measurement_rows(lab)
        ref_quality = f"quality {r.quality:g} {lab.task.quality.metric}" if r.quality is not None else "quality n/a"
        work = ("n/a (not estimated)" if e.effective_macs is None else
                f"{human_count(e.effective_macs)} effective multiply-accumulates: the model's "
                f"{human_count(lab.model.macs)} plus {human_size(e.bytes_moved)} moved to and from memory, counted "
                "at the device's compute-to-bandwidth ratio")
        out.append(KeepTogether([Paragraph(f"<b>{esc(dc.name)}</b> ({esc(dc.id)})", st["body"]), Spacer(1, 2), _kv([
            ("reference system", dc.reference_system),
            ("batch mode / precision", f"{dc.batch_mode} / {dc.precision}"),
            ("energy per inference", f"{human_energy(e.energy_j)} ({e.method}; estimator {e.estimator})"),
            ("fits the device", "yes" if e.fits else f"no: {humanise_bytes_in(e.fit_reason or 'no reason given')}"),
            ("work the estimate counts", work),
            ("time estimate", f"{sig(e.time_s_estimate * 1e3, 3)} ms" if e.time_s_estimate is not None else "n/a"),
            ("calibration anchor", e.calibration_anchor or "none"),
            ("meter", e.meter or "none (estimated)"),
            ("task", task_text(lab)),
            ("declared quality", quality_text(lab)),
            ("reference", f"{r.name or 'none'} ({r.model_id or 'no catalogue model'}), {ref_quality}, "
                          f"{human_energy(r.energy_j)} per inference, {human_count(r.macs)} multiply-accumulates, "
                          f"{human_count(r.parameters)} parameters" if r.model_id else
                          f"none: {humanise_bytes_in(r.selection)}"),
            ("why this reference", f"{r.selection}; {r.candidates_considered} of the task's catalogue references "
                                   "qualify on this device class"),
            ("index and class", f"{sig(g.index, 4)}, class {g.class_}" if g.class_ else
                                f"not graded: {humanise_bytes_in(g.reason or 'no reason given')}"),
            ("class bands (index)", bands_text(g.thresholds)),
            ("margin", tolerance_text(lab)),
        ] + measured, st, width), Spacer(1, 6)]))

    rt = first.runtime
    out += [Paragraph("4. Runtime measurement on the assessing host", st["h2"])]
    if rt is None:
        out.append(Paragraph("No runtime profile (assessed with --runs 0).", st["body"]))
    else:
        out.append(_kv([
            ("runs (warm-up)", f"{rt.runs} ({rt.warmup_runs})"),
            ("latency median / p90 / mean", f"{sig(rt.latency_ms_median)} / {sig(rt.latency_ms_p90)} / "
                                            f"{sig(rt.latency_ms_mean)} ms"),
            ("95 % CI of the median", f"{sig(rt.latency_ms_ci95[0])} - {sig(rt.latency_ms_ci95[1])} ms"),
            ("onnxruntime / provider / threads", f"{rt.onnxruntime_version} / {rt.execution_provider} / "
                                                 f"{rt.intra_op_threads}"),
            ("host", f"{rt.host_cpu} ({rt.host_logical_cpus} logical CPUs, {rt.host_machine})"),
            ("input seed", str(rt.input_seed)),
        ], st, width))
        out.append(Paragraph("Latency is recorded for reproducibility; the estimated energies do not depend on it.",
                             st["body"]))

    out += [Paragraph("5. Transfer (NNC)", st["h2"])]
    t = first.transfer
    if t is not None and t.status == "failed":
        f = t.failure
        out.append(Paragraph(esc(f"NNC could not code this model ({f.part}: {f.error_type}: {f.error}); the rest of the "
                                 "label stands."), st["body"]))
    else:
        out += _transfer_tables(t, st, width) if t is not None else [
            Paragraph("Not assessed: the label has no transfer section (assessed with --no-transfer).", st["body"])]
    out += [Paragraph("6. Recycling and transfer learning", st["h2"])]
    out += _recycling_tables(first.recycling, st, width) if first.recycling is not None else [
        Paragraph("Not assessed: the label has no recycling section.", st["body"])]

    notes = sorted({n for lab in labels for n in lab.label.notes})
    out += [Paragraph("7. Notes", st["h2"])]
    out += [Paragraph("• " + esc(n), st["body"]) for n in notes[:PDF_NOTES]] or [Paragraph("No notes.", st["body"])]
    if len(notes) > PDF_NOTES:
        out.append(Paragraph(esc(f"… and {len(notes) - PDF_NOTES:,} more notes (the label JSON lists all)"), st["body"]))

    out += [CondPageBreak(200), Paragraph("8. Tolerances and how to re-test", st["h2"])]
    shapes = " ".join(f"--input-shape {t.name}={'x'.join(map(str, t.shape))}" for t in m.inputs)
    if len(shapes) > PDF_TEXT_CHARS // 2:  # too long to print whole: say how to build it
        shapes = f"--input-shape NAME=SHAPE (once for each of the {len(m.inputs):,} inputs in the label's model.inputs)"
    task = f" --task {first.task.id}" if first.task.declared else ""
    acc = f" --accuracy {first.task.quality.declared:g}" if first.task.quality.declared is not None else ""
    dcs = " ".join(f"-d {lab.device_class.id}" for lab in labels)
    cmd = (f"eeki-label assess {m.file_name} {shapes} {dcs}{task}{acc} --rules {first.rules.version} "
           f"--catalogue {first.catalogue.version} --json label.json")
    for text in [
        "Estimated figures (inference.method = estimated) are a deterministic function of the model file, the "
        "options and the versioned data files named on the label: re-running the command below with the same "
        "tool version reproduces every energy, index and class exactly; only the measured latencies of section 4 "
        "differ from host to host.",
        "Measured figures (inference.method = measured) are re-tested the way the EU energy label is verified: one "
        "unit is measured; if it fails, three more units are measured and their mean must pass; a declared value may "
        f"not use the tolerance. Rule set {first.rules.id} {first.rules.version} grades on the index; the margin "
        "of each label below says how far the index may move before its class changes.",
    ]:
        out.append(Paragraph(esc(text), st["body"]))
        out.append(Spacer(1, 3))
    out += [Paragraph("• " + esc(f"{lab.device_class.id}: {tolerance_text(lab)}"), st["body"]) for lab in labels]
    out += [Spacer(1, 4), Paragraph("<b>Re-assess</b>", st["body"]), Paragraph(esc(cmd), st["mono"]),
            Spacer(1, 3), Paragraph("<b>Verify this certificate's label</b>", st["body"]),
            Paragraph(esc(f"eeki-label verify label.json --model {m.file_name} --public-key ISSUER.pub"), st["mono"]),
            Paragraph(esc("verify checks the signature, the issuer's key, the model's sha256 and that the rule set, "
                          "catalogue and device data named are installed with the same sha256; each failure has "
                          "its own exit code (README, Exit codes)."), st["body"])]

    out += [Paragraph("9. Signature and provenance", st["h2"])]
    pairs = [("document label id", label_id_of(doc) if doc is not first else label_id_of(first))]
    if signature is None:
        pairs.append(("signature", "none: this label is unsigned"))
    else:
        pairs += [
            ("algorithm / canonicalisation", f"{signature.algorithm} / {signature.canonicalization}"),
            ("key fingerprint", Paragraph(esc(signature.key_fingerprint), st["mono"])),
            ("public key (raw, base64)", Paragraph(esc(signature.public_key), st["mono"])),
            ("signature (base64)", Paragraph(esc(signature.value), st["mono"])),
        ]
    pairs += [
        ("signed content", "the label JSON without its top-level signature member, canonicalised with RFC 8785 "
                           "(JCS), UTF-8 (docs/signing.md)"),
        ("rules", f"{first.rules.id} {first.rules.version}, sha256 {first.rules.sha256}"),
        ("catalogue", f"{first.catalogue.id} {first.catalogue.version}, sha256 {first.catalogue.sha256}"),
        ("device data", f"{first.device_data.version}, sha256 {first.device_data.sha256}"),
        ("tool", f"{first.tool.name} {first.tool.version}; onnx {first.tool.onnx_version}; onnxruntime "
                 f"{first.tool.onnxruntime_version}; Python {first.tool.python_version}"),
        ("issued / issuer", f"{first.issued_at} / {first.issuer or 'not stated'}"),
    ]
    out.append(_kv(pairs, st, width))
    return out


def _transfer_tables(t, st, width) -> list:
    """The transfer section as people read it: sizes, fidelity, codec, link and grid, then a table of
    the scenarios with and without NNC."""
    qmin, qmax = t.qp.get("min"), t.qp.get("max")
    top1 = (f"{t.fidelity.min_top1_agreement * 100:.1f} % (bound {t.fidelity.bound_min_top1_agreement * 100:g} %)"
            if t.fidelity.min_top1_agreement is not None else "n/a (no classifier-like output)")
    out = [_kv([
        ("codec", f"{t.standard}, {t.implementation}"),
        ("size without / with NNC", f"{human_size(t.original_bytes)} / {human_size(t.compressed_bytes)} "
                                    f"({t.ratio * 100:.1f} %: bitstream {human_size(t.bitstream_bytes)} + graph "
                                    f"{human_size(t.graph_bytes)})"),
        ("quantisation (QP per tensor)", f"{qmin:g} to {qmax:g}, median {t.qp.get('median'):g}"
         if qmin is not None and qmax is not None and t.qp.get("median") is not None else "no tensor coded"),
        ("fidelity of the decoded model", f"largest relative output error {t.fidelity.max_rel_error * 100:.2f} % "
                                          f"(bound {t.fidelity.bound_max_rel_error * 100:g} %); top-1 agreement "
                                          f"{top1}; {t.fidelity.samples} {t.fidelity.calibration} inputs; meets the "
                                          f"bound: {yes_no(t.fidelity.meets_bound)}"),
        ("codec time priced (transfer device)", f"{sig(t.device_encode_s, 3)} s per encode, "
                                                f"{sig(t.device_decode_s, 3)} s per decode at {t.codec_power_w:g} W"),
        ("codec time on this host (not priced)", f"{sig(t.encode_s, 3)} s encode (search included), "
                                                 f"{sig(t.decode_s, 3)} s decode"),
        ("link, device, grid", f"{sig(t.link_up_bit_s / 1e6, 4)} Mbit/s up, {sig(t.link_down_bit_s / 1e6, 4)} Mbit/s "
                               f"down; {t.transfer_power_w:g} W while transferring; {t.country} "
                               f"{t.grid_g_co2_per_kwh:g} g CO2/kWh; " + (f"{t.price_eur_per_kwh:g} EUR/kWh"
                                                                          if t.price_eur_per_kwh is not None
                                                                          else "no price set")),
    ], st, width, key_w=170), Spacer(1, 4)]
    head = ["scenario", "transfers / encodes / decodes", "without NNC", "with NNC", "change", "with delta coding",
            "CO2 without / with"]
    rows = [[Paragraph(f"<b>{esc(h)}</b>", st["cell"]) for h in head]]
    for x in t.scenarios:
        rows.append([Paragraph(esc(v), st["cell"]) for v in [
            x.description, f"{x.transfers:,} / {x.encodes:,} / {x.decodes:,}", human_wh(x.uncompressed_wh),
            human_wh(x.nnc_wh), f"{-x.nnc_saving_share * 100:+.0f} %",
            human_wh(x.nnc_delta_wh) if x.nnc_delta_wh is not None else "not assessed",
            f"{sig(x.uncompressed_co2_g, 3)} g / {sig(x.nnc_co2_g, 3)} g",
        ]])
    out.append(_grid(rows, [0.25 * width, 0.14 * width, 0.11 * width, 0.11 * width, 0.09 * width, 0.13 * width,
                            0.17 * width], st, header=True))
    if t.delta is not None:
        d = t.delta
        out += [Spacer(1, 4), _kv([("delta against the previous version",
                                    f"{human_size(d.compressed_bytes)} ({d.ratio_vs_full_nnc * 100:.1f} % of the full "
                                    f"NNC stream); meets the bound: {yes_no(d.fidelity_meets_bound)}")],
                                  st, width, key_w=170)]
    out += [Paragraph("• " + esc(n), st["body"]) for n in t.notes[:PDF_NOTES]]
    return out


def _recycling_tables(r, st, width) -> list:
    """The recycling section in words: the base or the structural match, the training energy saved,
    the update to ship."""
    pairs = [("basis", "declared base model (--base)" if r.basis == "declared-base"
              else "structural match with a catalogue architecture (potential, not proof of reuse)")]
    if r.base is not None:
        b = r.base
        pairs.append(("base model", f"{b.file_name}"))
        for name in ("frozen", "fine_tuned", "new"):
            part = getattr(b, name, None)
            if part is not None:
                pairs.append((f"{name.replace('_', '-')} parameters",
                              f"{part.parameters:,} ({part.share * 100:.1f} %)" if hasattr(part, "parameters")
                              else f"{part.share * 100:.1f} %"))
    if r.structure is not None:
        s = r.structure
        pairs.append(("closest catalogue architecture",
                      f"{s.name}, {s.coverage * 100:.1f} % of weight-layer parameters" if s.recognised
                      else f"none recognised (closest: {s.name or 'none compared'}, {s.coverage * 100:.1f} %)"))
    if r.training is not None:
        t = r.training
        pairs.append(("training assumptions", f"{t.train_samples:,} samples on {t.device_class}"))
        for x in t.scenarios:
            saving = (f"; saves {human_wh(x.saving_wh)} ({x.saving_share * 100:.0f} %) against training from scratch"
                      if x.saving_wh is not None and x.saving_share is not None and x.id != "scratch" else "")
            total = getattr(x, "energy_wh", None)
            pairs.append((f"training: {x.id.replace('-', ' ')}",
                          (f"{human_wh(total)}" if total is not None else "energy n/a") + saving))
    if r.update is not None:
        u = r.update
        pairs.append(("update to ship", f"{u.changed_tensors} changed tensor(s): "
                                        + (f"{human_size(u.coded_bytes)} with NNC, " if u.coded_bytes is not None else "")
                                        + f"{human_size(u.raw_bytes)} raw; the full weights are "
                                        f"{human_size(u.full_model_weight_bytes)}"))
    out = [_kv(pairs, st, width, key_w=170)]
    out += [Paragraph("• " + esc(n), st["body"]) for n in r.notes[:PDF_NOTES]]
    return out


def _on_details_page(label_id: str, file_name: str):
    def draw(c, doc):
        c.saveState()
        c.setFont("Helvetica", 7)
        c.setFillColor(MUTED)
        _draw_lines(c, MARGIN + 8, 24, f"eeki-label certificate · {file_name} · label {label_id}", "Helvetica", 7,
                    5.5, PAGE_W - 2 * MARGIN - 80, max_lines=2)
        c.drawRightString(PAGE_W - MARGIN - 8, 22, f"page {c.getPageNumber()}")
        c.restoreState()

    return draw


def render_pdf(doc) -> bytes:
    """The certificate of a ``Label`` or ``LabelSet`` as PDF bytes (deterministic for a given label)."""
    labels = labels_of(doc)
    signature = signature_of(doc)
    first = labels[0]
    from eeki_label.signing import label_id

    doc_id = label_id(label_document(doc))
    buf = io.BytesIO()
    template = BaseDocTemplate(
        buf, pagesize=A4, title=_latin(f"eeki-label certificate: {one_line(first.model.file_name, 120)}"),
        author=_latin(one_line(first.issuer or "eeki-label", 120)),
        subject=f"model sha256 {first.model.sha256}; label {doc_id}",
        creator=f"eeki-label {__version__}", producer=f"eeki-label {__version__} (ReportLab)",
        keywords=f"eeki-label, {doc_id}", invariant=1, leftMargin=MARGIN, rightMargin=MARGIN,
        topMargin=MARGIN, bottomMargin=MARGIN + 8,
    )
    label_frame = Frame(0, 0, PAGE_W, PAGE_H, leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0,
                        id="label")
    detail_frame = Frame(MARGIN + 8, MARGIN + 8, PAGE_W - 2 * MARGIN - 16, PAGE_H - 2 * MARGIN - 16, id="details")
    template.addPageTemplates([
        PageTemplate(id="label", frames=[label_frame]),
        PageTemplate(id="details", frames=[detail_frame], onPage=_on_details_page(doc_id, first.model.file_name)),
    ])
    story: list = []
    for i, lab in enumerate(labels):
        story.append(LabelPage(lab, signature, (i + 1, len(labels))))
        if i == len(labels) - 1:
            story.append(NextPageTemplate("details"))
        story.append(PageBreak())
    story += _details(doc, labels, signature, PAGE_W - 2 * MARGIN - 16 - 12)  # frame minus its 6 pt paddings
    document_id = hashlib.sha256(f"eeki-label pdf {doc_id}".encode()).digest()[:16]
    template.build(story, canvasmaker=_canvas_maker(first.issued_at, document_id))
    return buf.getvalue()


def measurement_rows(lab) -> list[tuple[str, str]]:
    """What an auditor needs to re-check a measured label (issue #18): interval, index interval, powers,
    sampling, clock offset, hashes."""
    mi = lab.inference.measurement
    if mi is None:
        return []
    g = lab.label
    rows = []
    if mi.statistical_ci95_j is not None:
        rows.append(("interval: runs' scatter + quantisation",
                     f"{mj(mi.statistical_ci95_j[0])} - {mj(mi.statistical_ci95_j[1])} mJ, widened by "
                     f"+-{mj(mi.quantisation_j or 0.0)} mJ (integration bound)"))
    if g.index_ci95 is not None:
        rows.append(("index interval", f"{sig(g.index_ci95[0], 4)} - {sig(g.index_ci95[1], 4)}"))
    idle = f", idle {sig(mi.idle_power_w, 4)} W" if mi.idle_power_w is not None else ""
    rows.append(("baseline / idle / scenario power",
                 f"baseline {sig(mi.baseline_power_w, 4)} W (sd {sig(mi.baseline_power_w_std, 3)}){idle}, "
                 f"scenario {sig(mi.scenario_power_w, 4)} W"))
    if mi.sample_interval_s is not None or mi.min_samples_per_run is not None:
        rows.append(("sampling", f"every {sig(mi.sample_interval_s, 3)} s ({mi.sample_mode or 'meter samples'}), "
                                 f"at least {mi.min_samples_per_run} samples per scenario run"
                                 + (f", {mi.trace_integration}" if mi.trace_integration else "")))
    if mi.clock_offset_s is not None:
        rows.append(("logger clock offset", f"{mi.clock_offset_s:+.3f} s (logger minus tool clock; "
                                            f"{mi.clock_offset_source})"))
    if mi.resolved is False:
        rows.append(("resolution", f"not graded: {g.reason}"))
    rows.append(("record sha256", mi.record_sha256 or "not archived (measured during assess)"))
    if mi.trace_sha256:
        rows.append(("trace sha256", f"{mi.trace_sha256} ({mi.trace_file})"))
    if mi.reference_basis:
        rows.append(("reference basis", mi.reference_basis))
    return rows
