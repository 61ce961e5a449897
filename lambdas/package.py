"""Build one deployment zip per Lambda function: ``python -m lambdas.package --out build/lambdas``.

Each ``lambdas/<function>/handler.py`` becomes ``<out>/<function>.zip`` holding ``handler.py`` at the root
(handler setting ``handler.lambda_handler``) and copies of the shared modules the functions may import
(`SHARED_MODULES`): the contract, the storage layer and the ``confirmations`` package (store interface and
engines, consolidation, export, the retrain trigger's logic). Nothing else: the
functions run on the Python standard library + the boto3 of the Lambda runtime.

Zips are reproducible (fixed timestamps and permissions, sorted entries), so an unchanged function gives a
byte-identical zip, and written atomically. After writing, each zip is imported in a fresh interpreter that
sees only the standard library, boto3 (with its dependencies, as the Lambda runtime provides it) and the zip
(``python -I -S``), which catches a handler that imports anything the zip does not carry. The check runs
with ``--python`` (default: ``python3.12`` when installed, else this interpreter) and says which version it
used, so a check on another version than the Lambda runtime (`LAMBDA_RUNTIME`) is never mistaken for one on it.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from qa_workflow.contract import SegqaError
from qa_workflow.storage import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
#: The Lambda runtime of every function (cloudformation/template.yaml; tests/cloud compares the two).
LAMBDA_RUNTIME = "python3.12"
LAMBDAS_DIR = ROOT / "lambdas"
#: The only code the zips carry besides the handler (ARCHITECTURE §2): the contract, the storage layer and the
#: whole `confirmations` package.
SHARED_MODULES = ("qa_workflow/__init__.py", "qa_workflow/contract.py", "qa_workflow/storage.py",
                  "qa_workflow/confirmations")
_EPOCH = (1980, 1, 1, 0, 0, 0)
#: What the Lambda Python runtime provides besides the standard library.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def functions(lambdas_dir: Path = LAMBDAS_DIR) -> list[str]:
    """Names of the function folders that have a ``handler.py``, sorted."""
    return sorted(p.parent.name for p in lambdas_dir.glob("*/handler.py"))


def build_zip(function: str, root: Path = ROOT) -> bytes:
    """The zip of one function, as bytes (deterministic)."""
    handler = root / "lambdas" / function / "handler.py"
    if not handler.is_file():
        raise SegqaError(f"{handler}: no such handler")
    entries = {"handler.py": handler.read_bytes()}
    for rel in SHARED_MODULES:
        src = root / rel
        if src.is_dir():
            for path in sorted(src.rglob("*.py")):
                entries[path.relative_to(root).as_posix()] = path.read_bytes()
        elif src.is_file():
            entries[rel] = src.read_bytes()
        else:
            raise SegqaError(f"{src}: shared module missing")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entries[name])
    return buf.getvalue()


def runtime_site(folder: Path) -> Path:
    """Fill ``folder`` with links to boto3 and its dependencies only (the Lambda runtime's extras); returns it."""
    import importlib.util

    folder.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SegqaError(f"{name} is not installed; the import check needs boto3 and its dependencies")
        origin = Path(spec.origin)
        src = origin.parent if origin.name == "__init__.py" else origin
        link = folder / src.name
        if not link.exists():
            link.symlink_to(src)
    return folder


def check_import(zip_path: Path, python: str = sys.executable) -> None:
    """Import ``handler`` from the zip in a fresh interpreter that sees only the standard library, boto3 and the
    zip; raise SegqaError naming the missing module otherwise."""
    code = ("import sys; sys.path[:0] = sys.argv[1:3]; import handler; "
            "assert callable(handler.lambda_handler), 'handler.lambda_handler is not callable'")
    with tempfile.TemporaryDirectory(prefix="segqa-runtime-") as tmp:
        site = runtime_site(Path(tmp) / "site")
        proc = subprocess.run([python, "-I", "-S", "-c", code, str(Path(zip_path).resolve()), str(site)],
                              capture_output=True, text=True, timeout=60, cwd=tmp)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SegqaError(f"{zip_path}: handler does not import from the zip alone: {last}")


def default_check_python() -> str:
    """The runtime's interpreter when this machine has a working one, else the one running this (a pyenv shim
    without that version installed is found on PATH but does not run)."""
    found = shutil.which(LAMBDA_RUNTIME)
    if found:
        try:
            if interpreter_runtime(found) == LAMBDA_RUNTIME:
                return found
        except SegqaError:
            pass
    return sys.executable


def interpreter_runtime(python: str) -> str:
    """``python3.12`` for a Python 3.12 interpreter; SegqaError when ``python`` does not run."""
    try:
        proc = subprocess.run([python, "-I", "-S", "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
                              capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise SegqaError(f"--python {python}: cannot run it ({exc.strerror})") from None
    if proc.returncode != 0:
        raise SegqaError(f"--python {python}: exited with {proc.returncode}")
    return "python" + proc.stdout.strip()


def build_all(out: Path, check: bool = True, python: str = sys.executable) -> list[Path]:
    """Write ``<out>/<function>.zip`` for every function; returns the paths."""
    written = []
    for fn in functions():
        path = Path(out) / f"{fn}.zip"
        atomic_write_bytes(path, build_zip(fn))
        if check:
            check_import(path, python)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lambdas.package", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/lambdas", help="output folder (default build/lambdas)")
    parser.add_argument("--no-check", action="store_true", help="skip the clean-interpreter import check")
    parser.add_argument("--python", default=None,
                        help=f"interpreter of the import check (default {LAMBDA_RUNTIME} if installed, else this one)")
    args = parser.parse_args(argv)
    python = args.python or default_check_python()
    try:
        checked = None if args.no_check else interpreter_runtime(python)
        paths = build_all(Path(args.out), check=not args.no_check, python=python)
    except SegqaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"{p}  ({p.stat().st_size:,} bytes)")
    if checked:
        note = "" if checked == LAMBDA_RUNTIME else (f"; note: {checked} differs from the Lambda runtime "
                                                     f"{LAMBDA_RUNTIME}, pass --python /path/to/{LAMBDA_RUNTIME}")
        print(f"import-checked with {checked} ({python}){note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
