"""The executor seam on a Ray cluster (optional extra: pip install 'lyra-assets[ray]').

`lyra-assets watch ROOT --ray auto` (or --ray HOST:PORT, or RAY_ADDRESS) sends each job to the cluster:

- CPU work runs as Ray tasks (one CPU each): the whole `build` for generators that need no GPU (the
  embedded `layout`), the asset stages after a GPU walkthrough.
- GPU generators run in actors, one per GPU of the cluster (num_gpus=1). An actor is a process that lives
  across jobs, so a generator that caches its model loads it once, not per job. A generator is a GPU one
  when its class says `needs_gpu = True`, or when named with --gpu-generator.
- A task or actor lost with its worker or node is retried by Ray (RETRIES times); that is not charged as
  an attempt. The journal stays with the daemon: workers only read the job's files and write out/<name>/,
  so every node must see ROOT at the same path (a shared mount).
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any

from ..errors import LyraAssetsError
from .. import generators
from ..generators import REGISTRY as GENERATORS
from . import runner
from .executors import BadInput, Interrupted, RunBroken
from .logs import log
from .runner import Task

RETRIES = 3


class GpuWorker:
    """Holds one GPU; runs the walkthrough half of GPU jobs, one after another, in one long-lived process."""

    def generate(self, task: Task) -> None:
        runner.generate_walkthrough(task)


def _asset_after(task: Task, walked: None) -> dict[str, str]:
    """The asset stages, scheduled by Ray once the walkthrough (`walked`, its ObjectRef's value) exists."""
    return runner.make_asset(task)


class RayExecutor:
    def __init__(self, address: str, workers: int | None, gpu_generators: frozenset[str]) -> None:
        try:
            import ray
        except ImportError as exc:
            raise LyraAssetsError("--ray needs Ray: pip install 'lyra-assets[ray]'") from exc
        unknown = gpu_generators - set(GENERATORS)
        if unknown:
            raise LyraAssetsError(f"--gpu-generator: unknown generator(s) {', '.join(sorted(unknown))}; "
                                  f"available: {', '.join(sorted(GENERATORS))}")
        try:
            # The daemon's own stderr carries JSON log lines: keep Ray's chatter and the workers' output off it.
            ray.init(address=address, namespace="lyra-assets", log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise LyraAssetsError(f"--ray {address}: cannot join the Ray cluster ({exc}); start one with "
                                  f"`ray start --head`, or leave out --ray to run jobs on this machine") from exc
        self._ray = ray
        resources = ray.cluster_resources()
        self.capacity = workers or max(1, int(resources.get("CPU", 1)))
        self._gpus = int(resources.get("GPU", 0))
        self._gpu_generators = gpu_generators
        self._build = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(runner.run)
        self._asset = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(_asset_after)
        self._gpu_worker = ray.remote(num_gpus=1, max_restarts=-1, max_task_retries=RETRIES)(GpuWorker)
        self._actors: list[Any] = []
        self._load: dict[int, int] = {}  # actor index -> walkthroughs in flight
        self._in_flight: dict[str, tuple[list[Any], int | None]] = {}  # job -> (refs, actor index)
        self._lock = threading.Lock()
        self._interrupting = False
        self._stopped: dict[str, str] = {}  # job -> why it was stopped
        log("ray", address=address, cpus=resources.get("CPU", 0), gpus=self._gpus, capacity=self.capacity)

    def submit(self, task: Task) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        generator = task.plan["job"]["settings"]["generator"]
        if not self._needs_gpu(generator):
            refs, actor = [self._build.remote(task)], None
        elif not self._gpus:
            future.set_exception(BadInput(f"the generator {generator!r} needs a GPU and the Ray cluster has none; "
                                          f"add a GPU node, or choose another generator in the sidecar"))
            return future
        else:
            with self._lock:
                actor = self._least_loaded_actor()
                self._load[actor] += 1
            walked = self._actors[actor].generate.remote(task)
            refs = [walked, self._asset.remote(task, walked)]
        with self._lock:
            self._in_flight[task.job] = (refs, actor)
        log("submitted", job=task.job, route="gpu actor + cpu task" if actor is not None else "cpu task")
        refs[-1].future().add_done_callback(lambda done: self._settle(task, done, future))
        return future

    def _needs_gpu(self, generator: str) -> bool:
        if generator in self._gpu_generators:
            return True
        return generators.info(generator).needs_gpu

    def _least_loaded_actor(self) -> int:
        """One actor per GPU, started as jobs need them."""
        if len(self._actors) < self._gpus and all(self._load.values()):
            self._actors.append(self._gpu_worker.remote())
            self._load[len(self._actors) - 1] = 0
        return min(self._load, key=self._load.get)

    def _settle(self, task: Task, done: Future, future: Future) -> None:
        with self._lock:
            _, actor = self._in_flight.pop(task.job)
            if actor is not None:
                self._load[actor] -= 1
            stopped = self._stopped.pop(task.job, None)
        error = done.exception()
        if error is None:
            future.set_result(done.result())
        elif self._interrupting:
            future.set_exception(Interrupted())
        elif stopped:
            future.set_exception(RunBroken(stopped))
        else:
            future.set_exception(self._translate(error))

    @staticmethod
    def _translate(error: BaseException) -> Exception:
        cause = getattr(error, "cause", None) or error  # a RayTaskError carries the task's own exception
        if isinstance(cause, LyraAssetsError):
            return BadInput(str(cause))
        return RunBroken(f"{type(cause).__name__}: {cause}")

    def stop(self, job: str, reason: str) -> None:
        with self._lock:
            if job not in self._in_flight:
                return
            self._stopped[job] = reason
            refs, actor = self._in_flight[job]
        self._ray.cancel(refs[-1], force=True)
        if actor is not None:  # stuck in the walkthrough: restart the actor (Ray retries its other calls)
            self._ray.kill(self._actors[actor], no_restart=False)

    def interrupt(self) -> None:
        with self._lock:
            self._interrupting = True
            in_flight = list(self._in_flight.values())
            actors = list(self._actors)
        for refs, _ in in_flight:
            self._ray.cancel(refs[-1], force=True)  # the CPU task; a pending one never starts
        for handle in actors:  # actor calls cannot be force-cancelled: stop the actors themselves
            self._ray.kill(handle, no_restart=True)

    def close(self) -> None:
        self._ray.shutdown()
