"""``eeki-label batch`` on the local engine: a 20-model zoo of good, broken and hostile files, the
results contract, resuming after a kill, and labels byte-identical to ``assess``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import zoo  # noqa: E402

ISSUED = "2026-01-01T00:00:00+00:00"
#: assess options of the zoo runs: estimates on two classes, no runtime profile, no NNC coding.
FAST = ["--runs", "0", "--no-transfer", "-d", "edge-gpu-batch1", "-d", "datacenter-gpu-batched", "--issued-at", ISSUED]
CONTRACT = ("path", "sha256", "device_class", "task", "class", "index", "status", "exit_code")


def cli(*args, check=None, env=None, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "eeki_label", *map(str, args)], capture_output=True, text=True,
                       env=env, **kw)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    return p


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    manifest, expected = zoo.build(root)
    out = root / "out"
    p = cli("batch", manifest, "--out", out, "--workers", "2", "--", *FAST, check=4)
    return root, manifest, expected, out, p


def check_results(out: Path, expected: dict, reused: "set[str]" = frozenset()) -> list[dict]:
    rows = read_csv(out / "results.csv")
    assert set(CONTRACT) <= set(rows[0])
    by_path: dict[str, list[dict]] = {}
    for r in rows:
        by_path.setdefault(r["path"], []).append(r)
    assert set(by_path) == set(expected)
    for path, (status, code) in expected.items():
        got = by_path[path]
        if status == "failed":
            assert len(got) == 1 and got[0]["device_class"] == "", got
            assert got[0]["status"] == "failed" and int(got[0]["exit_code"]) == code, got
            assert got[0]["reason"] and "\n" not in got[0]["reason"]
        else:
            want = "skipped" if path in reused else "ok"
            assert sorted(r["device_class"] for r in got) == ["datacenter-gpu-batched", "edge-gpu-batch1"]
            for r in got:
                assert r["status"] == want and r["exit_code"] == "0", r
                assert r["task"] == "image-classification" and r["class"] in "ABCDEFG" and r["class"]
                assert float(r["index"]) > 0 and float(r["energy_j"]) > 0 and r["energy_unit"] == "image"
                assert (out / r["label_file"]).is_file()
    jsonl = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["path"] for r in jsonl] == [r["path"] for r in rows]
    assert all(isinstance(r["exit_code"], int) for r in jsonl)
    return rows


def test_zoo_of_20_completes_with_failures_listed(zoo_run):
    root, manifest, expected, out, p = zoo_run
    rows = check_results(out, expected)
    assert len(rows) == 12 * 2 + 8
    assert len(list((out / "labels").glob("*.json"))) == 12
    # declared quality reaches the rows; a model without one has none
    acc = {r["path"]: r["quality"] for r in rows if r["device_class"] == "edge-gpu-batch1"}
    assert float(acc["good/cls03.onnx"]) == zoo.ACCURACY[3] and acc["good/cls11.onnx"] == ""
    # one-line failure summary on stderr, no traceback; the summary on stdout
    assert p.stderr.strip().splitlines()[-1] == f"error: batch: 8 of 20 models failed (status 'failed' in {out}/results.csv)"
    assert "Traceback" not in p.stderr
    assert "20 models in" in p.stdout and "12 assessed, 0 reused, 8 failed; 32 rows" in p.stdout
    # non-TTY progress: one line per model with counts and an ETA
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("eeki-label: [")]
    # (three hostile paths are refused before anything runs: counted on the first line)
    assert "20 models: 0 reused from an earlier run, 3 failed earlier or refused, 17 to assess" in p.stderr
    assert len(lines) == 17 and lines[-1].startswith("eeki-label: [20/20]") and "left 0" in lines[-1]
    assert all("ETA" in ln for ln in lines)
    meta = json.loads((out / "batch.json").read_text())
    assert meta["models"] == 20 and meta["failed"] == 8 and meta["data_versions"]["catalogue"]
    # nothing was read outside the zoo: the hostile rows were refused before a child ran
    for rel in ("hostile/passwd.onnx", "../outside.onnx", "hostile/fifo.onnx"):
        rec = next(r for r in rows if r["path"] == rel)
        assert rec["sha256"] == "" and rec["seconds"] == ""
    assert not list(out.rglob("*.part"))


def test_rerun_reuses_every_label_and_reports_failures_again(zoo_run):
    root, manifest, expected, out, _ = zoo_run
    before = {f.name: f.read_bytes() for f in (out / "labels").glob("*.json")}
    p = cli("batch", manifest, "--out", out, "--workers", "2", "--", *FAST, check=4)
    assert "0 assessed, 12 reused, 8 failed" in p.stdout
    check_results(out, expected, reused={k for k, v in expected.items() if v[0] == "ok"})
    assert before == {f.name: f.read_bytes() for f in (out / "labels").glob("*.json")}


def test_changed_options_or_model_are_assessed_again(tmp_path):
    root = tmp_path
    zoo_dir = root / "zoo"
    zoo_dir.mkdir()
    from support import classifier, save

    save(classifier(1000, seed=1), zoo_dir / "a.onnx")
    save(classifier(1000, seed=2), zoo_dir / "b.onnx")
    out = root / "out"
    base = ["--task", "image-classification", "--runs", "0", "--no-transfer", "-d", "edge-gpu-batch1"]
    cli("batch", zoo_dir, "--out", out, "-q", "--", *base, check=0)
    p = cli("batch", zoo_dir, "--out", out, "--", *base, check=0)
    assert "0 assessed, 2 reused" in p.stdout
    save(classifier(1000, seed=3), zoo_dir / "b.onnx")  # b changed: its sha256 differs
    p = cli("batch", zoo_dir, "--out", out, "--", *base, check=0)
    assert "1 assessed, 1 reused" in p.stdout
    p = cli("batch", zoo_dir, "--out", out, "--", *base, "--accuracy", "70", check=0)  # options changed
    assert "2 assessed, 0 reused" in p.stdout
    rows = read_csv(out / "results.csv")
    assert {r["quality"] for r in rows} == {"70.0"}


def test_resume_after_kill(tmp_path):
    manifest, expected = zoo.build(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "eeki_label", "batch", str(manifest), "--out", str(out),
                             "--workers", "1", "-q", "--", *FAST], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = [r for r in (out / "records").glob("*.json")] if (out / "records").is_dir() else []
        if len([r for r in done if json.loads(r.read_text())["status"] == "ok"]) >= 3:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: children die with their parent
    proc.wait()
    finished_ok = {json.loads(r.read_text())["path"] for r in (out / "records").glob("*.json")
                   if json.loads(r.read_text())["status"] == "ok"}
    assert 3 <= len(finished_ok) < 12
    time.sleep(0.5)
    assert not _children_alive(proc.pid)
    p = cli("batch", manifest, "--out", out, "--workers", "2", "--", *FAST, check=4)
    check_results(out, expected, reused=finished_ok)
    assert f"{12 - len(finished_ok)} assessed, {len(finished_ok)} reused" in p.stdout
    assert not list(out.rglob("*.part"))


def _children_alive(pid: int) -> bool:
    """Is any process whose command line runs ``eeki_label assess`` a descendant of ``pid`` still alive?"""
    import psutil

    for proc in psutil.process_iter(["cmdline", "ppid"]):
        try:
            cmd = proc.info["cmdline"] or []
            if "eeki_label" in cmd and "assess" in cmd and proc.status() != psutil.STATUS_ZOMBIE:
                if any(p.pid == pid for p in proc.parents()) or proc.info["ppid"] == 1:
                    return True
        except psutil.Error:
            continue
    return False


def test_label_is_byte_identical_to_assess(tmp_path):
    """The same model and options through batch and through assess give the same bytes (the NNC stage
    on: the content cache gives assess the transfer figures of the batch's run)."""
    from support import classifier, save

    (tmp_path / "zoo").mkdir()
    model = save(classifier(1000, seed=5), tmp_path / "zoo" / "m.onnx")
    opts = ["--task", "image-classification", "--accuracy", "71.5", "--runs", "0", "--threads", "1",
            "--issued-at", ISSUED]
    cli("batch", tmp_path / "zoo", "--out", tmp_path / "out", "-q", "--", *opts, check=0)
    cli("assess", model, "--json", tmp_path / "assess.json", "-q", *opts, check=0)
    label = next((tmp_path / "out" / "labels").glob("*.json")).read_bytes()
    assert label == (tmp_path / "assess.json").read_bytes()
    assert json.loads(label)["labels"][0]["transfer"]["status"] == "complete"


def test_timeout_kills_the_model_and_the_batch_goes_on(tmp_path):
    from support import classifier, save

    (tmp_path / "zoo").mkdir()
    save(classifier(1000, seed=1), tmp_path / "zoo" / "a.onnx")
    p = cli("batch", tmp_path / "zoo", "--out", tmp_path / "out", "--model-timeout", "1", "--", "--runs", "0",
            "-d", "edge-gpu-batch1", "--task", "image-classification", check=4)
    row = read_csv(tmp_path / "out" / "results.csv")[0]
    assert row["status"] == "failed" and row["exit_code"] == "31" and "--model-timeout 1 s" in row["reason"]


@pytest.mark.parametrize("manifest, args, message", [
    ("path,weights\nx.onnx,1\n", [], "unknown column(s) 'weights'"),
    ("task\nimage-classification\n", [], "no 'path' column"),
    ('{"path": "a.onnx", "options": "--json x.json"}\n', [], "--json: the batch writes the outputs itself"),
    ('{"path": "a.onnx", "options": ["--runs", "many"]}\n', [], "line 1: Invalid value for '--runs'"),
    ('{"path": "a.onnx"}\n{"path": "a.onnx"}\n', [], "a.onnx is listed twice"),
    ('{"path": "a.onnx"}\n', ["--", "--pdf", "x.pdf"], "--pdf: the batch writes the outputs itself"),
    ('{"path": "a.onnx"}\n', ["--engine", "spark"], "--engine 'spark'"),
    ("not json\n", [], "line 1: not JSON"),
])
def test_bad_manifest_or_options_stop_before_anything_runs(tmp_path, manifest, args, message):
    name = "m.jsonl" if manifest.startswith(("{", "not json")) else "m.csv"
    (tmp_path / name).write_text(manifest)
    p = cli("batch", tmp_path / name, "--out", tmp_path / "out", *args, check=2)
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: usage: ") and message in p.stderr, p.stderr
    assert not (tmp_path / "out" / "results.csv").exists()


def test_folder_input_and_manifest_paths(tmp_path):
    """A folder is scanned recursively; CSV manifests take shapes separated by ';' and per-model options."""
    from support import classifier, save

    (tmp_path / "z" / "deep" / "er").mkdir(parents=True)
    save(classifier(1000), tmp_path / "z" / "deep" / "er" / "a.onnx")
    (tmp_path / "z" / "notes.txt").write_text("not a model")
    p = cli("batch", tmp_path / "z", "--out", tmp_path / "o1", "--", "--runs", "0", "--no-transfer", "-d",
            "edge-gpu-batch1", check=0)
    row = read_csv(tmp_path / "o1" / "results.csv")[0]
    assert row["path"] == "deep/er/a.onnx" and row["status"] == "ok"
    # detection alone: the classifier's signature gives the task (same as assess)
    assert row["task"] == "image-classification"
    (tmp_path / "z" / "m.csv").write_text(
        'path,task,accuracy,input_shape,options\n'
        'deep/er/a.onnx,image-classification,70.1,x=1x3x224x224,"--seed 3 -d single-board-cpu"\n')
    cli("batch", tmp_path / "z" / "m.csv", "--out", tmp_path / "o2", "--", "--runs", "0", "--no-transfer",
        check=0)
    rows = read_csv(tmp_path / "o2" / "results.csv")
    assert [r["device_class"] for r in rows] == ["single-board-cpu"] and rows[0]["quality"] == "70.1"
    assert p.stderr.count("Traceback") == 0


def test_second_batch_on_the_same_folder_is_refused(tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "a.onnx").write_bytes(b"x")
    fd = os.open(out / ".batch.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        p = cli("batch", tmp_path / "z", "--out", out, check=2)
    finally:
        os.close(fd)
    assert "another batch is writing to" in p.stderr


def test_measuring_runs_wait_for_the_node_meter_lock(tmp_path):
    """A run that measures the host (``-d host``) starts its child only once it holds the node's
    exclusive meter lock; estimation runs never take it."""
    import fcntl
    import threading

    from eeki_label.batch import worker
    from support import classifier, save

    model = save(classifier(1000), tmp_path / "m.onnx")
    args = ("--runs", "0", "--no-transfer", "-d", "edge-gpu-batch1", "--task", "image-classification")
    fd = os.open(worker.meter_lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    outcomes = {}
    try:
        measuring = threading.Thread(target=lambda: outcomes.setdefault(
            "measuring", worker.run(worker.Spec("m", str(model), args, None, measures=True))))
        measuring.start()
        estimate = worker.run(worker.Spec("e", str(model), args, None, measures=False))  # not blocked
        assert estimate.exit_code == 0 and estimate.label
        assert measuring.is_alive() and "measuring" not in outcomes  # still waiting for the lock
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    measuring.join(120)
    assert outcomes["measuring"].exit_code == 0


def test_sigterm_stops_the_batch_cleanly_and_a_rerun_continues(tmp_path):
    manifest, expected = zoo.build(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "eeki_label", "batch", str(manifest), "--out", str(out),
                             "--workers", "1", "-q", "--", *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(
            json.loads(r.read_text())["status"] == "ok" for r in (out / "records").glob("*.json")):
        assert proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted: ") and "run the same command again" in err
    assert "Traceback" not in err
    assert (out / "results.csv").is_file() and not list(out.rglob("*.part"))
    time.sleep(0.5)
    assert not _children_alive(proc.pid)
    finished_ok = {json.loads(r.read_text())["path"] for r in (out / "records").glob("*.json")
                   if json.loads(r.read_text())["status"] == "ok"}
    cli("batch", manifest, "--out", out, "--workers", "2", "-q", "--", *FAST, check=4)
    check_results(out, expected, reused=finished_ok)
