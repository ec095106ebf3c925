"""Plain-text renderings for the terminal and the docs (pure functions, no I/O)."""

from __future__ import annotations

from eeki_label.units import j_to_mj


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (readable in a terminal and in the docs alike)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def _mj(energy_j) -> str:
    return "n/a" if energy_j is None else f"{j_to_mj(energy_j):.4g}"


def summary(labels) -> str:
    first = labels.labels[0]
    m = first.model
    head = (
        f"{m.file_name}  sha256 {m.sha256[:16]}…  {m.parameters:,} parameters, {m.macs / 1e9:.4g} GMAC, "
        f"task {first.task.id}{'' if first.task.declared else ' (not declared)'}, "
        f"rules {first.rules.version}, catalogue {first.catalogue.version}"
    )
    rows = []
    for lab in labels.labels:
        g = lab.label
        rows.append([
            lab.device_class.id, _mj(lab.inference.energy_j), lab.inference.method,
            lab.reference.model_id or "n/a", _mj(lab.reference.energy_j),
            f"{g.index:.3g}" if g.index is not None else "n/a",
            g.class_ or ("n/a: " + (g.reason or "")),
        ])
    table = _table(["device class", "mJ/inference", "method", "reference", "ref mJ", "index", "class"], rows)
    notes = sorted({n for lab in labels.labels for n in lab.label.notes})
    rt = first.runtime
    tail = [f"runtime (this host): median {rt.latency_ms_median:.3g} ms, p90 {rt.latency_ms_p90:.3g} ms over {rt.runs} runs"] if rt else []
    return "\n".join([head, table] + tail + [f"note: {n}" for n in notes])


def devices_table(ctx) -> str:
    rows = [[
        d.id, d.reference_system, d.batch_mode, d.precision, f"{d.peak_macs_per_s:.3g}",
        f"{d.memory_bandwidth_bytes_per_s:.3g}", f"{d.ridge_mac_per_byte:.3g}", f"{d.j_per_effective_mac * 1e12:.4g}",
    ] for d in ctx.devices.classes]
    out = _table(["id", "reference system", "batch", "precision", "peak MAC/s", "memory B/s", "ridge MAC/B",
                  "pJ per eff. MAC"], rows)
    if ctx.devices.omitted:
        out += "\nomitted: " + "; ".join(ctx.devices.omitted)
    return out


def calibration_table(ctx) -> str:
    """Predicted vs measured for every anchor and cross-check of every device class."""
    from eeki_label.energy.estimate import estimate_inference

    rows = []
    for d in ctx.devices.classes:
        for kind, a in [("anchor (fitted)", d.anchor)] + [("cross-check", x) for x in d.cross_checks]:
            predicted = estimate_inference(a.work, d).energy_j
            rows.append([d.id, kind, a.system, a.model, a.mode, _mj(a.energy_j), _mj(predicted),
                         f"{(predicted / a.energy_j - 1) * 100:+.1f} %" if predicted else "n/a", a.source])
    header = (
        f"Device data {ctx.devices.version} (sha256 {ctx.devices.sha256[:16]}…), catalogue {ctx.catalogue.version}.\n"
        "Each class's constant is fitted on its anchor, which it therefore reproduces; cross-checks are other "
        "measured systems, predicted with the class's constant.\n\n"
    )
    return header + _table(["class", "row", "system", "model", "mode", "measured mJ", "predicted mJ", "deviation",
                            "source"], rows)


def catalogue_table(cat) -> str:
    rows = [[m.id, m.task, f"{m.quality:g}", "x".join(map(str, m.input_shape)), f"{m.work.parameters:,}",
             f"{m.work.macs / 1e9:.4g}"] for m in cat.models]
    head = f"catalogue {cat.id} {cat.version} (sha256 {cat.sha256[:16]}…)\n"
    tasks = "\n".join(f"task {t.id}: {t.name}; {t.dataset}; metric {t.metric}" for t in cat.tasks.values())
    return head + tasks + "\n\n" + _table(["model", "task", "quality", "input", "parameters", "GMAC"], rows)


def rules_table(rule_sets) -> str:
    out = []
    for r in rule_sets:
        bounds = ", ".join(f"{c} <= {b:g}" for c, b in r.thresholds) + ", G above"
        out.append(f"{r.id} {r.version} (sha256 {r.sha256[:16]}…): {bounds}; default task {r.default_task}")
    return "\n".join(out)
