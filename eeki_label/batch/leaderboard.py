"""The batch's ``leaderboard.html``: per task and device class a sortable table and an energy-vs-quality
scatter with the Pareto front of the batch's models and the catalogue's references marked.

Pure functions, no I/O besides reading package data (the template, the catalogue, shipped device data):

- :func:`pareto_front` picks the non-dominated points (lower energy and better quality);
- :func:`reference_points` prices the catalogue references of each (task, device class) in the rows
  with the data versions named in the rows, the same way a label prices its reference;
- :func:`render_leaderboard` renders the rows (the ``results.jsonl`` contract of ``eeki-label batch``)
  and the reference points into one self-contained HTML page (inline CSS, SVG and JavaScript; no URL is
  loaded; every text from a row is escaped by the template's autoescape).

A row is a dict: ``path``, ``sha256``, ``options_hash``, ``device_class`` ("" for a failed model),
``task``, ``class`` ("A".."G" or "" when not graded), ``index``, ``index_ci95_low``,
``index_ci95_high``, ``energy_j`` (per unit of work, ``energy_unit``), ``method``, ``quality``,
``quality_metric``, ``reference_id``, ``reference_energy_j``, ``original_bytes``, ``transfer_bytes``
(bytes after NNC), ``status`` (``ok``, ``failed``, ``skipped``), ``exit_code``, ``reason``,
``label_file``, ``catalogue_version``, ``rules_version``, ``device_data_version``, ``seconds``.
Numbers may be None (JSONL null) or "" (CSV empty cell); both mean "missing".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Mapping, Sequence

from eeki_label.render.common import CLASS_COLOURS, CLASSES, human_energy, human_size, one_line, sig

TEMPLATE = "leaderboard.html.j2"
GRADED_STATUSES = ("ok", "skipped")

# Scatter geometry (SVG user units)
PLOT_W, PLOT_H = 760, 380
PAD_L, PAD_R, PAD_T, PAD_B = 64, 24, 18, 48
CHAR_W = 6.2  # approximate advance of an 11 px sans-serif character, for label placement
LABEL_H = 12.0


# --------------------------------------------------------------------------------------------
# Values from rows (JSONL null or CSV "")


def number(value) -> "float | None":
    """A finite float from a row's field, or None (None, "", text that is not a number, NaN, inf)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def text(value, limit: "int | None" = None) -> str:
    """A row's text field on one line ('' for None)."""
    return one_line(value, limit)


# --------------------------------------------------------------------------------------------
# Pareto front


def pareto_front(points: Iterable, *, higher_is_better: bool = True) -> list[int]:
    """Indices of the non-dominated points of ``points`` (``(energy_j, quality)`` pairs), sorted by
    energy ascending (then quality, best first).

    Lower energy is better; quality is better when higher (``higher_is_better``, e.g. top-1 %) or
    lower (a word error rate). A point is dominated when another has energy <= and quality at least as
    good, one of them strictly. Equal points do not dominate each other (both are on the front).
    Points whose energy or quality is missing (None, NaN, inf) or whose energy is not positive are
    never on the front."""
    sign = 1.0 if higher_is_better else -1.0
    valid = []
    for i, p in enumerate(points):
        e, q = (number(p[0]), number(p[1])) if p is not None else (None, None)
        if e is None or q is None or e <= 0:
            continue
        valid.append((e, -sign * q, i))  # sort key: energy up, quality best first
    valid.sort()
    front: list[int] = []
    best = -math.inf  # best signed quality among strictly lower energies
    k = 0
    while k < len(valid):
        e = valid[k][0]
        group = []
        while k < len(valid) and valid[k][0] == e:
            group.append(valid[k])
            k += 1
        top = -group[0][1]  # best signed quality at this energy
        if top > best:
            front.extend(i for _, negq, i in group if -negq == top)
            best = top
    return front


# --------------------------------------------------------------------------------------------
# Reference points


def _graded_pairs(rows: Iterable[Mapping]) -> dict:
    """{(catalogue_version, rules_version, device_data_version): [(task, device_class), ...]} of the
    ok/skipped rows with a task and a device class, in first-seen order."""
    out: dict = {}
    for r in rows:
        if text(r.get("status")) not in GRADED_STATUSES:
            continue
        task, dc = text(r.get("task")), text(r.get("device_class"))
        if not task or not dc:
            continue
        key = (text(r.get("catalogue_version")) or None, text(r.get("rules_version")) or None,
               text(r.get("device_data_version")) or None)
        pairs = out.setdefault(key, [])
        if (task, dc) not in pairs:
            pairs.append((task, dc))
    return out


