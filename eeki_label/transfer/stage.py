"""The transfer stage of ``assess``: code the model with NNC once, then price the distribution
scenarios with and without it. Returns one immutable outcome (the label section and the bitstream);
no printing, no files.

Sizes (bytes): an uncompressed transfer moves the model file and its external data
(``original_bytes``); an NNC transfer moves the bitstream container plus the graph without its tensor
payloads (``graph_bytes`` = file + external data - stored tensor bytes), since a receiver needs both.
Scenario defaults (clients, rounds, updates, devices, country) come from the rule set's ``transfer``
section; link, device power, grid intensity and price from ``data/energy/transfer.json``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from eeki_label.errors import EekiError, InternalError, TransferError, UsageError
from eeki_label.model_io import LoadedModel
from eeki_label.models import (
    TransferDeltaInfo, TransferDeltaTensorsInfo, TransferFailedInfo, TransferFailureInfo, TransferFidelityInfo,
    TransferInfo, TransferScenarioInfo,
)
from eeki_label.transfer import scenarios as sc

IMPLEMENTATION = "nncodec 2.1.3 (Fraunhofer HHI reference software), driven through nncodec.nnc_core"


@dataclass(frozen=True)
class TransferOptions:
    """What the transfer stage does; None fields take the rule set's or the data file's defaults."""

    enabled: bool = True
    previous: "str | Path | None" = None
    calibration_data: "str | Path | None" = None
    clients: int | None = None
    rounds: int | None = None
    updates: int | None = None
    devices: int | None = None
    link: str | None = None
    link_up_mbit_s: float | None = None
    link_down_mbit_s: float | None = None
    country: str | None = None
    price_eur_per_kwh: float | None = None
    network: str | None = None
    """Key of ``network_kwh_per_gb`` in the data file to add network energy; None: devices only (as the study)."""
    time_limit_s: float | None = 600.0
    baselines: bool = False
    cache: bool = True
    """Reuse (and store) the coding in the content cache (:mod:`eeki_label.transfer.cache`; off with
    ``EEKI_LABEL_CACHE_DIR=off`` too). Never used with ``baselines``."""


@dataclass(frozen=True)
class TransferOutcome:
    info: "TransferInfo | TransferFailedInfo"
    """The label section; :class:`TransferFailedInfo` when NNC could not code the model."""
    bitstream: bytes | None
    """The NNC container of the full model (``decode --model MODEL`` rebuilds it); None when coding failed."""
    delta_bitstream: bytes | None
    """With a previous version: the container of the update (``decode --previous PREVIOUS`` rebuilds the
    model); None without one or when the delta could not be coded."""
    baselines: object = None
    """:class:`eeki_label.transfer.nnc.Baselines` when requested (raw, zstd-19, 8-bit + zstd, single QP)."""
    delta: object = None
    """The delta's :class:`eeki_label.transfer.nnc.NncResult` (per-tensor choices), when coded."""
    errors: tuple = ()
    """The codec errors the label records (whole model, then delta), for callers that must re-raise them."""

    @property
    def failure(self):
        """The failure record (whole model or delta), or None."""
        return getattr(self.info, "failure", None)


#: Largest ``--calibration-data`` accepted: the file, and the arrays it declares once decompressed.
MAX_CALIBRATION_BYTES = 2 * 1024**3


