"""``assess --mlflow``: log a label into the active MLflow run (extra ``[mlflow]``: mlflow-skinny).

Which run: the one active in this process (``mlflow.start_run`` in the caller's script, when the API
is used), else the run named by ``MLFLOW_RUN_ID`` (logged into; its status is left alone), else a new
run in the experiment of ``MLFLOW_EXPERIMENT_NAME``/``MLFLOW_EXPERIMENT_ID``, ended afterwards; the store
is ``MLFLOW_TRACKING_URI``.

Logged (``<dc>`` = device class id):

* metrics ``eeki.<dc>.index``, ``eeki.<dc>.energy_mj_per_inference``, ``eeki.<dc>.class_rank`` (A=1 .. G=7),
  ``eeki.<dc>.reference_energy_mj``; with a transfer section ``eeki.transfer.ratio``,
  ``eeki.transfer.original_bytes``, ``eeki.transfer.compressed_bytes`` and per scenario
  ``eeki.transfer.<scenario>.uncompressed_wh`` / ``.nnc_wh`` / ``.nnc_saving_share``;
* tags ``eeki.<dc>.class``, ``eeki.<dc>.method``, ``eeki.label_id``, ``eeki.model_sha256``, ``eeki.rules``,
  ``eeki.catalogue``, ``eeki.task``, ``eeki.signed``;
* artifacts under ``eeki-label/``: ``label.json`` (as written, signature included) and ``label.pdf``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from eeki_label.errors import OutputError, UsageError
from eeki_label.units import j_to_mj

ARTIFACT_PATH = "eeki-label"
_RANK = {c: i + 1 for i, c in enumerate("ABCDEFG")}


def require_mlflow():
    try:
        import mlflow  # noqa: F401
    except ImportError as e:
        raise UsageError("--mlflow needs MLflow: pip install 'eeki-label[mlflow]'") from e
    return mlflow


def label_metrics(doc) -> tuple[dict, dict]:
    """(metrics, tags) of a ``Label``/``LabelSet``: pure, for tests and other trackers."""
    from eeki_label.export.common import source_of

    src = source_of(doc)
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {"eeki.label_id": src.label_id, "eeki.model_sha256": src.model.sha256,
                            "eeki.signed": "true" if src.signature is not None else "false"}
    first = src.first
    tags.update({"eeki.rules": f"{first.rules.id} {first.rules.version}",
                 "eeki.catalogue": f"{first.catalogue.id} {first.catalogue.version}", "eeki.task": first.task.id})
    for lab in src.labels:
        dc = lab.device_class.id
        tags[f"eeki.{dc}.class"] = lab.label.class_ or "not gradable"
        tags[f"eeki.{dc}.method"] = lab.inference.method
        if lab.label.index is not None:
            metrics[f"eeki.{dc}.index"] = lab.label.index
        if lab.label.class_ is not None:
            metrics[f"eeki.{dc}.class_rank"] = float(_RANK[lab.label.class_])
        if lab.inference.energy_j is not None:
            metrics[f"eeki.{dc}.energy_mj_per_inference"] = j_to_mj(lab.inference.energy_j)
        if lab.reference.energy_j is not None:
            metrics[f"eeki.{dc}.reference_energy_mj"] = j_to_mj(lab.reference.energy_j)
    t = first.transfer
    if t is not None:
        metrics.update({"eeki.transfer.ratio": t.ratio, "eeki.transfer.original_bytes": float(t.original_bytes),
                        "eeki.transfer.compressed_bytes": float(t.compressed_bytes)})
        for s in t.scenarios:
            metrics[f"eeki.transfer.{s.id}.uncompressed_wh"] = s.uncompressed_wh
            metrics[f"eeki.transfer.{s.id}.nnc_wh"] = s.nnc_wh
            metrics[f"eeki.transfer.{s.id}.nnc_saving_share"] = s.nnc_saving_share
    return metrics, tags


def log_to_mlflow(doc, pdf_bytes: "bytes | None" = None) -> str:
    """Log ``doc`` into the active run (or the one MLflow's environment names); returns the run id."""
    mlflow = require_mlflow()
    from eeki_label.models import dump_json

    metrics, tags = label_metrics(doc)
    if pdf_bytes is None:
        from eeki_label.render.pdf import render_pdf

        pdf_bytes = render_pdf(doc)
    import os

    from mlflow.tracking import MlflowClient

    started = False
    try:
        active = mlflow.active_run()
        if active is not None:
            run_id = active.info.run_id
        elif os.environ.get("MLFLOW_RUN_ID"):
            run_id = os.environ["MLFLOW_RUN_ID"]  # the caller's run: logged into, neither resumed nor ended
        else:
            run_id, started = mlflow.start_run().info.run_id, True
        try:
            client = MlflowClient()
            for name, value in metrics.items():
                client.log_metric(run_id, name, value)
            for name, value in tags.items():
                client.set_tag(run_id, name, value)
            with tempfile.TemporaryDirectory(prefix="eeki-mlflow-") as tmp:
                folder = Path(tmp)
                (folder / "label.json").write_text(dump_json(doc), encoding="utf-8")
                (folder / "label.pdf").write_bytes(pdf_bytes)
                client.log_artifacts(run_id, str(folder), artifact_path=ARTIFACT_PATH)
        finally:
            if started:
                mlflow.end_run()
    except UsageError:
        raise
    except Exception as e:  # the tracking store is unreachable, refuses, or names no such run
        raise OutputError(f"cannot log to MLflow: {type(e).__name__}: {e}") from e
    return run_id
