"""Sweep points run by several processes on one directory: per-point files and locks, worker pools, shards.

A sweep is a list of :class:`Task` (a file name and what the work function needs). The directory
holds, per task,

* ``points/<name>.json``: the finished task's record, written atomically
  (:func:`sail.io.write_json_atomically`) once its work has returned;
* ``points/<name>.lock``: an exclusive lock (``filelock``) held while the task runs;

and ``sweep_log.jsonl``, one line per start, finish and failure (task, process id, host, time).

Claiming a task (:func:`claim_and_run`) takes its lock without waiting, reads its record under the
lock, and runs the work only when no matching record is there: two processes never run one task,
whether they were given the same tasks (two copies of one command) or disjoint shards. A task whose
lock is held elsewhere is left for a second pass that waits for the lock, so that every process
returns with all of its tasks finished by someone. The operating system drops the lock of a
process that dies, so a killed worker's task is claimed (and run again) by the next process that
asks for it. The locks are ``flock`` locks: on a network file system they hold only where it
supports them (NFSv4 does).

:func:`run_tasks` runs a list of tasks in this process (``workers = 1``) or in a pool of
``workers`` spawned processes, each with ``max(1, cpus // workers)`` torch threads and, when CUDA
devices are given, one device per process (``CUDA_VISIBLE_DEVICES``). :func:`parse_shard` and
:func:`shard` pick the tasks of one job of a job array: index ``i`` of ``n`` takes the tasks whose
position in the stable task list is ``i`` modulo ``n``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sail.config import ConfigError
from sail.io import dumps_strict, loads_strict, write_json_atomically

__all__ = [
    "LOG_FILE", "POINTS_DIR", "Task", "claim_and_run", "cpu_count", "directory_lock", "parse_shard", "point_digest",
    "read_record", "run_tasks", "shard", "threads_per_worker",
]

POINTS_DIR = "points"
"""Per-task records and locks, below the study directory."""
LOG_FILE = "sweep_log.jsonl"
"""One JSON line per start, finish and failure of a task."""


@dataclass
class Task:
    """One unit of a sweep: its record's file name and what the work function is given."""

    name: str
    """File name (without ``.json``) of the task's record in ``points/``; unique in the sweep."""
    payload: dict = field(default_factory=dict)
    """The work function's argument (picklable: it travels to the worker processes)."""
    label: str = ""
    """A short description for the progress bar."""


