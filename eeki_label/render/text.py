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


def _wrapped_table(headers: list[str], rows: list[list[str]], max_widths: list[int]) -> str:
    """A Markdown-style table whose cells wrap within ``max_widths`` (a long cell adds lines, not columns)."""
    import textwrap

    widths = [min(mw, max(len(h), *(len(r[i]) for r in rows)) if rows else len(h))
              for i, (h, mw) in enumerate(zip(headers, max_widths))]

    def lines(cells):
        wrapped = [textwrap.wrap(c, w, break_long_words=True, break_on_hyphens=False) or [""]
                   for c, w in zip(cells, widths)]
        height = max(len(w) for w in wrapped)
        return ["| " + " | ".join((w[k] if k < len(w) else "").ljust(width) for w, width in zip(wrapped, widths)) + " |"
                for k in range(height)]

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = lines(headers) + [sep]
    for r in rows:
        out += lines(r)
    return "\n".join(out)


def _para(label: str, text: str, width: int = 100) -> str:
    """``LABEL  text`` wrapped with a hanging indent."""
    import textwrap

    return textwrap.fill(text, width, initial_indent=f"{label:<11}", subsequent_indent=" " * 11,
                         break_on_hyphens=False)


def summary(labels) -> str:
    """What a person reads once: the model, task, index definition and class bands, a table per device
    class (energy with its unit, reference, index, class), why each reference is the reference, and
    why a class is not graded. Raw values stay in the JSON."""
    from eeki_label.render.common import (
        INDEX_DEFINITION, bands_text, human_count, human_energy, human_size, humanise_bytes_in, per_1000_text,
        reference_text, task_text, tolerance_text,
    )

    first = labels.labels[0]
    m = first.model
    head = [
        _para("model", f"{m.file_name} (sha256 {m.sha256[:16]}…): {m.parameters:,} parameters, "
                       f"{human_size(m.weight_bytes)} of weights, {human_count(m.macs)} multiply-accumulates "
                       f"per {first.inference.unit or 'inference'}"),
        _para("task", task_text(first)),
        _para("rules", f"{first.rules.id} {first.rules.version}, catalogue {first.catalogue.id} "
                       f"{first.catalogue.version}"),
        _para("index", f"{INDEX_DEFINITION}. Classes: {bands_text(first.label.thresholds)}."),
    ]
    rows = []
    for lab in labels.labels:
        g = lab.label
        rows.append([
            lab.device_class.id, human_energy(lab.inference.energy_j), per_1000_text(lab), lab.inference.method,
            lab.reference.model_id or "none", f"{g.index:.3g}" if g.index is not None else "n/a",
            g.class_ or "not graded",
        ])
    unit = first.inference.unit or "inference"
    table = _wrapped_table(["device class", f"per {unit}", "per 1,000", "method", "reference", "index", "class"],
                           rows, [24, 13, 11, 9, 32, 7, 10])
    why = {}
    for lab in labels.labels:
        why.setdefault(reference_text(lab), []).append(lab.device_class.id)
    refs = [_para("reference", f"{text} [{', '.join(ids)}]") for text, ids in why.items()]
    refs += [_para("margin", f"{lab.device_class.id}: {tolerance_text(lab)}") for lab in labels.labels
             if lab.label.index_ci95 is not None]
    reasons: dict[str, list[str]] = {}
    for lab in labels.labels:
        if not lab.label.gradable:
            reasons.setdefault(humanise_bytes_in(lab.label.reason or "no reason given"), []).append(lab.device_class.id)
    ungraded = [_para("not graded", f"{', '.join(ids)}: {reason}") for reason, ids in reasons.items()]
    rt = first.runtime
    tail = [_para("runtime", f"this host: median {rt.latency_ms_median:.3g} ms, p90 {rt.latency_ms_p90:.3g} ms over "
                             f"{rt.runs} runs (the estimates do not depend on it)")] if rt else []
    if first.inference.prefill is not None:
        tail += [_para("decoder", line) for line in decoder_lines(labels)]
    if first.transfer is not None:
        tail.append(_para("transfer", transfer_line(first.transfer).removeprefix("transfer: ")))
    line = recycling_line(first.recycling)
    if line:
        tail.append(_para("recycling", line.removeprefix("recycling: ")))
    notes = sorted({n for lab in labels.labels for n in lab.label.notes})
    return "\n".join(head + ["", table, ""] + refs + ungraded + tail + [_para("note", n) for n in notes])


