"""How many threads the numeric libraries use, decided once from the cores this process may run on.

MXNet 1.9 sizes its OpenMP pool as *half* the processors when ``OMP_NUM_THREADS`` is unset (it assumes
hyper-threading), and it reads the variable once, when the library loads. On the 2-core development machine
that meant training on one core. `configure_threads` must therefore run before ``import mxnet``; every entry
point (the ``segqa`` CLI, ``training/train.py`` run as the SageMaker script, the benchmarks) calls it first.

The count, in order of precedence:

1. ``SEGQA_THREADS`` (a positive integer): segqa's own knob;
2. ``OMP_NUM_THREADS`` already set by the user or the platform: respected as it is;
3. the number of cores in the process's CPU affinity mask (``os.sched_getaffinity``), which is what a
   container's ``--cpuset-cpus`` or ``taskset`` leaves us; ``os.cpu_count()`` where affinity is unknown.

ONNX Runtime sessions take the same number (`threads`) as their intra-op thread count.

`CpuMeter` measures "cores busy" (process CPU time / wall time) so a log can show that the threads are used.
Standard library only: importing this module must not load MXNet.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import MutableMapping

from qa_workflow.contract import SegqaError

__all__ = ["ENV_VAR", "CpuMeter", "available_cores", "configure_threads", "resolve_threads", "threads"]

log = logging.getLogger(__name__)

ENV_VAR = "SEGQA_THREADS"
#: Variables that size OpenMP / BLAS pools; all get the same count so no library oversubscribes the cores.
_POOL_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise SegqaError(f"environment variable {name}={text!r}: expected a positive whole number of threads")
    return value


def resolve_threads(environ: MutableMapping[str, str] | None = None) -> tuple[int, str]:
    """(thread count, where it came from) per the precedence in the module docstring. Pure apart from
    reading the affinity mask."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR, "").strip():
        return _positive_int(ENV_VAR, env[ENV_VAR]), ENV_VAR
    if env.get("OMP_NUM_THREADS", "").strip():
        return _positive_int("OMP_NUM_THREADS", env["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    return available_cores(), "affinity"


def configure_threads(environ: MutableMapping[str, str] | None = None) -> int:
    """Set the OpenMP/BLAS thread variables for this process (and its children); returns the count.

    Call before MXNet is imported. ``SEGQA_THREADS`` overrides the pool variables; otherwise variables the
    user already set are left alone. An invalid value is reported on stderr (this runs at import time,
    before any error handler) and replaced by the affinity count. If MXNet is already loaded its pool can no
    longer change: that is logged, not raised, because the process still works, on fewer cores.
    """
    env = os.environ if environ is None else environ
    try:
        count, source = resolve_threads(env)
        overwrite = source == ENV_VAR
    except SegqaError as exc:
        count, overwrite = available_cores(), True
        env.pop(ENV_VAR, None)
        print(f"segqa: {exc}; using the {count} core(s) this process may run on", file=sys.stderr)
    changed = False
    for var in _POOL_VARS:
        if (overwrite or not env.get(var, "").strip()) and env.get(var) != str(count):
            env[var] = str(count)
            changed = changed or var == "OMP_NUM_THREADS"
    if changed and environ is None and "mxnet" in sys.modules:
        log.warning("MXNet was imported before the thread count was set; it keeps the pool it started with "
                    "(set %s or OMP_NUM_THREADS before starting Python)", ENV_VAR)
    return count


def threads() -> int:
    """The thread count this process uses (for ONNX Runtime sessions and for logs)."""
    return resolve_threads()[0]


class CpuMeter:
    """Process CPU time over wall time since construction (or `reset`): 2.0 means two cores fully busy."""

    def __init__(self) -> None:
        self.reset()

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def reset(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), self._cpu()

    def read(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds) since the start."""
        return time.perf_counter() - self.wall0, self._cpu() - self.cpu0

    def cores_busy(self) -> float | None:
        wall, cpu = self.read()
        return round(cpu / wall, 2) if wall > 0 else None
