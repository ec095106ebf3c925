"""A real local Ray cluster for the tests and the batch benchmark: ``ray start --head`` on 127.0.0.1 in
its own temporary folder, and a stop that ends exactly that cluster's processes (``ray stop`` would
end every Ray cluster of this user on the machine)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cpus: int, worker_niceness: "int | None" = None) -> tuple[str, Path]:
    """(address, temp dir) of a new head node; its temp dir is short (Ray's socket paths must stay
    under 108 bytes). ``worker_niceness``: Ray's ``RAY_worker_niceness`` for the node (Ray's default
    runs task workers, and so the assess children, at nice 15)."""
    temp = Path(tempfile.mkdtemp(prefix="eeki-ray-", dir="/tmp"))
    port = free_port()
    ray = Path(sys.executable).with_name("ray")
    p = subprocess.run([str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--num-cpus", str(cpus), "--include-dashboard", "false", "--disable-usage-stats",
                        "--temp-dir", str(temp)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0",
                                **({} if worker_niceness is None else {"RAY_worker_niceness": str(worker_niceness)})))
    if p.returncode != 0:
        stop(temp)
        raise RuntimeError(f"ray start failed: {p.stderr[-3000:]}")
    return f"127.0.0.1:{port}", temp


def stop(temp: Path) -> None:
    """End the processes whose command line names ``temp`` and all their descendants (agents rename
    themselves, e.g. ``ray::DashboardAgent``), then remove ``temp``."""
    import psutil

    me = psutil.Process()
    spare = {me.pid, *(a.pid for a in me.parents())}
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid not in spare and any(str(temp) in part for part in (p.info["cmdline"] or [])):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    if c.pid not in spare:
                        found[c.pid] = c
        except psutil.Error:
            continue
    procs = list(found.values())
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    shutil.rmtree(temp, ignore_errors=True)