def decoder_lines(labels) -> list[str]:
    """Cached decoders (docs/attention.md): the lengths and boundary, then per class the energy per query and per
    output token."""
    first = labels.labels[0].inference
    lines = [f"per query: {first.prompt_tokens} prompt + {first.output_tokens} output tokens"
             f"{f' (preset {first.length_preset})' if first.length_preset else ''}; prefill "
             f"{first.prefill.macs / 1e9:.4g} GMAC" + (f", decode {first.decode.macs_per_token / 1e6:.4g} MMAC and "
                                                      f"{first.decode.kv_cache_bytes_per_token:,} KV-cache bytes per token"
                                                      if first.decode else "")]
    for lab in labels.labels:
        inf = lab.inference
        if inf.energy_per_query_j is None:
            continue
        tok = f", {_mj(inf.energy_per_output_token_j)} mJ per output token (decode)" if inf.energy_per_output_token_j \
            is not None else ""
        lines.append(f"  {lab.device_class.id}: {_mj(inf.energy_per_query_j)} mJ per query{tok}, batch {inf.batch_size}")
    if first.boundary:
        lines.append(f"  boundary: {first.boundary.split(', batch')[0]}; whole-system energy of each class; "
                     f"{first.boundary.rsplit('; ', 1)[-1]}")
    return lines


def recycling_line(r) -> str | None:
    """One line on reuse of a pretrained base and the training energy it saves (None: nothing to say)."""
    if r is None:
        return None
    parts = []
    if r.base is not None:
        b = r.base
        parts.append(f"base {b.file_name}: {b.frozen.share:.1%} of parameters frozen, {b.fine_tuned.share:.1%} "
                     f"fine-tuned, {b.new.share:.1%} new")
    elif r.structure is not None and r.structure.recognised:
        s = r.structure
        differs = f"; differs: {', '.join(s.differing_layers[:3])}{'…' if len(s.differing_layers) > 3 else ''}" \
            if s.differing_layers else ""
        parts.append(f"structure = {s.name} architecture, {s.coverage:.1%} of weight-layer parameters{differs} "
                     "(structural match, not proof of reuse)")
    t = r.training
    if t is not None:
        saved = ", ".join(f"{x.id} {x.saving_wh:.4g} Wh ({x.saving_share:.0%})" for x in t.scenarios
                          if x.saving_wh is not None and x.saving_share is not None)
        parts.append(f"{'potential ' if t.basis == 'structural-match' else ''}training energy saved vs scratch "
                     f"({t.train_samples:,} samples, {t.device_class}): {saved}")
    if r.update is not None:
        u = r.update
        size = f"{u.coded_bytes:,} bytes NNC" if u.coded_bytes is not None else f"{u.raw_bytes:,} bytes raw"
        parts.append(f"update {u.changed_tensors} tensor(s), {size} (full weights {u.full_model_weight_bytes:,} bytes)")
    return "recycling: " + "; ".join(parts) if parts else None


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


#: Issue 13's target for the held-out error of a fitted class.
TARGET_MEDIAN_ABS_ERROR = 0.30
TARGET_WORST_RATIO = 2.0


def calibration_table(ctx) -> str:
    """Measured vs predicted for every workload and cross-check of every device class, with the
    leave-one-workload-out error of fitted classes (device data 2.0.0) and their median and worst."""
    if not any(d.workloads for d in ctx.devices.classes):
        return _anchor_table(ctx)
    return _fitted_tables(ctx)