def _unavailable(task: str, dc: str, reason: str, higher_is_better: bool = True, metric: str = "") -> dict:
    return {"task": task, "device_class": dc, "model_id": None, "name": None, "energy_j": None, "quality": None,
            "quality_metric": metric, "higher_is_better": higher_is_better, "unavailable": one_line(reason, 300)}


def _context(catalogue_version, rules_version, device_data_version, device_data):
    """The context of the rows' data versions; an own device-data file (``device_data``, what the
    batch ran with) is used when the shipped data has no such version and the file's version matches."""
    from eeki_label.errors import EekiError
    from eeki_label.pipeline import load_context

    try:
        return load_context(rules_version, catalogue_version, device_data_version), None
    except EekiError as e:
        first = e
    if device_data and device_data != device_data_version:
        try:
            ctx = load_context(rules_version, catalogue_version, device_data)
        except EekiError as e:
            return None, f"{first}; {e}"
        if device_data_version is None or ctx.devices.version == device_data_version:
            return ctx, None
        return None, (f"{first}; the device-data file {one_line(device_data).rsplit('/', 1)[-1]} has version "
                      f"{ctx.devices.version}, not {device_data_version}")
    return None, str(first)


def reference_points(rows: Iterable[Mapping], *, device_data: "str | None" = None) -> list[dict]:
    """The catalogue references of every (task, device class) in the ok/skipped rows, priced on that
    device class with the catalogue, rules and device data named in the rows (as a label prices its
    reference: ``pipeline.reference_energy``).

    Each point: ``task``, ``device_class``, ``model_id``, ``name``, ``energy_j`` (J per unit of the
    task's work; None when the reference does not fit the device class), ``quality`` (published),
    ``quality_metric``, ``higher_is_better`` (the task's metric direction) and ``unavailable`` (None).
    Where the references of a (task, device class) cannot be priced (device data that is an own file
    not given as ``device_data``, a task without references, a device class the data lacks), one entry
    with ``model_id`` None and ``unavailable`` saying why stands for them, so the page can say so.
    ``device_data``: the ``--device-data`` the batch ran with, used when the rows name a version that
    is not shipped (an own file from ``eeki-label calibrate``)."""
    from eeki_label.energy.host import HOST_CLASS_ID
    from eeki_label.errors import EekiError
    from eeki_label.pipeline import reference_energy

    points: list[dict] = []
    for (cat_v, rules_v, dev_v), pairs in _graded_pairs(rows).items():
        ctx, why = _context(cat_v, rules_v, dev_v, device_data)
        if ctx is None:
            for task, dc in pairs:
                points.append(_unavailable(task, dc, f"references not priced: {why}"))
            continue
        for task, dc in pairs:
            tdef = ctx.catalogue.find(task)
            hib = tdef.higher_is_better if tdef is not None else True
            metric = tdef.metric if tdef is not None else ""
            if dc == HOST_CLASS_ID:
                points.append(_unavailable(task, dc, "the host class is measured on the assessing machine; its "
                                                     "references are not estimated (each label names the reference it "
                                                     "was graded against)", hib, metric))
                continue
            if tdef is not None and task not in ctx.catalogue.tasks:
                points.append(_unavailable(task, dc, f"catalogue {ctx.catalogue.version} lists task {task} without "
                                                     f"references yet", hib, metric))
                continue
            try:
                refs = ctx.catalogue.for_task(task)
                device = ctx.devices.get(dc)
            except EekiError as e:
                points.append(_unavailable(task, dc, f"references not priced: {e}", hib, metric))
                continue
            if not refs:
                points.append(_unavailable(task, dc, f"catalogue {ctx.catalogue.version} has no references for "
                                                     f"task {task}", hib, metric))
                continue
            energy = reference_energy(ctx, device)
            for ref in refs:
                points.append({"task": task, "device_class": dc, "model_id": ref.id, "name": ref.name,
                               "energy_j": energy(ref), "quality": ref.quality,
                               "quality_metric": ref.quality_metric or metric, "higher_is_better": hib,
                               "unavailable": None})
    return points


# --------------------------------------------------------------------------------------------
# Page model


