"""``eeki-label batch --engine ray`` against a real local Ray cluster (``ray start --head`` on 127.0.0.1,
started by this module and stopped at its end; not Ray's local mode): the 20-model zoo gives the
same results and byte-identical labels as the local engine, and a killed batch resumes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import raycluster  # noqa: E402
import zoo  # noqa: E402
from test_batch import FAST, check_results, cli, read_csv  # noqa: E402

import ray  # noqa: E402,F401  (the [ray] extra is part of [test]: a missing Ray fails here, never skips)


@pytest.fixture(scope="module")
def cluster():
    address, temp = raycluster.start(cpus=2)
    try:
        yield address
    finally:
        raycluster.stop(temp)


def test_zoo_on_ray_matches_the_local_engine(cluster, tmp_path):
    manifest, expected = zoo.build(tmp_path)
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    cli("batch", manifest, "--out", local, "--workers", "2", "-q", "--", *FAST, check=4)
    p = cli("batch", manifest, "--out", ray_out, "--engine", "ray", "--ray-address", cluster, "--", *FAST, check=4)
    assert "on ray" in p.stdout and "12 assessed, 0 reused, 8 failed" in p.stdout, p.stdout
    assert "Traceback" not in p.stderr
    rows = check_results(ray_out, expected)
    key = lambda r: (r["path"], r["device_class"])  # noqa: E731
    local_rows = {key(r): r for r in read_csv(local / "results.csv")}
    for r in rows:
        want = local_rows[key(r)]
        for col in ("sha256", "options_hash", "task", "class", "index", "energy_j", "status", "exit_code", "reason"):
            assert r[col] == want[col], (r["path"], col)
    for f in (local / "labels").glob("*.json"):  # estimates, no timings: the same bytes on both engines
        assert (ray_out / "labels" / f.name).read_bytes() == f.read_bytes()
    recs = [json.loads(f.read_text()) for f in (ray_out / "records").glob("*.json")]
    assert {r["node"] for r in recs if r["seconds"] is not None} == {socket.gethostname()}
    assert (ray_out / "leaderboard.html").is_file()


def test_ray_batch_resumes_after_a_kill(cluster, tmp_path):
    manifest, expected = zoo.build(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "eeki_label", "batch", str(manifest), "--out", str(out),
                             "--engine", "ray", "--ray-address", cluster, "--workers", "1", "-q", "--", *FAST],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    ok: set[str] = set()
    while time.monotonic() < deadline and len(ok) < 3:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
        ok = {json.loads(f.read_text())["path"] for f in (out / "records").glob("*.json")
              if json.loads(f.read_text())["status"] == "ok"} if (out / "records").is_dir() else set()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ok = {json.loads(f.read_text())["path"] for f in (out / "records").glob("*.json")
          if json.loads(f.read_text())["status"] == "ok"}
    assert 3 <= len(ok) < 12
    p = cli("batch", manifest, "--out", out, "--engine", "ray", "--ray-address", cluster, "--", *FAST, check=4)
    check_results(out, expected, reused=ok)
    assert f"{12 - len(ok)} assessed, {len(ok)} reused" in p.stdout


def test_unreachable_cluster_is_one_line(tmp_path):
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "a.onnx").write_bytes(b"x")
    p = cli("batch", tmp_path / "z", "--out", tmp_path / "o", "--engine", "ray", "--ray-address",
            f"127.0.0.1:{raycluster.free_port()}", check=2, timeout=120)
    assert p.stderr.strip().startswith("error: usage: cannot connect to the Ray cluster 127.0.0.1:")
    assert p.stderr.count("\n") == 1, p.stderr
