"""The job runner of the experiments and benchmarks: one worker subprocess per run, JSON in and out.

Every run (an algorithm on a task with a seed, a SAC run, ...) is one :class:`Job`. The script
that defines the worker functions also runs them: :func:`run_jobs` starts ``python -m
<the script's module> --worker JOB_DIR`` (``n_jobs`` at a time); the job's parameters go in as
``JOB_DIR/spec.json`` and its result comes back as ``JOB_DIR/result.json``: JSON across
processes, never pickle. A finished job whose spec is unchanged is reused on the next call, so
an interrupted sweep resumes where it stopped (delete the folder to rerun it); ``n_jobs=0``
runs the jobs in this process (debugging, tests). Workers write ``progress.json`` (units done);
the parent shows one tqdm bar over all jobs. Used by ``experiments/*.py`` and ``bench/``
(:mod:`experiments.common` re-exports it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC, RESULT, PROGRESS, LOG, METRICS = "spec.json", "result.json", "progress.json", "log.txt", "metrics.jsonl"
PID = "worker.pid"

Worker = Callable[[dict, Path], dict]


@dataclass
class Job:
    """One run of an experiment: ``kind`` names the worker, ``params`` is its JSON input."""

    name: str  # unique within the experiment; the job's folder name
    kind: str  # key into the script's worker table
    params: dict  # JSON-serialisable parameters of the worker
    total: int = 1  # progress units (real samples) the job will report in total
    spec: dict = field(init=False)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise ValueError(f"job name {self.name!r} must be a plain folder name")
        self.spec = {"name": self.name, "kind": self.kind, "params": self.params}
        json.dumps(self.spec)  # fail now, not in the worker, on a non-JSON parameter


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Union[str, Path], obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Progress:
    """Worker side: report how many of the job's units are done (polled by the parent)."""

    def __init__(self, job_dir: Path) -> None:
        self.path = Path(job_dir) / PROGRESS

    def update(self, done: float, **info: Any) -> None:
        write_json(self.path, {"done": float(done), **info})


