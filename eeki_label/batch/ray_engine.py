"""The Ray engine (optional extra ``eeki-label[ray]``): one Ray task per model.

* **Isolation**: the model never runs in a Ray worker. The task starts ``assess`` as a fresh child
  process, exactly as the local engine does (eeki_label/batch/worker.py): same limits, same exit
  codes, same label bytes; the child dies with the task. This gives each model what ``max_calls=1``
  would (a fresh process) without starting a Ray worker per model: measured, a worker per model
  (``max_calls=1``) made the 20-model benchmark 2.8x slower than the local engine on 2 CPUs
  (docs/batch.md).
* **Resources**: each task declares ``num_cpus`` (``--cpus-per-model``, default 1; the child's
  onnxruntime threads are set to match) and, for runs measured with NVML, one GPU. Estimation and
  NNC coding fan out over the cluster freely.
* **Measuring runs** (``-d host``) additionally hold the node's exclusive meter lock for their whole
  duration (a file lock taken inside the task): RAPL and NVML see the whole package or GPU, so two
  measurements never overlap on one node, whatever else Ray schedules there.
* **Cancel**: Ctrl-C or SIGTERM of the driver cancels every task with ``force=True``; the killed
  worker's ``assess`` child and its sandbox die with it (``PR_SET_PDEATHSIG`` and the child's own
  process group).
* **Data**: the model path and file-valued options are absolute paths that every node must read
  (a shared file system); labels come back to the driver through the object store, and only the
  driver writes the output folder. Every node needs the same eeki-label installed.

``--ray-address`` names the cluster (``ray://HOST:10001`` for Ray Client, ``HOST:6379`` or ``auto``
on a cluster node); without it a local Ray instance is started for the batch and stopped after it.
"""

from __future__ import annotations

from typing import Callable

from eeki_label.batch import worker
from eeki_label.errors import UsageError

#: How long a ``HOST:PORT`` address may take to accept a TCP connection before it is refused (s).
PROBE_S = 10.0
#: How long the driver waits for results before checking for Ctrl-C again (s).
POLL_S = 0.5


def _task(spec: worker.Spec) -> worker.Outcome:
    return worker.run(spec)


def check(address: "str | None") -> None:
    """Before anything runs: Ray is installed and a ``HOST:PORT`` address accepts connections."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # not imported here: importing Ray takes seconds
        raise UsageError("--engine ray needs Ray: pip install 'eeki-label[ray]'")
    if address:
        _probe(address)


def _probe(address: str) -> None:
    """Refuse at once a ``HOST:PORT`` that accepts no connection (Ray itself retries for minutes)."""
    import socket

    if "://" in address or address == "auto" or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S):
            pass
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot connect to the Ray cluster {address}: {getattr(e, 'strerror', None) or e}") from None


class Connection:
    """Connects to the cluster in a background thread (importing Ray and ``ray.init`` take seconds),
    so that the batch prepares its jobs meanwhile; :meth:`wait` returns the ``ray`` module."""

    def __init__(self, address: "str | None") -> None:
        import threading

        self.address = address
        self.started_here = False
        self._error: "BaseException | None" = None
        self._ray = None
        self._thread = threading.Thread(target=self._connect, name="eeki-ray-connect", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        try:
            import ray

            if not ray.is_initialized():
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                         configure_logging=True)
                self.started_here = True
            self._ray = ray
        except BaseException as e:  # ConnectionError and Ray's own errors for an unreachable or refused address
            self._error = e

    def wait(self):
        self._thread.join()
        if self._error is not None:
            msg = " ".join(str(self._error).split())[:300]
            raise UsageError(f"cannot connect to the Ray cluster {self.address or '(local)'}: {msg}")
        return self._ray

    def close(self) -> None:
        self._thread.join()
        if self.started_here and self._ray is not None:
            self._ray.shutdown()


def run(specs: list, gpus: dict, connection: Connection, cpus_per_model: "float | None", in_flight: int,
        done: Callable) -> None:
    ray = connection.wait()
    remote = ray.remote(_task)
    cpus = float(cpus_per_model or 1)
    queue = list(specs)
    refs: dict = {}

    def submit() -> None:
        while queue and (not in_flight or len(refs) < in_flight):
            spec = queue.pop(0)
            ref = remote.options(num_cpus=cpus, num_gpus=gpus.get(spec.key, 0.0),
                                 name=f"eeki-label assess {spec.key}").remote(spec)
            refs[ref] = spec

    try:
        submit()
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
            finished = [(ref, refs.pop(ref)) for ref in ready]
            submit()  # the next models start before the driver writes these results
            for ref, spec in finished:
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # the task's worker died (killed, node lost, out of memory)
                    msg = " ".join(str(e).split())[:300]
                    outcome = worker.Outcome(spec.key, worker.CRASH_EXIT, f"the Ray task failed: {msg}",
                                             None, 0.0)
                done(outcome)
    except BaseException:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        raise
