"""The batch run: discover, skip what is done, run the rest on an engine, collect the results.

Output folder (``--out DIR``)::

    labels/<key>.json     the label set of each model, byte for byte what ``assess --json`` writes
    records/<key>.json    per model: path, sha256, options hash, status, exit code, reason, seconds
    results.csv           one row per model and device class (eeki_label/batch/results.py)
    results.jsonl         the same rows as JSON lines
    leaderboard.html      per task and device class: table and energy-vs-quality scatter
    batch.json            the run: input, engine, workers, data versions, counts

Every file is written atomically (temporary file, rename). A model's label is written before its
record, so a kill at any moment leaves either a finished model (label and record) or an unfinished
one, which the next run assesses again. The results files are rewritten as models finish and once
more at the end. Two batches cannot write one folder at the same time (a lock file).

Resuming: a model whose record has the same model sha256 and options hash, status ``ok`` and whose
label file still has the recorded sha256 is not assessed again (status ``skipped`` in the results).
A recorded failure with the same sha256 and options hash is reported again without rerunning unless
``--retry-failed``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from queue import Queue
from typing import Callable

from eeki_label.batch import jobs as _jobs
from eeki_label.batch import results as _results
from eeki_label.batch import worker
from eeki_label.errors import EekiError, Interrupted, OutputError, UsageError
from eeki_label.fileio import write_atomic
from eeki_label.model_io import sha256_file


ENGINES = ("local", "ray")


@dataclass(frozen=True)
class BatchOptions:
    input: Path
    out: Path
    assess_args: tuple[str, ...] = ()
    engine: str = "local"
    workers: int | None = None
    """Models assessed at once (local: processes; ray: tasks in flight). Default: the CPUs (local), or
    as many as the cluster schedules (ray)."""
    ray_address: str | None = None
    cpus_per_model: float | None = None
    """Ray: CPUs declared per model task (default 1). Local: CPUs pinned per model (default CPUs / workers)."""
    model_timeout_s: float | None = None
    retry_failed: bool = False
    leaderboard: bool = True


@dataclass(frozen=True)
class Progress:
    """Counts for the progress display."""

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    last: str = ""
    last_status: str = ""
    eta_s: float | None = None

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed - self.skipped


@dataclass(frozen=True)
class BatchResult:
    out: Path
    total: int
    ok: int
    skipped: int
    failed: int
    gate_failed: int
    rows: int
    seconds: float
    engine: str
    workers: int
    files: tuple[str, ...] = ()


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def _pinned_versions(params: dict) -> dict:
    """The data versions every model of the batch is assessed with (the newest installed, unless given)."""
    from eeki_label.pipeline import load_context

    try:
        ctx = load_context(params.get("rules"), params.get("catalogue"), params.get("device_data"))
    except EekiError as e:
        raise UsageError(f"batch options: {e}") from None
    return {"rules": ctx.rules.version, "catalogue": ctx.catalogue.version,
            "device_data": ctx.devices.version if params.get("device_data") is None else str(params["device_data"])}


class _OutLock:
    def __init__(self, out: Path) -> None:
        self.path = out / ".batch.lock"
        self.fd: int | None = None

    def __enter__(self) -> "_OutLock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot write to {self.path.parent}: {e.strerror or e}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise UsageError(f"another batch is writing to {self.path.parent}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _previous(out: Path, job: _jobs.Job, retry_failed: bool) -> "dict | None":
    """The record of an earlier run that this run may reuse, or None."""
    rec = _read_json(out / "records" / f"{job.key}.json")
    if not isinstance(rec, dict) or rec.get("sha256") != job.sha256 or rec.get("options_hash") != job.options_hash:
        return None
    if rec.get("status") in ("ok", "skipped"):
        try:
            raw = (out / rec["label_file"]).read_bytes()
        except (OSError, KeyError, TypeError):
            return None
        return rec if hashlib.sha256(raw).hexdigest() == rec.get("label_sha256") else None
    if rec.get("status") == "failed" and not retry_failed:
        return rec
    return None


def _record(job: _jobs.Job, outcome: "worker.Outcome | None", label_file: "str | None", label_sha: "str | None") -> dict:
    status = "ok" if label_file else "failed"
    code, reason = (job.error if job.error else (outcome.exit_code, outcome.reason))
    return {"path": job.rel, "sha256": job.sha256, "options_hash": job.options_hash, "status": status,
            "exit_code": code, "reason": reason, "label_file": label_file, "label_sha256": label_sha,
            "seconds": round(outcome.seconds, 3) if outcome else None, "node": outcome.node if outcome else "",
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_batch(options: BatchOptions, on_progress: "Callable[[Progress], None] | None" = None) -> BatchResult:
    if options.engine not in ENGINES:
        raise UsageError(f"--engine {options.engine!r}: one of {', '.join(ENGINES)}")
    if options.workers is not None and options.workers < 1:
        raise UsageError("--workers must be at least 1")
    started = time.perf_counter()
    connection = None
    if options.engine == "ray":
        from eeki_label.batch import ray_engine

        ray_engine.check(options.ray_address)
        connection = ray_engine.Connection(options.ray_address)  # connects while the jobs are prepared
    try:
        return _prepare_and_run(options, started, connection, on_progress)
    finally:
        if connection is not None:
            connection.close()


def _prepare_and_run(options: BatchOptions, started: float, connection, on_progress) -> BatchResult:
    root, entries = _jobs.discover(options.input)
    common = list(options.assess_args)
    params = _jobs.parse_assess_args(common, "batch options")  # bad common options stop the batch at once
    pinned = _pinned_versions(params)
    cpus = _cpus()
    if options.engine == "local":
        workers = options.workers or len(cpus)
        per = options.cpus_per_model or max(1, len(cpus) // workers)
        threads = max(1, int(per))
    else:
        workers = options.workers or 0
        threads = max(1, int(options.cpus_per_model or 1))
    job_list = _jobs.build_jobs(entries, root, _jobs.absolutise(common, Path.cwd()), pinned, threads)

    out = options.out
    try:
        (out / "labels").mkdir(parents=True, exist_ok=True)
        (out / "records").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {out}: {e.strerror or e}") from None
    with _OutLock(out):
        return _run_locked(options, job_list, pinned, _own_device_data(params), out, workers, threads, cpus, started,
                           connection, on_progress)


def _own_device_data(params: dict) -> "str | None":
    """The batch's own device-data file (``--device-data FILE.json``), for pricing the leaderboard's references."""
    value = params.get("device_data")
    return str(Path(value).resolve()) if value and str(value).lower().endswith(".json") else None


def _run_locked(options, job_list, pinned, own_device_data, out, workers, threads, cpus, started, connection,
                on_progress) -> BatchResult:
    records: dict[str, dict] = {}
    pending: list[_jobs.Job] = []
    for job in job_list:
        if job.path is not None:
            try:
                job = replace(job, sha256=sha256_file(job.path))
            except OSError as e:
                job = replace(job, path=None, error=(10, f"cannot read the model: {e.strerror or e}"))
        if job.error:
            records[job.key] = _record(job, None, None, None)
            continue
        prev = _previous(out, job, options.retry_failed)
        if prev is not None:
            records[job.key] = {**prev, "status": "skipped" if prev["status"] in ("ok", "skipped") else "failed",
                                "path": job.rel}
        else:
            pending.append(job)

    order = [j.key for j in job_list]
    state = {"progress": Progress(total=len(job_list),
                                  failed=sum(1 for r in records.values() if r["status"] == "failed"),
                                  skipped=sum(1 for r in records.values() if r["status"] == "skipped")),
             "written": 0.0}

    def emit(**kw) -> None:
        state["progress"] = replace(state["progress"], **kw)
        if on_progress:
            on_progress(state["progress"])

    def write_results() -> None:  # as models finish, at most every 2 s (and in full at the end)
        now = time.perf_counter()
        if now - state["written"] < 2.0:
            return
        state["written"] = now
        _write_results(out, _rows(out, order, records))

    def finished(job: _jobs.Job, outcome: worker.Outcome) -> None:
        label_file = label_sha = None
        if outcome.label is not None:
            label_file = f"labels/{job.key}.json"
            write_atomic(out / label_file, outcome.label)
            label_sha = hashlib.sha256(outcome.label).hexdigest()
        rec = _record(job, outcome, label_file, label_sha)
        write_atomic(out / "records" / f"{job.key}.json", json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
        records[job.key] = rec
        p = state["progress"]
        ok = rec["status"] == "ok"
        done, failed = p.done + ok, p.failed + (not ok)
        elapsed = time.perf_counter() - started
        n = done + failed
        left = p.total - done - failed - p.skipped
        emit(done=done, failed=failed, last=job.rel, last_status="ok" if ok else f"failed ({rec['exit_code']})",
             eta_s=(elapsed / n * left) if n else None)
        write_results()

    emit()
    # Longest first (by file size, the best cheap predictor of an assessment's time): the last models
    # to finish are short ones, so workers do not idle at the end. Results keep the input order.
    pending.sort(key=lambda j: -_size(j.path))
    specs = [worker.Spec(j.key, str(j.path), j.args, options.model_timeout_s, j.measures) for j in pending]
    by_key = {j.key: j for j in pending}
    interrupted = False
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        old_term = None
    try:
        if specs:
            if options.engine == "local":
                _run_local(specs, workers, threads, cpus, lambda o: finished(by_key[o.key], o))
            else:
                from eeki_label.batch import ray_engine

                ray_engine.run(specs, {j.key: j.gpus for j in pending}, connection, options.cpus_per_model,
                               workers, lambda o: finished(by_key[o.key], o))
    except KeyboardInterrupt:
        interrupted = True
        worker.RUNNING.kill_all()
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        worker.RUNNING.cancelled = False
    rows = _rows(out, order, records)
    _write_results(out, rows)
    result = _summary(options, out, order, records, len(rows), pinned, workers, started)
    if options.leaderboard and not interrupted:
        _write_leaderboard(out, rows, own_device_data)
    if interrupted:
        p = state["progress"]
        raise Interrupted(f"{p.done} assessed, {p.failed} failed, {p.skipped} reused, {p.remaining} left; "
                          f"run the same command again to continue")
    return result


def _size(path: "Path | None") -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def _run_local(specs: list, workers: int, threads: int, cpus: list[int], done: Callable) -> None:
    """A pool of ``workers`` threads, each running one ``assess`` child at a time pinned to its own CPUs."""
    slots: Queue = Queue()
    for i in range(workers):
        chunk = cpus[(i * threads) % len(cpus):][:threads] or cpus[:threads]
        slots.put(tuple(chunk))

    def one(spec: worker.Spec) -> worker.Outcome:
        cores = slots.get()
        try:
            return worker.run(replace(spec, cpus=cores) if len(cpus) > 1 and workers > 1 else spec)
        finally:
            slots.put(cores)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eeki-batch")
    try:
        futures = {pool.submit(one, s) for s in specs}
        while futures:
            finished, futures = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in finished:
                done(f.result())
    except BaseException:
        worker.RUNNING.kill_all()
        for f in futures:
            f.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _rows(out: Path, order: list[str], records: dict) -> list[dict]:
    rows = []
    for key in order:
        rec = records.get(key)
        if rec is None:
            continue
        doc = _read_json(out / rec["label_file"]) if rec.get("label_file") and rec["status"] != "failed" else None
        rows += _results.model_rows(rec, doc)
    return rows


def _write_results(out: Path, rows: list[dict]) -> None:
    write_atomic(out / "results.jsonl", _results.to_jsonl(rows))
    write_atomic(out / "results.csv", _results.to_csv(rows))


def _summary(options, out, order, records, rows: int, pinned, workers, started) -> BatchResult:
    from eeki_label import __version__

    recs = [records[k] for k in order if k in records]
    count = {s: sum(1 for r in recs if r["status"] == s) for s in ("ok", "skipped", "failed")}
    gate = sum(1 for r in recs if r["status"] != "failed" and r.get("exit_code") == 3)
    result = BatchResult(out, len(order), count["ok"], count["skipped"], count["failed"], gate, rows,
                         time.perf_counter() - started, options.engine, workers,
                         ("results.csv", "results.jsonl") + (("leaderboard.html",) if options.leaderboard else ()))
    doc = {"tool": {"name": "eeki-label", "version": __version__}, "input": options.input.name,
           "engine": options.engine, "workers": workers, "assess_options": list(options.assess_args),
           "data_versions": pinned, "models": len(order), "ok": count["ok"], "skipped": count["skipped"],
           "failed": count["failed"], "gate_failed": gate, "finished_at": datetime.now(timezone.utc).isoformat(
               timespec="seconds"), "seconds": round(result.seconds, 3)}
    write_atomic(out / "batch.json", json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return result


def _write_leaderboard(out: Path, rows: list[dict], own_device_data: "str | None") -> None:
    from eeki_label.batch import leaderboard

    refs = leaderboard.reference_points(rows, device_data=own_device_data)
    page = leaderboard.render_leaderboard(rows, refs, title=f"eeki-label batch: {out.name}",
                                          generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_atomic(out / "leaderboard.html", page)