@dataclass(frozen=True)
class Axis:
    lo: float
    hi: float
    start: float
    end: float
    log: bool

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(v)
        return self.start + (v - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def _x_axis(values: Sequence[float]) -> "tuple[Axis, list[tuple[float, str]]]":
    logs = [math.log10(v) for v in values]
    lo, hi = (min(logs), max(logs)) if logs else (-3.0, 0.0)
    if hi - lo < 0.5:
        mid = (hi + lo) / 2
        lo, hi = mid - 0.5, mid + 0.5
    pad = (hi - lo) * 0.06
    lo, hi = lo - pad, hi + pad
    axis = Axis(lo, hi, PAD_L, PLOT_W - PAD_R, True)
    ticks = []
    steps = (1, 2, 5) if hi - lo < 3.5 else ((1, 3) if hi - lo < 5 else (1,))
    for decade in range(math.floor(lo), math.ceil(hi) + 1):
        for m in steps:
            v = m * 10.0 ** decade
            if lo <= math.log10(v) <= hi:
                ticks.append((v, tick_energy(v)))
    return axis, ticks


def tick_energy(energy_j: float) -> str:
    """A round energy for an axis tick: ``1 mJ``, ``20 µJ``, ``5 J``, ``2 kJ``."""
    for unit, factor in (("kJ", 1e3), ("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9)):
        if abs(energy_j) >= factor * 0.999:
            return f"{energy_j / factor:.3g} {unit}"
    return f"{energy_j:.3g} J"


def _nice_step(span: float, count: int = 8) -> float:
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _y_axis(values: Sequence[float], higher_is_better: bool = True) -> "tuple[Axis, list[tuple[float, str]]]":
    """Quality, better up: a lower-is-better metric (a word error rate) runs downwards."""
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    bottom, top = PLOT_H - PAD_B, PAD_T
    axis = Axis(lo, hi, bottom, top, False) if higher_is_better else Axis(lo, hi, top, bottom, False)
    step = _nice_step(hi - lo)
    ticks, v = [], math.ceil(lo / step) * step
    while v <= hi + 1e-12:
        ticks.append((v, f"{round(v, 10):g}"))
        v += step
    return axis, ticks


def _overlaps(box, boxes) -> bool:
    return any(not (box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3]) for b in boxes)


def _place_labels(items: list[dict], hard: list, soft: list) -> None:
    """Put each item's ``label`` next to its marker (right, left, then above and below, further out):
    at the first spot clear of ``hard`` (placed labels, labelled markers) and ``soft`` obstacles
    (other markers, the front's line), else the first clear of ``hard``, else right of the marker.
    Sets ``lx``, ``ly``, ``anchor`` and ``leader`` (a line back to the marker when moved off its row);
    each placed label becomes a hard obstacle."""
    x0, x1, y0, y1 = PAD_L + 2, PLOT_W - PAD_R - 2, PAD_T + 2, PLOT_H - PAD_B - 2
    for it in items:
        w = CHAR_W * len(it["label"]) + 2
        spots = []
        for dy in (0, -11, 11, -22, 22, -33, 33):
            for lx, anchor in ((it["x"] + 8, "start"), (it["x"] - 8, "end")):
                ly = it["y"] + 4 + dy
                left = lx if anchor == "start" else lx - w
                box = (left, ly - LABEL_H + 2, left + w, ly + 2)
                if box[0] >= x0 and box[2] <= x1 and box[1] >= y0 and box[3] <= y1:
                    spots.append((lx, ly, anchor, box, dy != 0))
        chosen = next((sp for sp in spots if not _overlaps(sp[3], hard) and not _overlaps(sp[3], soft)), None) \
            or next((sp for sp in spots if not _overlaps(sp[3], hard)), None)
        if chosen is None:  # no free spot: right of the marker, clamped into the plot
            anchor = "start" if it["x"] + 8 + w <= x1 else "end"
            lx = it["x"] + 8 if anchor == "start" else it["x"] - 8
            ly = min(max(it["y"] + 4, y0 + LABEL_H), y1)
            left = lx if anchor == "start" else lx - w
            chosen = (lx, ly, anchor, (left, ly - LABEL_H + 2, left + w, ly + 2), False)
        lx, ly, anchor, box, moved = chosen
        leader = (round(lx - 2 if anchor == "start" else lx + 2, 1), round(ly - 4, 1)) if moved else None
        it.update(lx=round(lx, 1), ly=round(ly, 1), anchor=anchor, leader=leader)
        hard.append(box)


def _basename(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or path


def _model_view(r: Mapping, n: int) -> dict:
    index, lo, hi = number(r.get("index")), number(r.get("index_ci95_low")), number(r.get("index_ci95_high"))
    energy, quality = number(r.get("energy_j")), number(r.get("quality"))
    orig, nnc = number(r.get("original_bytes")), number(r.get("transfer_bytes"))
    letter = text(r.get("class"))
    letter = letter if letter in CLASSES else ""
    unit = text(r.get("energy_unit"), 40) or "inference"
    nnc_text = "n/a"
    if nnc is not None:
        nnc_text = human_size(nnc) + (f" ({nnc / orig * 100:.1f} %)" if orig else "")
    return {
        "n": n, "path": text(r.get("path"), 300), "short": text(_basename(text(r.get("path"))), 40),
        "sha256": text(r.get("sha256"), 64), "class": letter, "class_rank": CLASSES.index(letter) if letter else None,
        "reason": text(r.get("reason"), 300), "index": index,
        "index_text": sig(index, 3) if index is not None else "n/a",
        "ci_text": f"{sig(lo, 3)} to {sig(hi, 3)}" if lo is not None and hi is not None else "",
        "energy_j": energy, "energy_text": human_energy(energy) if energy is not None else "n/a", "unit": unit,
        "quality": quality, "quality_text": f"{quality:g}" if quality is not None else "not declared",
        "quality_metric": text(r.get("quality_metric"), 60), "nnc_bytes": nnc, "nnc_text": nnc_text,
        "method": text(r.get("method"), 20), "status": text(r.get("status"), 20),
        "reference_id": text(r.get("reference_id"), 120), "label_file": text(r.get("label_file"), 300),
        "pareto": False,
    }


def _scatter(models: list[dict], refs: list[dict], higher_is_better: bool) -> dict:
    plotted = [m for m in models if m["energy_j"] is not None and m["energy_j"] > 0 and m["quality"] is not None]
    rpts = [r for r in refs if number(r.get("energy_j")) is not None and number(r["energy_j"]) > 0
            and number(r.get("quality")) is not None]
    xs = [m["energy_j"] for m in plotted] + [number(r["energy_j"]) for r in rpts]
    ys = [m["quality"] for m in plotted] + [number(r["quality"]) for r in rpts]
    xa, xticks = _x_axis(xs)
    ya, yticks = _y_axis(ys, higher_is_better)
    front = pareto_front([(m["energy_j"], m["quality"]) for m in plotted], higher_is_better=higher_is_better)
    for i in front:
        plotted[i]["pareto"] = True
    marks = [{"x": round(xa(m["energy_j"]), 1), "y": round(ya(m["quality"]), 1), "m": m} for m in plotted]
    ref_marks = [{"x": round(xa(number(r["energy_j"])), 1), "y": round(ya(number(r["quality"])), 1),
                  "label": text(r.get("name") or r.get("model_id"), 40), "r": r,
                  "energy_text": human_energy(number(r["energy_j"])), "quality_text": f"{number(r['quality']):g}"}
                 for r in rpts]
    step = ""
    if front:
        pts = [marks[i] for i in front]
        step = f"M{pts[0]['x']},{pts[0]['y']}" + "".join(f" H{p['x']} V{p['y']}" for p in pts[1:])
        step += f" H{PLOT_W - PAD_R}"
    # labels: the front's members first (they matter most), then the references
    def around(m, r=6):
        return (m["x"] - r, m["y"] - r, m["x"] + r, m["y"] + r)

    hard = [around(marks[i]) for i in front] + [around(m) for m in ref_marks]
    soft = [around(m) for m in marks if not m["m"]["pareto"]]
    if front:  # the step line's segments
        pts = [marks[i] for i in front]
        for a, b in zip(pts, pts[1:] + [{"x": PLOT_W - PAD_R, "y": pts[-1]["y"]}]):
            soft.append((min(a["x"], b["x"]), a["y"] - 2, max(a["x"], b["x"]), a["y"] + 2))
            soft.append((b["x"] - 2, min(a["y"], b["y"]), b["x"] + 2, max(a["y"], b["y"])))
    front_marks = sorted((marks[i] for i in front), key=lambda p: p["x"])
    for p in front_marks:
        p["label"] = p["m"]["short"]
    _place_labels(front_marks, hard, soft)
    _place_labels(ref_marks, hard, soft)
    return {
        "w": PLOT_W, "h": PLOT_H, "left": PAD_L, "right": PLOT_W - PAD_R, "top": PAD_T, "bottom": PLOT_H - PAD_B,
        "xticks": [{"x": round(xa(v), 1), "text": t} for v, t in xticks],
        "yticks": [{"y": round(ya(v), 1), "text": t} for v, t in yticks],
        "marks": marks, "ref_marks": ref_marks, "step": step, "front_count": len(front),
        "r": 5 if len(marks) <= 150 else 3.5,  # marker radius: smaller in a crowd
    }


def _section(key: tuple, rows: list[Mapping], refs: list[dict], n0: int) -> dict:
    task, dc = key
    models = [_model_view(r, n0 + i) for i, r in enumerate(rows)]
    models.sort(key=lambda m: (m["index"] is None, m["index"] if m["index"] is not None else 0.0, m["path"]))
    priced = [r for r in refs if r.get("model_id") is not None]
    notes = [text(r.get("unavailable")) for r in refs if r.get("model_id") is None and r.get("unavailable")]
    hib_values = {bool(r.get("higher_is_better", True)) for r in refs}
    higher_is_better = hib_values.pop() if len(hib_values) == 1 else True
    metric = next((m["quality_metric"] for m in models if m["quality_metric"]), "") or \
        next((text(r.get("quality_metric")) for r in refs if r.get("quality_metric")), "")
    units = sorted({m["unit"] for m in models})
    scatter = _scatter(models, priced, higher_is_better)
    return {
        "id": f"s{n0}", "task": task or "task unknown", "device_class": dc, "models": models,
        "metric": metric, "units": units, "unit_text": " / ".join(units) or "inference",
        "higher_is_better": higher_is_better, "scatter": scatter, "ref_notes": notes,
        "refs_unfit": [text(r.get("name") or r.get("model_id"), 60) for r in priced
                       if number(r.get("energy_j")) is None],
        "no_quality": [m for m in models if m["quality"] is None],
        "no_energy": [m for m in models if (m["energy_j"] is None or m["energy_j"] <= 0) and m["quality"] is not None],
        "not_graded": [m for m in models if not m["class"]],
    }


def _model_status(rows: list[Mapping]) -> str:
    statuses = {text(r.get("status")) for r in rows}
    if "failed" in statuses:
        return "failed"
    if statuses and statuses <= {"skipped"}:
        return "skipped"
    return "ok" if "ok" in statuses else (sorted(statuses)[0] if statuses else "unknown")


def leaderboard_context(rows: Sequence[Mapping], references: Sequence[Mapping], *, title: str,
                        generated_at: str) -> dict:
    """What the template shows (plain data; the template escapes every string)."""
    rows = list(rows)
    by_model: dict[str, list] = {}
    for r in rows:
        by_model.setdefault(text(r.get("path")) + "\0" + text(r.get("sha256")), []).append(r)
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    for group in by_model.values():
        s = _model_status(group)
        counts[s] = counts.get(s, 0) + 1
    groups: dict[tuple, list] = {}
    for r in rows:
        if text(r.get("status")) in GRADED_STATUSES and text(r.get("device_class")):
            groups.setdefault((text(r.get("task"), 80), text(r.get("device_class"), 80)), []).append(r)
    refs_by: dict[tuple, list] = {}
    for p in references:
        refs_by.setdefault((text(p.get("task"), 80), text(p.get("device_class"), 80)), []).append(dict(p))
    sections, n = [], 0
    for key in sorted(groups, key=lambda k: (k[0] == "", k[0], k[1])):
        sections.append(_section(key, groups[key], refs_by.get(key, []), n))
        n += len(groups[key])
    failed = sorted(({"path": text(r.get("path"), 300), "sha256": text(r.get("sha256"), 64),
                      "exit_code": text(r.get("exit_code")), "reason": text(r.get("reason"), 400),
                      "seconds": number(r.get("seconds"))}
                     for r in rows if text(r.get("status")) == "failed"), key=lambda f: f["path"])

    def versions(field):
        return sorted({text(r.get(field), 80) for r in rows if text(r.get(field))})

    return {
        "title": text(title, 200), "generated_at": text(generated_at, 80), "models": len(by_model), "rows": len(rows),
        "counts": counts, "sections": sections, "failed": failed,
        "catalogue_versions": versions("catalogue_version"), "rules_versions": versions("rules_version"),
        "device_data_versions": versions("device_data_version"),
        "tasks": sorted({s["task"] for s in sections}), "device_classes": sorted({s["device_class"] for s in sections}),
        "colours": CLASS_COLOURS, "classes": CLASSES, "sig": sig,
    }


def _template():
    from jinja2 import Environment, StrictUndefined

    source = resources.files("eeki_label.render.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)


def render_leaderboard(rows: Sequence[Mapping], references: Sequence[Mapping], *, title: str = "eeki-label batch",
                       generated_at: str = "") -> str:
    """The batch's leaderboard as one self-contained HTML document (see the module docstring)."""
    from eeki_label import __version__

    return _template().render(version=__version__,
                              **leaderboard_context(rows, references, title=title, generated_at=generated_at))