def _anchor_table(ctx) -> str:
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
    anchors = _table(["class", "row", "system", "model", "mode", "measured mJ", "predicted mJ", "deviation",
                      "source"], rows)
    return header + anchors + "\n\n" + depthwise_check(ctx)


def _pct(x) -> str:
    return f"{x * 100:+.1f} %"


def _fitted_tables(ctx) -> str:
    from eeki_label.energy.estimate import estimate_inference

    summary_rows, rows, sources = [], [], []
    for d in ctx.devices.classes:
        h = d.held_out
        if h.rows:
            med, worst = h.median_abs_error, h.worst_ratio
            verdict = ", ".join([
                f"median {'met' if med <= TARGET_MEDIAN_ABS_ERROR else 'MISSED'}",
                f"worst {'met' if worst <= TARGET_WORST_RATIO else 'MISSED'}"])
            summary_rows.append([d.id, d.reference_system, str(len(d.workloads)), f"{d.j_per_effective_mac * 1e12:.4g}",
                                 f"{d.bytes_weight:.3f}" + (" (at bound)" if d.bytes_weight_at_bound else ""),
                                 f"{med * 100:.1f} %", f"{worst:.2f}x ({h.worst.name})", verdict])
        else:
            summary_rows.append([d.id, d.reference_system, str(len(d.workloads)), f"{d.j_per_effective_mac * 1e12:.4g}",
                                 f"{d.bytes_weight:.3f} (prior)", "n/a", "n/a", "one workload: no held-out error"])
        loo = {r.name: r for r in h.rows}
        for w in d.workloads:
            name = w.benchmark or w.model
            fitted = estimate_inference(w.work, d).energy_j
            r = loo.get(name)
            rows.append([d.id, "workload", name, w.mode, _mj(w.energy_j), _mj(fitted), _pct(fitted / w.energy_j - 1),
                         _mj(r.predicted_j) if r else "n/a", _pct(r.error_rel) if r else "n/a"])
            sources.append(f"- {d.id} / {name}: {w.source}")
        for x in d.cross_checks:
            predicted = estimate_inference(x.work, d).energy_j
            rows.append([d.id, "cross-check", f"{x.model} on {x.system}", x.mode, _mj(x.energy_j), _mj(predicted),
                         _pct(predicted / x.energy_j - 1) if predicted else "n/a", "n/a", "n/a"])
            sources.append(f"- {d.id} / cross-check {x.system}: {x.source}")
    devs = ctx.devices
    header = (
        f"Device data {devs.version} ({devs.file}, sha256 {devs.sha256[:16]}…), formula {devs.formula}.\n"
        "Each class's k and bytes weight w are fitted by least squares in log space on every workload of its one "
        "reference system (eeki_label/energy/fit.py). 'fit' is the prediction by the fit on all workloads; "
        "'held out' is the prediction by the fit on the OTHER workloads (leave-one-workload-out), which is the "
        f"class's stated error. Target: median held-out error <= {TARGET_MEDIAN_ABS_ERROR:.0%}, worst within "
        f"{TARGET_WORST_RATIO:g}x. Cross-checks are other systems, predicted with the class's constants.\n\n"
    )
    summary_t = _table(["class", "reference system", "workloads", "k pJ/eff. MAC", "w", "held-out median",
                        "held-out worst", "target"], summary_rows)
    detail = _table(["class", "row", "workload", "mode", "measured mJ", "fit mJ", "fit error", "held-out mJ",
                     "held-out error"], rows)
    omitted = ("\n\nOmitted classes: " + "; ".join(devs.omitted)) if devs.omitted else ""
    return (header + summary_t + "\n\n" + detail + "\n\nSources:\n\n" + "\n".join(sources) + omitted + "\n\n"
            + depthwise_check(ctx))


#: BRIEF §7: depthwise-separable networks run at a lower MAC rate than ResNet-50, median factor about
#: 0.33 across measured pairs (MLPerf results of MobileNet and ResNet-50 on the same systems).
DEPTHWISE_MAC_RATE_FACTOR_MEASURED = 0.33