def run_worker(job_dir: Union[str, Path], workers: dict[str, Worker]) -> int:
    """Entry point of ``script --worker JOB_DIR``: run the job, write ``result.json``."""
    job_dir = Path(job_dir)
    spec = _read_json(job_dir / SPEC)
    if not isinstance(spec, dict) or spec.get("kind") not in workers:
        raise ValueError(f"{job_dir / SPEC}: no job spec, or an unknown kind (known: {', '.join(workers)})")
    if "threads" in spec["params"]:  # every learning run has it; torch is imported only then
        import torch

        torch.set_num_threads(int(spec["params"]["threads"]))
    (job_dir / PID).write_text(str(os.getpid()))
    t0 = time.perf_counter()
    result = workers[spec["kind"]](spec["params"], job_dir)
    result["job_wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(job_dir / RESULT, result)
    return 0


def worker_main(job_dir: Union[str, Path], workers: dict[str, Worker]) -> int:
    """``script --worker JOB_DIR`` in a subprocess: any failure goes to the job's log with its traceback."""
    try:
        return run_worker(job_dir, workers)
    except Exception:  # noqa: BLE001 - the parent reads the log
        traceback.print_exc()
        return 1


def live_worker(job_dir: Path) -> Optional[int]:
    """PID of a worker process still running this job (e.g. left by a sweep that was killed)."""
    try:
        pid = int((Path(job_dir) / PID).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if "--worker" in cmdline and str(Path(job_dir)) in cmdline else None


def run_jobs(
    script: Union[str, Path],
    jobs: Sequence[Job],
    out_dir: Union[str, Path],
    n_jobs: int = 2,
    workers: Optional[dict[str, Worker]] = None,
    progress: bool = True,
    desc: str = "runs",
    run: bool = True,
) -> dict[str, dict]:
    """Run every job (``n_jobs`` worker processes at a time); returns ``{job name: result}``.

    A failed job's result is ``{"error": ...}`` (its log's tail); the others still run. With
    ``n_jobs == 0`` the jobs run one after another in this process through ``workers``. With
    ``run=False`` nothing runs: only the jobs already finished (same spec) are returned. A job
    that a live worker of an earlier (killed) sweep is still running with the same spec is
    adopted: waited for, not started again (and not stopped if this sweep is interrupted).
    """
    out = Path(out_dir)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("job names must be unique")
    if n_jobs == 0 and workers is None:
        raise ValueError("in-process jobs (--jobs 0) need the worker table")
    results: dict[str, dict] = {}
    todo: list[Job] = []
    adopted: list[Job] = []
    for job in jobs:
        d = out / job.name
        same = _read_json(d / SPEC) == job.spec
        if same and isinstance(_read_json(d / RESULT), dict):
            results[job.name] = {**_read_json(d / RESULT), "reused": True}
            continue
        if not run:
            continue
        pid = live_worker(d)
        if pid is not None:
            if not same:
                raise ValueError(f"{d} is being run by process {pid} with other settings; stop it or use another --out")
            adopted.append(job)
            continue
        d.mkdir(parents=True, exist_ok=True)
        for stale in (RESULT, PROGRESS, METRICS):
            (d / stale).unlink(missing_ok=True)
        write_json(d / SPEC, job.spec)
        todo.append(job)

    bar = None
    if progress:
        from tqdm import tqdm

        # On a terminal the bar redraws often; in a log file (no tty) a line every 30 s is enough.
        interval = 0.5 if sys.stderr.isatty() else 30.0
        bar = tqdm(
            total=sum(j.total for j in todo + adopted),
            unit="samples",
            desc=desc,
            dynamic_ncols=True,
            mininterval=interval,
            maxinterval=max(10.0, interval),
        )
        if results:
            bar.write(f"reusing {len(results)} finished run(s) in {out}")
        if adopted:
            bar.write(f"waiting for {len(adopted)} run(s) still running from an earlier sweep")

    def done_units(job: Job) -> float:
        p = _read_json(out / job.name / PROGRESS)
        return min(float(p.get("done", 0.0)), job.total) if isinstance(p, dict) else 0.0

    def refresh(active: Sequence[Job], finished: Sequence[Job]) -> None:
        if bar is None:
            return
        units = sum(j.total for j in finished) + sum(done_units(j) for j in active)
        bar.set_postfix(
            done=f"{len(finished)}/{len(todo) + len(adopted)}",
            failed=sum("error" in results[j.name] for j in finished),
            refresh=False,
        )
        if units > bar.n:
            bar.update(units - bar.n)

    finished: list[Job] = []

    def reap_adopted() -> None:
        """Collect the adopted jobs whose (earlier) worker has ended."""
        for job in list(adopted):
            d = out / job.name
            if live_worker(d) is None:
                res = _read_json(d / RESULT)
                ended = {"error": "the earlier worker ended without a result"}
                results[job.name] = res if isinstance(res, dict) else ended
                adopted.remove(job)
                finished.append(job)

    try:
        if n_jobs == 0:
            while adopted:
                reap_adopted()
                refresh(adopted, finished)
                time.sleep(1.0 if adopted else 0.0)
            for job in todo:
                d = out / job.name
                try:
                    run_worker(d, workers)  # type: ignore[arg-type]
                    results[job.name] = json.loads((d / RESULT).read_text())
                except Exception:  # noqa: BLE001 - a failed run is reported, the others go on
                    results[job.name] = {"error": traceback.format_exc()[-3000:]}
                finished.append(job)
                refresh([], finished)
        else:
            pending = list(todo)
            running: dict[str, tuple[Job, subprocess.Popen, Any]] = {}
            previous = _stop_on_sigterm()
            try:
                while pending or running or adopted:
                    reap_adopted()
                    while pending and len(running) + len(adopted) < n_jobs:
                        job = pending.pop(0)
                        d = out / job.name
                        log = (d / LOG).open("w")
                        cmd, env = worker_command(script, d)
                        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
                        running[job.name] = (job, proc, log)
                    time.sleep(0.5)
                    for name, (job, proc, log) in list(running.items()):
                        rc = proc.poll()
                        if rc is None:
                            continue
                        log.close()
                        del running[name]
                        res = _read_json(out / name / RESULT)
                        if rc == 0 and isinstance(res, dict):
                            results[name] = res
                        else:
                            tail = (out / name / LOG).read_text()[-3000:]
                            results[name] = {"error": f"exit code {rc}\n{tail}"}
                            if bar is not None:
                                bar.write(f"{name} FAILED (exit code {rc}); log: {out / name / LOG}")
                        finished.append(job)
                    refresh([j for j, _, _ in running.values()] + adopted, finished)
            finally:  # interrupted (Ctrl-C, kill) or crashed: stop the workers we started
                for _job, proc, _log in running.values():
                    proc.terminate()
                for _job, proc, log in running.values():
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    log.close()
                if previous is not None:
                    import signal

                    signal.signal(signal.SIGTERM, previous)
    finally:
        if bar is not None:
            bar.close()
    return results


def _stop_on_sigterm() -> Optional[Any]:
    """Turn SIGTERM into SystemExit in the main thread, so that the workers are stopped too
    (a sweep started in the background with ``&`` ignores SIGINT; ``kill PID`` still works)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    return signal.signal(signal.SIGTERM, stop)


def worker_command(script: Union[str, Path], job_dir: Path) -> tuple[list[str], dict[str, str]]:
    """How to start ``script --worker JOB_DIR``: as a module of this repository's packages
    (``python -m experiments.x``) when it is one, else by path with the repository importable."""
    script = Path(script).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    try:
        rel = script.relative_to(ROOT)
    except ValueError:
        rel = None
    if (
        rel is not None
        and len(rel.parts) > 1
        and all((ROOT / Path(*rel.parts[:i]) / "__init__.py").exists() for i in range(1, len(rel.parts)))
    ):
        return [sys.executable, "-m", ".".join(rel.with_suffix("").parts), "--worker", str(job_dir)], env
    # a script outside the packages (e.g. a test's): the repository goes on its import path
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return [sys.executable, str(script), "--worker", str(job_dir)], env
