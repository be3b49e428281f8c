"""Where runs are trained: local processes, or Ray tasks. dmdb schedules nothing itself.

An engine takes a Job and run ids and yields one Outcome per run as runs finish: the shard the
run's worker wrote, or the error that remained after the retries. Engines never touch the
database; the one collecting process ingests the shards (see collector.py).
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import BadInputError
from .lifeline import die_with_parent
from .task import Job, find_shard, run_one

ENGINES = ("local", "ray")

WAKE_S = 0.5
"""How often the local engine's collector looks up from waiting on its workers (see _first_done)."""


@dataclass(frozen=True)
class Outcome:
    """How one run ended: a shard path, or the last error after `attempts` tries."""

    run_id: int
    path: Path | None
    error: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class EngineOptions:
    """Engine settings from the command line. Ray's are passed through to ray.init / .options()."""

    engine: str = "local"
    workers: int | None = None  # local: processes (default: CPU count)
    retries: int = 3  # extra tries for a run whose worker died or raised
    address: str | None = None  # ray: cluster address (None: start a local one)
    num_cpus: float = 1.0  # ray: CPUs per task
    num_gpus: float = 0.0  # ray: GPUs per task

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise BadInputError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.workers is not None and self.workers < 1:
            raise BadInputError(f"workers must be >= 1, got {self.workers}")
        if self.retries < 0:
            raise BadInputError(f"retries must be >= 0, got {self.retries}")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise BadInputError("num_cpus and num_gpus must be >= 0")


def run_engine(opts: EngineOptions, job: Job, run_ids: list[int], train: str, shards: Path) -> Iterator[Outcome]:
    if opts.engine == "ray":
        return run_ray(opts, job, run_ids, train, shards)
    return run_local(opts, job, run_ids, train, shards)


# -- local processes -------------------------------------------------------------------------


def _context() -> mp.context.BaseContext:
    # forkserver: children fork from a clean server that imported dmdb once, not from this
    # process (which holds a DuckDB connection and its threads), and start in milliseconds.
    # Both the server and the workers die with their parent (lifeline.py).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["dmdb.scale._forkserver_lifeline", "dmdb.scale.task"])
    return ctx


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=_context(), initializer=die_with_parent)


def run_local(opts: EngineOptions, job: Job, run_ids: list[int], train: str, shards: Path) -> Iterator[Outcome]:
    """A process pool with one run in flight per worker, rebuilt when a worker dies.

    When a worker process is killed, Python's pool fails every run in flight; those whose shard
    did not make it to disk are tried again (each such loss counts as an attempt of each of
    those runs, as the pool cannot say which process held which run).
    """
    workers = opts.workers or mp.cpu_count()
    queue = deque(run_ids)
    attempts: Counter[int] = Counter()
    pool = _pool(workers)
    in_flight: dict[Future[Path], int] = {}

    def failed(run_id: int, error: str) -> Outcome | None:
        """Queue the run again, or give it up (an Outcome) once its retries are spent."""
        if attempts[run_id] <= opts.retries:
            queue.append(run_id)
            return None
        return Outcome(run_id, None, error, attempts[run_id])

    try:
        while queue or in_flight:
            broken = False
            while queue and len(in_flight) < workers and not broken:
                try:
                    future = pool.submit(run_one, job, queue[0], train, str(shards))
                except BrokenProcessPool:  # a worker died since the last wait
                    broken = True
                    continue
                run_id = queue.popleft()
                attempts[run_id] += 1
                in_flight[future] = run_id
            done = _first_done(in_flight)
            if broken or any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                done, _ = wait(in_flight)  # the broken pool fails every other run in flight at once
                pool.shutdown(wait=True, cancel_futures=True)
                pool = _pool(workers)
            for f in done:
                run_id = in_flight.pop(f)
                err = f.exception()
                if err is None:
                    yield Outcome(run_id, f.result(), None, attempts[run_id])
                    continue
                path = find_shard(shards, job.plan.experiment, run_id) if isinstance(err, BrokenProcessPool) else None
                if path is not None:  # died after its shard was safely written
                    yield Outcome(run_id, path, None, attempts[run_id])
                    continue
                why = "its worker process died" if isinstance(err, BrokenProcessPool) else f"{type(err).__name__}: {err}"
                out = failed(run_id, why)
                if out is not None:
                    yield out
    except BaseException:  # Ctrl-C, a notebook's interrupt, the caller leaving early (an ingest error)
        _kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _first_done(in_flight: dict[Future[Path], int]) -> set[Future[Path]]:
    """wait(FIRST_COMPLETED) in slices of WAKE_S: polars (imported by the CLI and the database side)
    installs its SIGINT handler with SA_RESTART, so a main thread blocked in one untimed wait is not
    woken by Ctrl-C or `kill -INT` and would raise KeyboardInterrupt only when a run finishes,
    maybe hours later."""
    while in_flight:
        done, _ = wait(in_flight, timeout=WAKE_S, return_when=FIRST_COMPLETED)
        if done:
            return done
    return set()


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Give up the runs in flight: shutdown() alone waits for each to finish training (hours on a
    GPU) after the collector was told to stop. A killed worker's shard is still under its
    temporary name, which ingest never reads; the run is trained again on resume."""
    for proc in list((pool._processes or {}).values()):  # no public way before Python 3.14's kill_workers()
        proc.kill()


# -- Ray -------------------------------------------------------------------------------------


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise BadInputError("the ray engine needs Ray: pip install 'dmdb[ray]'") from e
    return ray


def check_engine(opts: EngineOptions) -> None:
    """Fail now, before anything is planned or written, if the engine cannot run here."""
    if opts.engine == "ray":
        _ray()


def run_ray(opts: EngineOptions, job: Job, run_ids: list[int], train: str, shards: Path) -> Iterator[Outcome]:
    """One Ray task per run with the requested CPUs/GPUs; Ray retries killed tasks and raised errors.

    The shard folder must be visible to every node (a shared filesystem), as the tasks write
    their shards there and this process ingests them.
    """
    ray = _ray()
    started_here = not ray.is_initialized()  # a caller may ray.init() itself, with its own options
    if started_here:
        ray.init(address=opts.address)
    task = ray.remote(_ray_task).options(
        num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, max_retries=opts.retries, retry_exceptions=True
    )
    job_ref = ray.put(job)
    refs = {task.remote(job_ref, run_id, train, str(shards)): run_id for run_id in run_ids}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.2, fetch_local=True)
            for ref in ready:
                run_id = refs.pop(ref)
                try:
                    yield Outcome(run_id, Path(ray.get(ref)), None)
                except Exception as e:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, ...: retries spent
                    yield Outcome(run_id, None, f"{type(e).__name__}: {_first_line(e)}", opts.retries + 1)
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


def _ray_task(job: Job, run_id: int, train: str, shards: str) -> str:
    return str(run_one(job, run_id, train, shards))


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else repr(e)
