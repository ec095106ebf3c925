"""``assess --mlflow`` against a local MLflow file store: metrics, tags and the label/PDF artifacts land in
the active run (the run MLFLOW_RUN_ID names), and the logged label still verifies."""

from __future__ import annotations

import json
import sys

import pytest

from support import save, classifier
from eeki_label.errors import UsageError
from eeki_label.verify import read_label_file, verify

from export_support import key, run  # noqa: F401  (fixture)

import mlflow  # noqa: E402  (the [test] extra installs mlflow-skinny)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    yield tmp_path
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save(classifier(1000, (224, 224)), tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def test_assess_mlflow_logs_into_the_run_mlflow_run_id_names(store, tiny_model, key, monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.create_experiment("eeki")
    run_id = client.create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    label = tmp_path / "label.json"
    assert run(["assess", tiny_model, "--runs", "0", "-d", "edge-gpu-batch1", "--task", "image-classification",
                "--sign-key", key, "--json", label, "--mlflow", "-q"]) == 0
    lab = json.loads(label.read_text())
    lab = lab["labels"][0] if "labels" in lab else lab
    logged = client.get_run(run_id)
    m, tags = logged.data.metrics, logged.data.tags
    assert m["eeki.edge-gpu-batch1.index"] == pytest.approx(lab["label"]["index"])
    assert m["eeki.edge-gpu-batch1.energy_mj_per_inference"] == pytest.approx(lab["inference"]["energy_j"] * 1e3)
    assert m["eeki.edge-gpu-batch1.class_rank"] == "ABCDEFG".index(lab["label"]["class"]) + 1
    assert tags["eeki.edge-gpu-batch1.class"] == lab["label"]["class"]
    assert tags["eeki.model_sha256"] == lab["model"]["sha256"] and tags["eeki.signed"] == "true"
    # transfer figures of the NNC stage
    assert m["eeki.transfer.compressed_bytes"] == lab["transfer"]["compressed_bytes"]
    one = next(s for s in lab["transfer"]["scenarios"] if s["id"] == "one-time")
    assert m["eeki.transfer.one-time.nnc_wh"] == pytest.approx(one["nnc_wh"])
    assert m["eeki.transfer.one-time.nnc_saving_share"] == pytest.approx(one["nnc_saving_share"])
    # artifacts: the label as written (it verifies) and the PDF
    names = sorted(a.path for a in client.list_artifacts(run_id, "eeki-label"))
    assert names == ["eeki-label/label.json", "eeki-label/label.pdf"]
    folder = client.download_artifacts(run_id, "eeki-label", str(tmp_path / "dl"))
    from pathlib import Path

    assert (Path(folder) / "label.json").read_bytes() == label.read_bytes()
    assert (Path(folder) / "label.pdf").read_bytes().startswith(b"%PDF")
    verify(Path(folder) / "label.json", tiny_model, key.with_name(key.name + ".pub"))
    assert client.get_run(run_id).info.status == "RUNNING"  # a run the caller owns is not ended


def test_log_to_mlflow_uses_the_active_run_and_ends_only_its_own(store, unsigned_label_doc):
    from eeki_label.export.mlflow_run import log_to_mlflow

    with mlflow.start_run() as active:
        assert log_to_mlflow(unsigned_label_doc) == active.info.run_id
        assert mlflow.active_run() is not None
    own = log_to_mlflow(unsigned_label_doc)  # no active run: a new one, ended afterwards
    assert mlflow.active_run() is None
    assert mlflow.get_run(own).info.status == "FINISHED"
    assert "eeki.label_id" in mlflow.get_run(own).data.tags


@pytest.fixture
def unsigned_label_doc(unsigned_label):
    return read_label_file(unsigned_label)[1]


from export_support import unsigned_label  # noqa: E402,F401  (fixture)


def test_without_mlflow_installed_the_option_is_a_usage_error(monkeypatch):
    from eeki_label.export.mlflow_run import require_mlflow

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(UsageError, match=r"eeki-label\[mlflow\]"):
        require_mlflow()
