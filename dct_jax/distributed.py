"""Multi-process start-up and preemption handling for training.

``initialize(coordinator_address, num_processes, process_id)`` is what
``run_train.py`` calls before any JAX computation:

* all three given: ``jax.distributed.initialize(coordinator_address,
  num_processes, process_id)`` (any machines: several GPU nodes, localhost);
* none given: ``jax.distributed.initialize()`` (JAX's own detection) when the
  environment is a multi-process cluster job JAX knows (SLURM with more than
  one task, Open MPI with more than one rank, a Cloud TPU VM), else a single
  process;
* ``num_processes=1`` alone: a single process, whatever the environment says
  (e.g. ``python run_train.py`` inside a multi-task SLURM allocation).

:class:`Preemption` turns SIGTERM (what TPU and cluster schedulers send before
they take the machines back) into a flag the training loop polls after each
step; in a multi-process run the processes agree (a tiny all-gather of the
flag) so that all of them stop and checkpoint at the same step.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Mapping

from absl import logging


def cluster_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The name of the multi-process cluster environment ``jax.distributed.initialize()`` can detect, or None."""
    env = os.environ if environ is None else environ

    def count(name: str) -> int:
        try:
            return int(env.get(name, "1"))
        except ValueError:
            return 1

    if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and count("SLURM_NTASKS") > 1:
        return "SLURM"
    if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
        return "Open MPI"
    for name in ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
        if len([h for h in env.get(name, "").split(",") if h.strip()]) > 1:
            return "Cloud TPU"
    if environ is None:
        try:
            from jax._src import cloud_tpu_init  # noqa: PLC0415  (set when libtpu found TPU chips)

            if cloud_tpu_init.running_in_cloud_tpu_vm:
                return "Cloud TPU"
        except ImportError:  # pragma: no cover
            pass
    return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """Starts JAX's multi-process runtime if asked or detected; returns whether it did.

    Must run before any JAX computation (before ``jax.devices()``).
    """
    import jax  # noqa: PLC0415

    given = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
             "--process_id": process_id}
    if coordinator_address is None and process_id is None and num_processes == 1:
        logging.info("Single process (--num_processes=1)")
        return False
    if all(v is None for v in given.values()):
        cluster = cluster_environment(environ)
        if cluster is None:
            return False
        logging.info("Detected a %s environment: jax.distributed.initialize()", cluster)
        jax.distributed.initialize()
        return True
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(
            f"{', '.join(missing)} missing: --coordinator_address=HOST:PORT, --num_processes=N and "
            f"--process_id=I go together (I from 0 to N-1, one per process; the coordinator is process 0's "
            f"host); give none of them on a SLURM job, an Open MPI job or a Cloud TPU VM (detected)")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
    if ":" not in coordinator_address:
        raise ValueError(f"--coordinator_address={coordinator_address!r} must be HOST:PORT")
    logging.info("jax.distributed.initialize(%r, %d, %d)", coordinator_address, num_processes, process_id)
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


class Preemption:
    """SIGTERM or SIGINT -> a flag; ``should_stop()`` is true on every process once any process got one.

    Use as a context manager around training: the handlers are installed on
    entry and the previous ones restored on exit. A Ctrl-C (SIGINT) then lets
    the current step (or compilation) finish instead of interrupting it, so the
    run saves and exits cleanly; a second Ctrl-C raises KeyboardInterrupt at
    once. Python allows signal handlers only in the main thread; elsewhere (e.g.
    training from a worker thread) nothing is installed and the signals keep
    their previous behaviour.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        if signum == signal.SIGINT:
            logging.warning("Ctrl-C: stopping after the current step and saving a checkpoint "
                            "(press Ctrl-C again to abort without saving)")

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is not threading.main_thread():
            logging.warning("Not in the main thread: SIGTERM and Ctrl-C will not save a checkpoint before exiting")
            return self
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "none"

    def should_stop(self) -> bool:
        """Whether to stop now. Collective in multi-process runs: every process must call it at each step."""
        import jax  # noqa: PLC0415

        local = self.received is not None
        if jax.process_count() == 1:
            return local
        import numpy as np  # noqa: PLC0415
        from jax.experimental import multihost_utils  # noqa: PLC0415

        flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
        stop = bool(np.asarray(flags).any())
        if stop and self.received is None:
            self.received = signal.SIGTERM  # another process got it
        return stop