def depthwise_check(ctx) -> str:
    """Cross-check of the data-movement term: MobileNetV2 vs ResNet-50 on each class."""
    from eeki_label.energy.estimate import estimate_inference

    r50 = ctx.catalogue.model("torchvision/resnet50")
    mnv2 = ctx.catalogue.model("torchvision/mobilenet_v2")
    mac_ratio = mnv2.work.macs / r50.work.macs
    rows = []
    for d in ctx.devices.classes:
        e_r50 = estimate_inference(r50.work, d).energy_j
        e_mnv2 = estimate_inference(mnv2.work, d).energy_j
        if e_r50 and e_mnv2:
            rows.append([d.id, f"{e_mnv2 / e_r50:.3f}", f"{mac_ratio / (e_mnv2 / e_r50):.2f}",
                         f"{DEPTHWISE_MAC_RATE_FACTOR_MEASURED:.2f}"])
    intro = (
        f"Depthwise cross-check: MobileNetV2 needs {mac_ratio:.3f}x the MACs of ResNet-50. The implied MAC-rate "
        "factor (MAC ratio / predicted energy ratio) is to be compared with the measured median of about "
        f"{DEPTHWISE_MAC_RATE_FACTOR_MEASURED} (BRIEF section 7).\n\n"
    )
    return intro + _table(["class", "predicted MobileNetV2 / ResNet-50 energy", "implied MAC-rate factor",
                           "measured median factor"], rows)


def catalogue_table(cat) -> str:
    rows = [[m.id, m.task, f"{m.quality:g}", "x".join(map(str, m.input_shape)), f"{m.work.parameters:,}",
             f"{m.work.macs / 1e9:.4g}"] for m in cat.models]
    head = f"catalogue {cat.id} {cat.version} (sha256 {cat.sha256[:16]}…)\n\n"
    trows = []
    for t in cat.tasks.values():
        n = len(cat.for_task(t.id))
        trows.append([t.id, t.unit_description if t.unit != "inference" else "one inference",
                      f"{t.metric} ({'higher' if t.higher_is_better else 'lower'} is better)",
                      t.dataset, f"{n}" if t.status == "graded" else f"{t.status}: {n}"])
    tasks = _table(["task", "unit of work", "metric", "dataset", "references"], trows)
    known = "".join(f"\nknown, not graded: {t.id} ({t.name}): {t.why_not_catalogued}"
                    for t in cat.known_tasks.values())
    return head + tasks + known + "\n\n" + _table(["model", "task", "quality", "input", "parameters", "GMAC"], rows)


def rules_table(rule_sets) -> str:
    out = []
    for r in rule_sets:
        bounds = ", ".join(f"{c} <= {b:g}" for c, b in r.thresholds) + ", G above"
        out.append(f"{r.id} {r.version} (sha256 {r.sha256[:16]}…): {bounds}; "
                   + (f"default task {r.default_task}" if r.default_task else "task declared or detected, no default"))
    return "\n".join(out)


def transfer_line(t) -> str:
    """One summary line of a label's transfer section."""
    if t.status == "failed":
        return f"transfer: NNC could not code the model ({t.failure.error_type}: {t.failure.error})"
    one = next((x for x in t.scenarios if x.id == "one-time"), None)
    fed = next((x for x in t.scenarios if x.id == "federated-learning"), None)
    parts = [f"transfer: {t.original_bytes / 1e6:.3g} MB -> {t.compressed_bytes / 1e6:.3g} MB with NNC "
             f"({t.ratio * 100:.1f} %), max output error {t.fidelity.max_rel_error * 100:.2g} % "
             f"(bound {t.fidelity.bound_max_rel_error * 100:g} %, {t.fidelity.calibration} inputs)"]
    from eeki_label.render.common import human_size, human_wh

    if one:
        parts.append(f"one-time {human_wh(one.uncompressed_wh)} -> {human_wh(one.nnc_wh)} "
                     f"({-one.nnc_saving_share * 100:+.0f} %)")
    if fed:
        parts.append(f"federated {human_wh(fed.uncompressed_wh)} -> {human_wh(fed.nnc_wh)} "
                     f"({-fed.nnc_saving_share * 100:+.0f} %)")
    if t.delta is not None:
        parts.append(f"update vs the {t.delta.reference} model {human_size(t.delta.compressed_bytes)}")
    elif t.failure is not None:
        parts.append(f"no delta: {t.failure.error_type}")
    return "; ".join(parts)