def load_calibration(path: "str | Path", max_bytes: int = MAX_CALIBRATION_BYTES, what: str = "--calibration-data") -> dict:
    """Arrays of an ``.npz`` file keyed by input name (no pickles). The file must be a regular file;
    the uncompressed sizes its members declare are checked before anything is inflated (a few KB of
    deflated zeros can declare gigabytes), and zipfile stops reading a member at its declared size."""
    import numpy as np

    from eeki_label.fileio import open_regular

    name = Path(path).name
    f = open_regular(path, UsageError, what)
    size = os.fstat(f.fileno()).st_size
    if size > max_bytes:
        f.close()
        raise UsageError(f"{what} {name}: {size:,} bytes, over the limit of {max_bytes:,}")
    try:
        with f, np.load(f, allow_pickle=False) as z:
            declared = sum(info.file_size for info in z.zip.infolist())
            if declared > max_bytes:
                raise UsageError(f"{what} {name}: its arrays declare {declared:,} bytes, over the limit "
                                 f"of {max_bytes:,}")
            return {k: z[k] for k in z.files}
    except UsageError:
        raise
    except Exception as e:  # zipfile/ValueError/OSError: not an npz of plain arrays
        raise UsageError(f"{what} {name}: not an .npz of arrays "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e


def fidelity_bound(rules_fidelity: dict):
    from eeki_label.transfer.fidelity import FidelityBound

    try:
        return FidelityBound(max_rel_error=float(rules_fidelity["relative_output_error_max"]),
                             min_top1_agreement=float(rules_fidelity["classifier_top1_agreement_min"]))
    except (KeyError, TypeError, ValueError) as e:
        raise TransferError(f"the rule set's fidelity section is incomplete: {e!r}") from e


def _defaults(rules_raw: dict) -> dict:
    t = rules_raw.get("transfer", {})
    return {k: t.get(k, v) for k, v in {"clients": 5, "rounds": 50, "updates": 12, "devices": 1}.items()}


def _scenario_info(comp: "sc.Comparison", description: str) -> TransferScenarioInfo:
    raw, nnc, delta = comp.uncompressed, comp.nnc, comp.nnc_delta
    return TransferScenarioInfo(
        id=comp.scenario, description=description, transfers=raw.counts.transfers, encodes=raw.counts.encodes,
        decodes=raw.counts.decodes, uncompressed_wh=raw.total_wh, nnc_wh=nnc.total_wh,
        nnc_saving_share=comp.saving(nnc), nnc_delta_wh=delta.total_wh if delta else None,
        nnc_delta_saving_share=comp.saving(delta) if delta else None,
        uncompressed_co2_g=raw.co2_g, nnc_co2_g=nnc.co2_g, uncompressed_cost_eur=raw.cost_eur,
        nnc_cost_eur=nnc.cost_eur,
    )


def price_scenarios(original_bytes: int, nnc: "sc.Payload", delta: "sc.Payload | None", params: "sc.Parameters",
                    link: "sc.Link", device: "sc.Device", grid: "sc.Grid", network_kwh_per_gb: float | None,
                    clients: int, rounds: int, updates: int, devices: int) -> list[TransferScenarioInfo]:
    """The three study scenarios with and without NNC (and delta coding where a delta payload is known)."""
    return [
        _scenario_info(sc.one_time(original_bytes, nnc, link, device, devices, network_kwh_per_gb, grid),
                       f"one trained model sent to {devices} device(s)"),
        _scenario_info(sc.periodic_updates(original_bytes, nnc, link, device, updates, devices, delta,
                                           network_kwh_per_gb, grid),
                       f"{updates} new versions, each sent to {devices} device(s)"),
        _scenario_info(sc.federated(original_bytes, nnc, link, device, clients, rounds, delta,
                                    network_kwh_per_gb, grid),
                       f"federated learning, {clients} clients x {rounds} rounds (training energy excluded)"),
    ]


def resolve_link(params: "sc.Parameters", options: TransferOptions) -> "sc.Link":
    from eeki_label import units

    base = params.link(options.link)
    if options.link_up_mbit_s is None and options.link_down_mbit_s is None:
        return base
    up = units.mbit_s_to_bit_s(options.link_up_mbit_s) if options.link_up_mbit_s is not None else base.up_bit_s
    down = units.mbit_s_to_bit_s(options.link_down_mbit_s) if options.link_down_mbit_s is not None else base.down_bit_s
    return sc.Link(up, down, "custom")


def network_intensity(params: "sc.Parameters", key: str | None) -> float | None:
    if key is None:
        return None
    if key not in params.network_kwh_per_gb:
        raise UsageError(f"--network {key!r}: known: {', '.join(sorted(params.network_kwh_per_gb))}")
    return params.network_kwh_per_gb[key]


@dataclass(frozen=True)
class _Pricing:
    params: "sc.Parameters"
    link: "sc.Link"
    device: "sc.Device"
    grid: "sc.Grid"
    network_kwh_per_gb: float | None
    counts: dict


def _pricing(rules_raw: dict, options: TransferOptions) -> _Pricing:
    params = sc.load_parameters()
    d = _defaults(rules_raw)
    counts = {k: getattr(options, k) if getattr(options, k) is not None else int(d[k])
              for k in ("clients", "rounds", "updates", "devices")}
    return _Pricing(params, resolve_link(params, options), params.device(),
                    params.grid(options.country, options.price_eur_per_kwh),
                    network_intensity(params, options.network), counts)


def _priced_fields(p: _Pricing, original_bytes: int, nnc: "sc.Payload", delta: "sc.Payload | None") -> dict:
    """The TransferInfo fields that depend on the link, device, grid and scenario counts."""
    return dict(
        link_up_bit_s=p.link.up_bit_s, link_down_bit_s=p.link.down_bit_s, transfer_power_w=p.device.transfer_power_w,
        codec_power_w=p.device.codec_power_w, country=p.grid.country, grid_g_co2_per_kwh=p.grid.g_co2_per_kwh,
        price_eur_per_kwh=p.grid.price_eur_per_kwh, parameters_sha256=p.params.sha256,
        scenarios=price_scenarios(original_bytes, nnc, delta, p.params, p.link, p.device, p.grid,
                                  p.network_kwh_per_gb, **p.counts),
    )


def reprice(info: TransferInfo, options: TransferOptions, rules_raw: dict) -> TransferInfo:
    """The same coded sizes, priced for other scenarios, links or grids (no re-encoding)."""
    if getattr(info, "status", None) == "failed":
        raise TransferError(f"the label's transfer section records a failed NNC coding ({info.failure.error}); "
                            "there are no coded sizes to price")
    pricing = _pricing(rules_raw, options)
    enc_s, dec_s = pricing.params.device_codec_s(info.coded_float32_bytes, pricing.device)
    nnc = sc.Payload(info.compressed_bytes, enc_s, dec_s, "nnc")
    delta = None
    if info.delta is not None:
        d_enc_s, d_dec_s = pricing.params.device_codec_s(info.delta.coded_float32_bytes, pricing.device)
        delta = sc.Payload(info.delta.compressed_bytes, d_enc_s, d_dec_s, "nnc-delta")
    fields = _priced_fields(pricing, info.original_bytes, nnc, delta)
    return info.model_copy(update={**fields, "device_encode_s": enc_s, "device_decode_s": dec_s})


def failure_info(part: str, error: Exception) -> TransferFailureInfo:
    """The label's record of a failed NNC coding (``part``: ``whole-model`` or ``delta``); an error
    outside the tool's tree (a codec defect) is recorded with the internal-error exit code."""
    exit_code = error.exit_code if isinstance(error, EekiError) else InternalError.exit_code
    text = " ".join(str(error).split())[:500] or type(error).__name__
    return TransferFailureInfo(part=part, error=text, error_type=type(error).__name__, exit_code=exit_code)


def _delta_info(delta, full, previous: LoadedModel, reference: str, compressed_full: int) -> TransferDeltaInfo:
    u = delta.update
    counts = {m: sum(1 for c in delta.tensors if c.mode == m) for m in ("same", "delta", "nnc", "raw")}
    return TransferDeltaInfo(
        previous_sha256=previous.sha256, compressed_bytes=delta.compressed_bytes,
        ratio_vs_full_nnc=delta.compressed_bytes / full.compressed_bytes, encode_s=delta.encode_s,
        decode_s=delta.decode_s, coded_float32_bytes=delta.coded_float_bytes,
        fidelity_meets_bound=delta.fidelity.meets, reference=reference,
        ratio_vs_full_transfer=delta.compressed_bytes / compressed_full if compressed_full else None,
        graph_changed=u.graph_changed if u else None, graph_section_bytes=u.graph_section_bytes if u else None,
        whole_model=u.whole_model if u else None, whole_model_reason=u.whole_reason if u else None,
        fidelity_relative_to=delta.fidelity.relative_to,
        max_rel_error=delta.fidelity.max_rel_error,
        tensors=TransferDeltaTensorsInfo(
            **counts, removed=len(u.removed) if u else 0,
            matched_by_name=u.matched_by.get("name", 0) if u else 0,
            matched_by_content=u.matched_by.get("content", 0) if u else 0,
            matched_by_structure=u.matched_by.get("structure", 0) if u else 0),
    )


def assess_transfer(loaded: LoadedModel, shapes: dict, stored_bytes: int, rules_raw: dict, rules_fidelity: dict,
                    options: TransferOptions, previous: LoadedModel | None = None,
                    reference: str = "previous", progress=None) -> TransferOutcome:
    """Encode ``loaded`` with NNC under the rule set's fidelity bound and price the scenarios; with
    ``previous`` (the ``--previous`` version, or the declared base: ``reference``) code the update too.
    ``progress(name, done, total)``: the pipeline's progress callback (names ``NNC transfer: ...``).

    A codec failure never costs the label: a model NNC cannot code gives a
    :class:`~eeki_label.models.TransferFailedInfo` section (what failed and why), a delta that cannot
    be coded a complete section with ``delta`` null, ``status`` ``delta-failed`` and the reason. Only
    bad options (usage errors) and a damaged rule set raise."""
    from eeki_label.transfer.nnc import encode_model

    calibration = load_calibration(options.calibration_data) if options.calibration_data else None
    bound = fidelity_bound(rules_fidelity)
    pricing = _pricing(rules_raw, options)  # bad --network/--country fail before the slow encode
    def steps(stage):
        return (lambda step, done, total: progress(f"{stage}: {step}", done, total)) if progress else None

    original_bytes = loaded.file_bytes + loaded.external_bytes
    from eeki_label.transfer import cache as tcache

    folder = tcache.cache_dir() if options.cache and not options.baselines else None
    key = None
    if folder is not None:
        key = tcache.entry_key(loaded, shapes, stored_bytes, bound, calibration, previous, reference)
        hit = _cached_outcome(folder, key, loaded, shapes, bound, calibration, previous, options, rules_raw,
                              steps("NNC transfer"))
        if hit is not None:
            return hit
    try:
        full = encode_model(loaded, shapes, bound, calibration, None, options.time_limit_s,
                            baselines=options.baselines, progress=steps("NNC transfer"))
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the codec does, the label stands (the error is recorded)
        notes = ["NNC could not code this model: no transfer figures; the rest of the label stands"]
        if previous is not None:
            notes.append("the delta was not attempted (it is priced against the full-model coding)")
        return TransferOutcome(TransferFailedInfo(implementation=IMPLEMENTATION, original_bytes=original_bytes,
                                                  failure=failure_info("whole-model", e), notes=notes),
                               None, None, errors=(e,))
    graph_bytes = max(0, original_bytes - stored_bytes)
    compressed = full.compressed_bytes + graph_bytes
    delta = delta_failure = delta_error = None
    if previous is not None:
        try:
            delta = encode_model(loaded, shapes, bound, calibration, previous, options.time_limit_s, whole=full,
                                 progress=steps("NNC delta"))
        except UsageError:
            raise
        except Exception as e:  # noqa: BLE001 - as above: the full-model figures stand
            delta_failure, delta_error = failure_info("delta", e), e

    # Codec energy is priced from the study's device measurement per coded float32 byte (reproducible,
    # and it describes the transfer device); this host's measured seconds are reported beside it.
    enc_s, dec_s = pricing.params.device_codec_s(full.coded_float_bytes, pricing.device)
    nnc_payload = sc.Payload(compressed, enc_s, dec_s, "nnc")
    delta_payload = None
    if delta is not None:
        d_enc_s, d_dec_s = pricing.params.device_codec_s(delta.coded_float_bytes, pricing.device)
        delta_payload = sc.Payload(delta.compressed_bytes, d_enc_s, d_dec_s, "nnc-delta")

    notes = [
        "codec energy on the transfer device is priced per coded float32 byte from the study's measurement "
        "(data/energy/transfer.json); encode_s and decode_s are this host's measured times, for information",
    ]
    if full.calibration == "synthetic":
        notes.append(f"fidelity checked on {full.calibration_samples} synthetic inputs (structured synthetic images "
                     "for image inputs, random values for others; the search keeps more headroom on them); pass "
                     "real ones with --calibration-data for a stronger claim")
    if not full.fidelity.meets:
        notes.append("the reconstructed model does not meet the fidelity bound on the calibration inputs")
    if delta is not None:
        notes.append("delta coding: every receiver must hold the previous version intact (its sha256 is checked "
                     "when decoding)")
        if delta.update is not None and delta.update.whole_model:
            notes.append(f"{delta.update.whole_reason}: the delta is the whole model coded (plus the graph "
                         "patch), no smaller than a full transfer")
        if delta.fidelity.relative_to == "reference outputs":
            notes.append("delta fidelity is measured against the new model's outputs (the previous model's outputs "
                         "are not comparable or it has nothing in common), not against the update's own effect")
    if delta_failure is not None:
        notes.append(f"the delta against the {reference} model could not be coded ({delta_failure.error_type}); "
                     "the scenarios price every transfer as a full NNC transfer")
    f = full.fidelity
    info = TransferInfo(
        implementation=IMPLEMENTATION, original_bytes=original_bytes, compressed_bytes=compressed,
        ratio=compressed / original_bytes, bitstream_bytes=full.compressed_bytes, graph_bytes=graph_bytes,
        nnc_ratio=full.nnc_ratio, bitstream_sha256=hashlib.sha256(full.bitstream).hexdigest(),
        qp={"min": full.qp.min, "median": full.qp.median, "max": full.qp.max},
        fidelity=TransferFidelityInfo(
            meets_bound=f.meets, max_rel_error=f.max_rel_error, min_top1_agreement=f.min_top1_agreement,
            bound_max_rel_error=bound.max_rel_error, bound_min_top1_agreement=bound.min_top1_agreement,
            calibration=full.calibration, samples=f.samples),
        encode_s=full.encode_s, decode_s=full.decode_s, coded_float32_bytes=full.coded_float_bytes,
        device_encode_s=enc_s, device_decode_s=dec_s,
        delta=_delta_info(delta, full, previous, reference, compressed) if delta is not None else None,
        status="delta-failed" if delta_failure is not None else "complete", failure=delta_failure,
        notes=notes, **_priced_fields(pricing, original_bytes, nnc_payload, delta_payload),
    )
    if folder is not None and delta_failure is None:
        tcache.store(folder, key, tcache.Entry(info.model_dump_json(), full.bitstream,
                                               delta.bitstream if delta is not None else None))
    return TransferOutcome(info, full.bitstream, delta.bitstream if delta is not None else None, full.baselines,
                           delta, errors=(delta_error,) if delta_error is not None else ())


def _cached_outcome(folder, key: str, loaded: LoadedModel, shapes: dict, bound, calibration, previous,
                    options: TransferOptions, rules_raw: dict, progress) -> "TransferOutcome | None":
    """The outcome from the content cache when its entry is intact and its decoded reconstruction
    meets ``bound`` again (see :mod:`eeki_label.transfer.cache`), priced for ``options``; else None
    (a damaged or failing entry is removed: the caller codes the model again and replaces it)."""
    from pydantic import ValidationError

    from eeki_label.transfer import cache as tcache
    from eeki_label.transfer.nnc import verify_bitstream

    entry = tcache.load(folder, key)
    if entry is None:
        return None
    try:
        info = TransferInfo.model_validate_json(entry.info_json)
        sound = (info.status == "complete" and info.failure is None
                 and info.bitstream_sha256 == hashlib.sha256(entry.bitstream).hexdigest()
                 and (previous is None) == (entry.delta_bitstream is None) == (info.delta is None)
                 and info.fidelity.bound_max_rel_error == bound.max_rel_error
                 and info.fidelity.bound_min_top1_agreement == bound.min_top1_agreement)
        if sound:
            if progress is not None:
                progress("checking the cached coding", 0, 1)
            sound = verify_bitstream(entry.bitstream, loaded, shapes, bound, calibration).meets
        if sound and previous is not None:
            sound = verify_bitstream(
                entry.delta_bitstream, loaded, shapes, bound, calibration, previous,
                relative_to_previous=info.delta.fidelity_relative_to != "reference outputs").meets
    except (EekiError, ValidationError, ValueError):  # not ours, damaged, or no longer decodable here
        sound = False
    if not sound:
        tcache.discard(folder, key)
        return None
    return TransferOutcome(reprice(info, options, rules_raw), entry.bitstream, entry.delta_bitstream)


def delta_update_bytes(outcome: TransferOutcome) -> tuple[int | None, str | None]:
    """The update size the recycling section reports when its base is the delta's reference: the
    delta container's bytes, or (None, why not)."""
    info = outcome.info
    if isinstance(info, TransferFailedInfo):
        return None, (f"the NNC stage failed ({info.failure.error_type}: {info.failure.error}); raw bytes of the "
                      "changed tensors")
    if info.delta is not None:
        return info.delta.compressed_bytes, None
    if info.failure is not None:
        return None, (f"NNC delta coding failed ({info.failure.error_type}: {info.failure.error}); raw bytes of "
                      "the changed tensors")
    return None, "no delta was coded; raw bytes of the changed tensors"


def transfer_for_model(path, input_shapes: dict, rules, options: TransferOptions):
    """The ``transfer`` command on an ONNX file: load, resolve shapes, code, price (no runtime profile)."""
    from eeki_label.model_io import LoadLimits, iter_stored_tensors, load_model, load_related, tensor_nbytes
    from eeki_label.profile.runtime import trial_run
    from eeki_label.profile.shapes import resolve_input_shapes

    loaded = load_model(path)
    previous = (load_related(options.previous, LoadLimits(), "previous version (--previous)")
                if options.previous else None)
    shapes = resolve_input_shapes(loaded.proto, input_shapes)
    # The codec's fidelity check runs the model in this process, where no time or memory limit can be
    # enforced: prove first, in the sandbox, that one inference ends within them.
    trial_run(loaded, shapes, time_limit_s=options.time_limit_s, what="the trial run before NNC coding")
    stored = sum(tensor_nbytes(ref.tensor) for ref in iter_stored_tensors(loaded.proto))
    outcome = assess_transfer(loaded, shapes, stored, rules.raw, rules.fidelity, options, previous)
    if isinstance(outcome.info, TransferFailedInfo):  # this command's only product is the transfer section
        raise outcome.errors[0]
    return outcome.info, outcome.baselines
