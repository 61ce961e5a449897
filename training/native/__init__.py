"""Native training kernels: a C++ library of MXNet operators, loaded with ``mx.library.load`` (issue #14).

``segqa_ops.cc`` holds the operators that the ENet's training step and the loss spend their time in, each one
pass forward and one pass backward (docs/segmenter.md, "Threads, and what a training step costs"):

- ``segqa_prelu``: ENet's per-channel PReLU with its exact slope gradient;
- ``segqa_residual_prelu``: a bottleneck's tail, ``prelu(main + mask * ext)`` (the residual add, the spatial
  dropout's channel mask and the activation; a ReLU with zero slopes);
- ``segqa_maxpool2``: 2x2 stride-2 max-pooling (MXNet's took ~4 ms per call at the ENet's sizes, this ~1 ms);
- ``segqa_seg_loss``: softmax, weighted soft Dice and weighted cross-entropy with the ignore label
  (`training.losses`), for both networks.

MXNet 1.9 ships the extension API with its wheel (``mxnet/include/mxnet/lib_api.h`` and
``mxnet/src/lib_api.cc``), so building needs a C++17 compiler and nothing else: ``make`` runs
``python -m training.native`` when it sets up ``.venv``, which writes the library into the environment
(``<sys.prefix>/lib/libsegqa_ops.so``), built against the MXNet it will be loaded into.

`load()` is what the networks and the loss ask: True when every operator is registered. Without the library (no
compiler on the machine, a SageMaker training container), with a library built from an older source, or with
``SEGQA_NATIVE=0``, it is False and training composes the same functions from MXNet operators: slower, and
numerically the same.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

__all__ = ["LIBRARY_NAME", "SOURCE", "OPERATORS", "library_path", "build", "build_for_this_job", "load", "status"]

log = logging.getLogger("segqa.training")

LIBRARY_NAME = "libsegqa_ops.so"
SOURCE = Path(__file__).with_name("segqa_ops.cc")
#: What the library registers; a library without one of them (built from an older source) is not used.
OPERATORS = ("segqa_prelu", "segqa_residual_prelu", "segqa_maxpool2", "segqa_seg_loss")
_FLAGS = ("-shared", "-fPIC", "-std=c++17", "-O3", "-fopenmp")


def library_path() -> Path:
    """Where the library is built and looked for: ``$SEGQA_NATIVE_LIB``, else ``<sys.prefix>/lib/``."""
    return Path(os.environ.get("SEGQA_NATIVE_LIB") or Path(sys.prefix) / "lib" / LIBRARY_NAME)


def _mxnet_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mxnet")
    if spec is None or spec.origin is None:
        raise RuntimeError("mxnet is not installed in this environment")
    return Path(spec.origin).parent


def build(out: Path | None = None, compiler: str | None = None) -> Path:
    """Compile ``segqa_ops.cc`` against this environment's MXNet into ``out`` (default `library_path()`), written
    to a temporary name and renamed into place. Raises RuntimeError with the reason (no compiler, no MXNet
    headers, a compile error)."""
    out = Path(out or library_path())
    cxx = compiler or os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler {cxx!r} on the PATH")
    mx_dir = _mxnet_dir()
    include, lib_api = mx_dir / "include", mx_dir / "src" / "lib_api.cc"
    if not (include / "mxnet" / "lib_api.h").is_file() or not lib_api.is_file():
        raise RuntimeError(f"{mx_dir}: the MXNet wheel has no extension API (include/mxnet/lib_api.h, "
                           "src/lib_api.cc)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *_FLAGS, str(SOURCE), str(lib_api), f"-I{include}", "-o", tmp],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed on {SOURCE.name}:\n{proc.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _turned_off() -> bool:
    return os.environ.get("SEGQA_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def build_for_this_job() -> str | None:
    """Where no library was built (a SageMaker training container runs the bundle without make), build one into
    a temporary folder and point ``SEGQA_NATIVE_LIB`` at it, so that `load` finds it (~8 s on the 2-core dev
    machine) when a C++ compiler is there. Returns why it did not build, or None when the library is there
    (already, or now). Call it before anything asks `load`: the answer is kept for the process."""
    if _turned_off() or library_path().is_file():
        return None
    folder = Path(tempfile.mkdtemp(prefix="segqa-native-"))
    try:
        target = build(folder / LIBRARY_NAME)
    except RuntimeError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return (str(exc).strip().splitlines() or ["build failed"])[0]
    os.environ["SEGQA_NATIVE_LIB"] = str(target)
    return None


@lru_cache(maxsize=None)
def _load() -> tuple[bool, str]:
    if _turned_off():
        return False, "turned off (SEGQA_NATIVE=0)"
    path = library_path()
    if not path.is_file():
        return False, f"not built ({path} missing; 'make' or 'python -m training.native' builds it)"
    import mxnet as mx

    try:
        mx.library.load(str(path.resolve()), verbose=False)
    except Exception as exc:  # MXNetError with a C++ trace: keep its first line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.warning("native kernels not loaded from %s: %s", path, first)
        return False, f"{path} did not load: {first}"
    missing = [op for op in OPERATORS if not hasattr(mx.nd, op)]
    if missing:
        return False, f"{path} has no {', '.join(missing)} (built from an older source; 'make' rebuilds it)"
    return True, str(path)


def load() -> bool:
    """Register the native operators with MXNet (once per process); True when they are available."""
    return _load()[0]


def status() -> str:
    """One line for the training log and the benchmarks: the library loaded, or why not."""
    ok, detail = _load()
    return f"native ({detail})" if ok else f"pure MXNet: native kernels {detail}"
