"""Run ensemble members through an executor: serially, in local processes, or on a dask cluster.

The ``parallel`` section of the ensemble applications (``eda``, ``cycle``, ``ensemble-forecast``)::

    parallel:
      engine: serial          # serial | processes | dask
      workers: 2              # processes: pool size; dask: workers of the LocalCluster started
      tasks per worker: 1     # chunks of members per worker
      processes: true         # dask LocalCluster: worker processes (true) or threads (false)
      scheduler: tcp://127.0.0.1:8786   # dask only: use this running scheduler instead of a LocalCluster

Work is cut into *tasks*, each a chunk of members (:func:`member_chunks`), and every
task is a module-level function of picklable arguments that returns NumPy arrays.
A task computes each of its members independently (seeded random streams are
derived from the member number, never from the order of execution), so the
results are bitwise identical whatever the engine and the number of workers:
the serial engine runs the very same function in the calling process.

Chunking rule: an ensemble of ``N`` members (or ``N`` units of work, such as the
forecast batches of ``ensemble-forecast``) is cut into ``min(N, workers x tasks per
worker)`` contiguous chunks whose sizes differ by at most one (:attr:`MemberExecutor.ntasks`);
the serial engine makes one chunk.  Each chunk is one task: one pickled message to a
worker and one result back, so a task carries many members and the per-task overhead
(pickling, the round trip to the worker, dask's scheduling, the transfer of the members'
arrays) is paid ``workers x tasks per worker`` times per map, never once per member.
``tasks per worker`` above 1 balances members of unequal cost at the price of more
messages; there are never more chunks than members, so no worker gets an empty task.

Threads: the workers of ``processes`` and of a dask ``LocalCluster`` of processes share
the machine's cores, so each limits its BLAS and OpenMP thread pools to one thread
(:func:`limit_worker_threads`, with ``threadpoolctl``: the process pool's initializer, a
dask worker plugin, and a check at the start of every task that one of them ran); ``workers``
processes then use ``workers`` cores, not ``workers`` times the cores.  The calling
process (the serial engine), the threads of ``processes: false`` (which share the
calling process and its thread pools) and the workers of a given ``scheduler``
(started and configured by whoever runs them) are left as they are.

``processes`` uses :class:`concurrent.futures.ProcessPoolExecutor`; ``dask`` a
``distributed.Client``, connected to ``scheduler`` when given, or to a
``distributed.LocalCluster`` that the executor starts (``workers`` worker
processes of one thread each) and closes with the executor.  Worker processes
import the model plugins through their entry points as the main process does.

A ``scheduler`` address is checked before the client is made: within
:data:`CONNECT_TIMEOUT` seconds a dask scheduler must answer there with its identity.
An address that is malformed, refuses connections, never answers, or answers with
something that is not the dask protocol (a web server, a database ...) is a
:class:`~pyoops.util.errors.ConfigError` naming ``parallel.scheduler``, never a hang or
a ``MemoryError`` from a garbage message length.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from pyoops.config.parameters import Parameters
from pyoops.util.errors import ConfigError

__all__ = ["CONNECT_TIMEOUT", "MemberExecutor", "ParallelParameters", "check_scheduler", "limit_worker_threads",
           "make_executor", "member_chunks"]

logger = logging.getLogger("pyoops")

#: Seconds a dask scheduler has to answer (connection, handshake and identity) before its address is refused.
CONNECT_TIMEOUT = 10.0


class ParallelParameters(Parameters):
    """The ``parallel`` section: how ensemble members are distributed."""

    engine: Literal["serial", "processes", "dask"] = Field(
        "serial", description="'serial' (in process), 'processes' (local process pool) or 'dask' (dask.distributed).")
    workers: int | None = Field(None, gt=0, description="Number of worker processes (default: the CPU count).")
    scheduler: str | None = Field(
        None, description="dask: address of a running scheduler (e.g. tcp://127.0.0.1:8786); default: start a "
                          "LocalCluster with 'workers' workers and close it at the end.")
    processes: bool = Field(True, description="dask LocalCluster: worker processes (true) or threads (false).")
    tasks_per_worker: int = Field(1, gt=0, description="Chunks of members per worker (finer load balancing).")

    @model_validator(mode="after")
    def _scheduler_for_dask(self) -> "ParallelParameters":
        if self.scheduler is not None and self.engine != "dask":
            raise ValueError("'scheduler' only applies to engine: dask")
        if self.scheduler is not None and (not self.scheduler.strip() or any(c.isspace() for c in self.scheduler)):
            raise ValueError(f"'scheduler' must be a dask scheduler address such as tcp://127.0.0.1:8786, got "
                             f"{self.scheduler!r}")
        return self


def _reason(exc: BaseException, timeout: float = CONNECT_TIMEOUT) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (no scheduler listens there)"
    if isinstance(exc, MemoryError):
        return "it answered with a message length no dask scheduler sends: it does not speak the dask protocol"
    text = " ".join(str(exc).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_scheduler(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """A ConfigError naming ``parallel.scheduler`` unless a dask scheduler answers at ``address``.

    The probe (connect, dask handshake, ``identity`` request) runs on its own event loop
    in a daemon thread and is abandoned after ``timeout`` seconds, so no service at the
    address, however it misbehaves, can make it hang or raise anything else.
    """
    outcome: dict[str, Any] = {}

    async def probe() -> None:
        from distributed.comm import connect
        from distributed.comm.addressing import parse_address, parse_host_port

        scheme, location = parse_address(address)
        if scheme == "tcp":  # a refused connection fails at once (distributed's connect retries until the timeout)
            host, port = parse_host_port(location)
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
        comm = await connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            reply = await comm.read()
        finally:
            comm.abort()
        if not (isinstance(reply, dict) and reply.get("type") == "Scheduler"):
            kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
            raise ConnectionError(f"the service there is not a dask scheduler (it says it is {kind!r})")

    def target() -> None:
        try:
            asyncio.run(asyncio.wait_for(probe(), timeout))
        except BaseException as exc:  # anything a broken service can provoke, MemoryError included
            outcome["error"] = exc
        else:
            outcome["ok"] = True

    thread = threading.Thread(target=target, name="pyoops-dask-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    if outcome.get("ok"):
        return
    error = outcome.get("error", TimeoutError())
    raise ConfigError(f"cannot use the dask scheduler at {address}: {_reason(error, timeout)}; give the address of "
                      "a running dask scheduler, e.g. tcp://127.0.0.1:8786, or remove 'scheduler' to start a local "
                      "cluster", "parallel.scheduler")


#: Environment variables read by BLAS and OpenMP runtimes when they load, set to 1 in worker processes.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

_thread_limits: Any = None


def limit_worker_threads() -> None:
    """One BLAS/OpenMP thread in this (worker) process.

    The thread pools of the libraries already loaded are limited with
    ``threadpoolctl.threadpool_limits``; the environment variables of
    :data:`THREAD_VARIABLES` are set to 1 for the libraries loaded later (SciPy's own
    OpenBLAS is loaded at its first ``scipy.linalg`` import, say).  Called in worker
    processes only: in the calling process it would slow down its own BLAS.
    """
    global _thread_limits
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    from threadpoolctl import threadpool_limits

    _thread_limits = threadpool_limits(limits=1)  # kept: the limits hold as long as the process


class _OneThreadPlugin:
    """dask worker plugin: :func:`limit_worker_threads` when a worker (process) starts (mixed with
    ``distributed``'s ``WorkerPlugin`` when registered, so that importing this module does not import dask)."""

    name = "pyoops-one-thread"
    idempotent = True

    def setup(self, worker: Any) -> None:
        from pyoops.util.allocator import tune_allocator

        limit_worker_threads()
        tune_allocator()


class _InWorker:
    """Picklable ``task -> func(task)`` that limits the worker's threads first (cheap once limited)."""

    def __init__(self, func: Callable[..., Any]):
        self.func = func

    def __call__(self, task: Any) -> Any:
        if _thread_limits is None:
            limit_worker_threads()
        return self.func(task)


def member_chunks(nmembers: int, nchunks: int) -> list[list[int]]:
    """Members ``0..nmembers-1`` cut into at most ``nchunks`` contiguous, nearly equal chunks."""
    nchunks = max(1, min(int(nchunks), int(nmembers)))
    base, extra = divmod(int(nmembers), nchunks)
    out, start = [], 0
    for k in range(nchunks):
        size = base + (1 if k < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return [c for c in out if c]


class MemberExecutor:
    """An executor with an ordered :meth:`map`; use as a context manager (or call :meth:`~MemberExecutor.close`).

    Parameters
    ----------
    params:
        Validated :class:`ParallelParameters` (or a mapping of its keys, or None for serial).
    """

    def __init__(self, params: "ParallelParameters | dict[str, Any] | None" = None):
        if params is None:
            params = ParallelParameters()
        elif not isinstance(params, ParallelParameters):
            from pyoops.config.parameters import validate

            params = validate(ParallelParameters, dict(params), "parallel")
        self.params = params
        self.engine = params.engine
        self._pool: Any = None
        self._client: Any = None
        self._cluster: Any = None
        self._started = False
        #: Whether tasks run in worker processes of this machine that limit their threads to one.
        self.limits_threads = False

    # Life cycle ---------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        """Number of workers (1 for the serial engine)."""
        if self.engine == "serial":
            return 1
        if self.params.workers:
            return int(self.params.workers)
        if self._client is not None:
            return max(1, len(self._client.scheduler_info().get("workers", {})))
        import os

        return max(1, os.cpu_count() or 1)

    @property
    def ntasks(self) -> int:
        """How many chunks to cut an ensemble into."""
        return self.workers * (self.params.tasks_per_worker if self.engine != "serial" else 1)

    def start(self) -> "MemberExecutor":
        if self._started:
            return self
        self._started = True
        if self.engine == "processes":
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=limit_worker_threads)
            self.limits_threads = True
        elif self.engine == "dask":
            try:
                from distributed import Client, LocalCluster
            except ImportError:  # pragma: no cover - distributed is a core dependency
                raise ConfigError("engine: dask needs the 'distributed' package (pip install 'dask[distributed]')",
                                  "parallel.engine") from None
            if self.params.scheduler is not None:
                check_scheduler(self.params.scheduler)
                try:
                    self._client = Client(self.params.scheduler, timeout=f"{CONNECT_TIMEOUT:g}s",
                                          set_as_default=False)
                except Exception as exc:
                    raise ConfigError(f"cannot connect to the dask scheduler at {self.params.scheduler}: "
                                      f"{_reason(exc)}", "parallel.scheduler") from None
            else:
                try:
                    self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                                 processes=self.params.processes, dashboard_address=":0")
                    self._client = Client(self._cluster, set_as_default=False)
                    if self.params.processes:
                        self._register_thread_limits()
                except Exception as exc:
                    self.close()
                    raise ConfigError(f"cannot start a local dask cluster of {self.workers} workers: "
                                      f"{_reason(exc)}", "parallel.engine") from None
            logger.info("dask: %s", self._client)
        return self

    def _register_thread_limits(self) -> None:
        """Run :func:`limit_worker_threads` in every worker of the local cluster (and in those it restarts)."""
        from distributed.diagnostics.plugin import WorkerPlugin

        plugin = type("OneThreadPlugin", (_OneThreadPlugin, WorkerPlugin), {})()
        register = getattr(self._client, "register_plugin", None) or self._client.register_worker_plugin
        register(plugin, name=_OneThreadPlugin.name)
        self.limits_threads = True

    def close(self) -> None:
        """Shut the worker pool (or the dask client and cluster) down; waits for running tasks."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        self._started = False
        self.limits_threads = False

    def __enter__(self) -> "MemberExecutor":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # Work ---------------------------------------------------------------------------------
    def map(self, func: Callable[..., Any], tasks: Iterable[Any]) -> list[Any]:
        """``[func(t) for t in tasks]``, computed by the engine, in the order of ``tasks``."""
        tasks = list(tasks)
        if self.engine == "serial" or len(tasks) == 0:
            return [func(t) for t in tasks]
        self.start()
        if self.limits_threads:
            func = _InWorker(func)
        if self.engine == "processes":
            return list(self._pool.map(func, tasks))
        futures = self._client.map(func, tasks, pure=False)
        return self._client.gather(futures)

    def map_chunks(self, func: Callable[[Any, Sequence[int]], Any], shared: Any, nmembers: int) -> list[Any]:
        """``func(shared, members)`` for every chunk of members; results in member-chunk order."""
        chunks = member_chunks(nmembers, self.ntasks)
        return self.map(_ChunkCall(func, shared), chunks)


class _ChunkCall:
    """Picklable ``members -> func(shared, members)``."""

    def __init__(self, func: Callable[[Any, Sequence[int]], Any], shared: Any):
        self.func, self.shared = func, shared

    def __call__(self, members: Sequence[int]) -> Any:
        return self.func(self.shared, members)


def make_executor(params: "ParallelParameters | dict[str, Any] | None") -> MemberExecutor:
    """A :class:`MemberExecutor` for the ``parallel`` section (not started yet)."""
    return MemberExecutor(params)