def point_digest(point: dict, length: int = 10) -> str:
    """The first ``length`` hex digits of sha256 of ``point`` as sorted-key strict JSON."""
    return hashlib.sha256(dumps_strict(point, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:length]


def _safe(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", name):
        raise ValueError(f"not a safe task file name: {name!r}")
    return name


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (0 ≤ i < n) → ``(i, n)``; None → ``(0, 1)`` (everything)."""
    if text is None:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ConfigError("--shard", f"expected i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(match[1]), int(match[2])


def shard(tasks: list, index: int, count: int) -> list:
    """The tasks at positions ``p`` with ``p % count == index``, in their order."""
    return [t for p, t in enumerate(tasks) if p % count == index]


def cpu_count() -> int:
    """CPUs this process may run on (its affinity where the platform reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """``max(1, cpus // workers)``: each worker's share of the CPUs."""
    return max(1, (cpu_count() if cpus is None else cpus) // max(1, workers))


def directory_lock(directory: Path, name: str = ".results.lock"):
    """An exclusive lock on ``directory/name``, for read-modify-write of shared files."""
    from filelock import FileLock

    return FileLock(str(Path(directory) / name))


def _record_path(directory: Path, name: str) -> Path:
    return Path(directory) / POINTS_DIR / f"{_safe(name)}.json"


def read_record(directory: Path, name: str) -> dict | None:
    """The finished record of task ``name`` in ``directory``, or None."""
    path = _record_path(directory, name)
    return loads_strict(path.read_text()) if path.is_file() else None


def _log(directory: Path, event: str, name: str, **extra) -> None:
    line = json.dumps({"event": event, "task": name, "pid": os.getpid(), "host": socket.gethostname(),
                       "time": round(time.time(), 3), **extra})
    with open(Path(directory) / LOG_FILE, "a", encoding="utf-8") as f:  # one short append per line
        f.write(line + "\n")


def claim_and_run(task: Task, directory: str | Path, work: Callable[[dict], dict], matches: Callable[[Task, dict], bool], wait_for_lock: bool = False) -> str:
    """Run ``task`` unless it is finished or running elsewhere: ``"ran"``, ``"done"`` (a record that
    ``matches`` was there) or ``"busy"`` (its lock is held elsewhere and ``wait_for_lock`` is false).
    The record is ``work(task.payload)``, written to ``points/<name>.json`` before the lock is let go."""
    from filelock import FileLock, Timeout

    directory = Path(directory)
    (directory / POINTS_DIR).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / POINTS_DIR / f"{_safe(task.name)}.lock"))
    try:
        lock.acquire(timeout=-1 if wait_for_lock else 0)
    except Timeout:
        return "busy"
    try:
        record = read_record(directory, task.name)
        if record is not None and matches(task, record):
            return "done"
        _log(directory, "start", task.name)
        try:
            record = work(task.payload)
        except BaseException as exc:
            _log(directory, "failed", task.name, error=f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500])
            raise
        write_json_atomically(_record_path(directory, task.name), record, indent=1, end="")
        _log(directory, "done", task.name)
        return "ran"
    finally:
        lock.release()


def _init_worker(threads: int, devices, setup) -> None:
    """Each pool process: ``threads`` torch threads, one CUDA device from ``devices`` (a queue), then
    ``setup()``."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    import torch

    torch.set_num_threads(threads)
    if setup is not None:
        setup()


def _visible_devices(count: int) -> list[str]:
    """The ids of the first ``count`` CUDA devices this process sees, as CUDA_VISIBLE_DEVICES names them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def run_tasks(
    tasks: list[Task],
    directory: str | Path,
    work: Callable[[dict], dict],
    matches: Callable[[Task, dict], bool],
    workers: int = 1,
    cuda_devices: int = 0,
    on_finished: Callable[[Task, str], None] | None = None,
    setup: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Run every task of ``tasks`` not yet finished in ``directory``; returns how many were run here
    (``ran``) and found finished (``done``). ``work`` and ``matches`` must be picklable (module-level
    functions or their ``functools.partial``) when ``workers > 1``. With ``cuda_devices > 0`` the
    pool has at most that many processes, one per device. ``on_finished(task, status)`` is called in
    this process after each task; ``setup()`` (picklable too) runs once in each pool process. The
    first failure stops the sweep (the running tasks finish) and is raised."""
    counts = {"ran": 0, "done": 0}

    def finished(task: Task, status: str) -> None:
        counts[status] += 1
        if on_finished is not None:
            on_finished(task, status)

    todo = []
    for task in tasks:  # a cheap first look, without the locks
        record = read_record(directory, task.name)
        if record is not None and matches(task, record):
            finished(task, "done")
        else:
            todo.append(task)
    if cuda_devices > 0 and workers > cuda_devices:
        print(f"sail study: {workers} workers asked, {cuda_devices} CUDA devices: running {cuda_devices} (one per device)", file=sys.stderr)
        workers = cuda_devices
    if workers <= 1 or len(todo) <= 1:
        _run_here(todo, directory, work, matches, finished)
    else:
        _run_in_pool(todo, directory, work, matches, finished, workers, cuda_devices, setup)
    return counts


def _run_here(todo, directory, work, matches, finished) -> None:
    busy = []
    for task in todo:
        status = claim_and_run(task, directory, work, matches)
        if status == "busy":
            busy.append(task)
        else:
            finished(task, status)
    for task in busy:  # running elsewhere: wait for it, run it if that process died
        finished(task, claim_and_run(task, directory, work, matches, wait_for_lock=True))


def _run_in_pool(todo, directory, work, matches, finished, workers: int, cuda_devices: int, setup) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    devices = None
    if cuda_devices > 0:
        devices = context.Queue()
        for device in _visible_devices(cuda_devices):
            devices.put(device)
    threads = threads_per_worker(workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads, devices, setup)) as pool:
        queue = [(task, False) for task in todo]
        running: dict = {}
        failure = None
        while queue or running:
            while queue and len(running) < workers and failure is None:
                task, wait_for_lock = queue.pop(0)
                running[pool.submit(claim_and_run, task, str(directory), work, matches, wait_for_lock)] = task
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                try:
                    status = future.result()
                except Exception as exc:  # let the running tasks finish, then raise the first failure
                    failure = failure or exc
                    queue.clear()
                    continue
                if status == "busy":
                    queue.append((task, True))
                else:
                    finished(task, status)
        if failure is not None:
            raise failure