def transfer_table(t, baselines=None) -> str:
    """The transfer section as tables: sizes and fidelity, then every scenario with and without NNC."""
    from eeki_label.render.common import human_size, yes_no

    qmin, qmax = t.qp.get("min"), t.qp.get("max")
    qp = f"QP {qmin:g}..{qmax:g}" if qmin is not None and qmax is not None else "no tensor coded with NNC"
    top1 = (f"{t.fidelity.min_top1_agreement * 100:.1f} %" if t.fidelity.min_top1_agreement is not None
            else "n/a (no classifier-like output)")
    price = f"{t.price_eur_per_kwh:g} EUR/kWh" if t.price_eur_per_kwh is not None else "price not set"
    head = (
        f"{t.standard} via {t.implementation}\n"
        f"uncompressed {human_size(t.original_bytes)}; NNC {human_size(t.compressed_bytes)} ({t.ratio * 100:.1f} %: "
        f"bitstream {human_size(t.bitstream_bytes)} + graph {human_size(t.graph_bytes)}); {qp}; "
        f"encode {t.encode_s:.2f} s, decode {t.decode_s:.2f} s on this host (priced: {t.device_encode_s:.3g} s and "
        f"{t.device_decode_s:.3g} s on the transfer device)\n"
        f"fidelity: max relative output error {t.fidelity.max_rel_error * 100:.2f} % (bound "
        f"{t.fidelity.bound_max_rel_error * 100:g} %), top-1 agreement {top1}, "
        f"{t.fidelity.samples} {t.fidelity.calibration} samples; meets the bound: {yes_no(t.fidelity.meets_bound)}\n"
        f"link {t.link_up_bit_s / 1e6:g}/{t.link_down_bit_s / 1e6:g} Mbit/s up/down, device {t.transfer_power_w:g} W, "
        f"grid {t.country} {t.grid_g_co2_per_kwh:g} g CO2/kWh, {price}\n\n"
    )
    rows = [[x.id, x.description, f"{x.transfers}/{x.encodes}/{x.decodes}", f"{x.uncompressed_wh:.4g}",
             f"{x.nnc_wh:.4g}", f"{-x.nnc_saving_share * 100:+.1f} %",
             f"{x.nnc_delta_wh:.4g}" if x.nnc_delta_wh is not None else "n/a",
             f"{x.uncompressed_co2_g:.3g} / {x.nnc_co2_g:.3g}"] for x in t.scenarios]
    out = head + _table(["scenario", "what", "transfers/encodes/decodes", "uncompressed Wh", "NNC Wh", "change",
                         "NNC delta Wh", "g CO2 (unc./NNC)"], rows)
    if baselines is not None:
        b = baselines
        brow = [["raw float32", f"{b.float32_bytes:,}"],  # exact byte counts: the point of this table
                ["zstd-19 (lossless)", f"{b.zstd19_bytes:,}" if b.zstd19_bytes else "n/a"],
                ["uniform 8-bit + zstd-19", f"{b.uint8_zstd19_bytes:,}" if b.uint8_zstd19_bytes else "n/a"],
                [f"single-QP NNC (QP {b.single_qp})", f"{b.single_qp_nnc_bytes:,}" if b.single_qp_nnc_bytes else "n/a"],
                ["eeki-label NNC (per-tensor QPs)", f"{t.bitstream_bytes:,}"]]
        out += "\n\nbaselines on the same tensors:\n" + _table(["coding", "bytes"], brow)
    return out
