"""Read and write bytes and JSON at ``s3://bucket/key``, ``file:///path`` and plain local paths.

One small layer used by the CLI, the portal and (copied into their zips) the Lambdas. Standard library plus
boto3, imported only when an ``s3://`` URI is touched.

Local writes are atomic: the data goes to a temporary file in the same folder, is flushed and fsync'ed, then
renamed over the target, so a crash leaves either the old file or the new one, never half of one.
S3 PUTs are atomic by nature. Every file the project writes locally goes through one of the helpers here:
`atomic_write_bytes` / `atomic_write_text` for data in memory, `atomic_write_with` for libraries that want a
file name to write to (MXNet parameters, matplotlib figures), `atomic_create_bytes` for a file made once and
never replaced, and `atomic_folder` (or `staging_folder` + `swap_folder`) for a folder built as a whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from qa_workflow.contract import SegqaError

__all__ = [
    "is_s3", "split_s3", "local_path", "read_bytes", "write_bytes", "read_text", "write_text", "read_json",
    "write_json", "read_schema_json", "exists", "any_under", "join", "list_uris", "atomic_write_bytes",
    "atomic_write_text", "atomic_write_with", "atomic_create_bytes", "staging_folder", "swap_folder", "atomic_folder",
    "set_s3_client",
]

_s3_client = None


def set_s3_client(client: Any) -> None:
    """Use this boto3 S3 client for every s3:// call (tests, custom endpoints); None resets to the default."""
    global _s3_client
    _s3_client = client


def _s3():
    global _s3_client
    if _s3_client is None:
        import boto3  # lazy: local-only use never needs AWS

        _s3_client = boto3.client("s3")
    return _s3_client


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b.json`` -> ``("bucket", "a/b.json")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SegqaError(f"invalid S3 URI {uri!r}: expected s3://bucket/key")
    return parsed.netloc, parsed.path.lstrip("/")



def require_s3(field: str, uri: str, service: str = "SageMaker", expected: str = "s3://bucket/prefix") -> str:
    """``uri`` itself when it is a well-formed S3 URI; otherwise a SegqaError naming ``field`` and saying that
    ``service`` reads and writes S3 only (``expected`` shows the form)."""
    if not is_s3(uri):
        raise SegqaError(f"{field}: {service} reads and writes S3; expected {expected}, got {uri!r}")
    split_s3(uri)
    return uri

def local_path(uri: str | os.PathLike[str]) -> Path:
    """The local path for a plain path or a ``file://`` URI; raises for other schemes."""
    s = os.fspath(uri)
    if s.startswith("file://"):
        parsed = urlparse(s)
        if parsed.netloc not in ("", "localhost"):
            raise SegqaError(f"invalid file URI {s!r}: only local files (file:///path) are supported")
        return Path(unquote(parsed.path))
    if "://" in s:
        raise SegqaError(f"unsupported URI scheme in {s!r}: expected s3://, file:// or a local path")
    return Path(s)


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a base URI or path, keeping its scheme."""
    b = os.fspath(base)
    if is_s3(b) or b.startswith("file://"):
        return "/".join([b.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(b, *parts))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink_quietly(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _temp_file_beside(path: Path, suffix: str) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder (created if missing), with the mode a plain open() gives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename (creates parent folders)."""
    path = Path(path)
    fd, tmp = _temp_file_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """`atomic_write_bytes` of ``text`` encoded (no newline translation: ``\r\n`` stays ``\r\n``)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """For a library that writes to a file name itself: ``write(tmp)`` writes a temporary file beside ``path``
    (same suffix, so a format chosen by extension stays right), which is then fsync'ed and renamed over
    ``path``. If ``write`` raises, ``path`` is untouched and the temporary file is removed."""
    path = Path(path)
    fd, tmp = _temp_file_beside(path, f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_create_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o666) -> bool:
    """Create ``path`` with ``data`` (and ``mode``, less the umask) unless it exists; never replaces a file.

    The data is written and fsync'ed under a temporary name and hard-linked to ``path``, which fails if another
    process created it meanwhile: then theirs is kept. Returns True when this call created the file."""
    path = Path(path)
    fd, tmp = _temp_file_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        _unlink_quietly(tmp)


def staging_folder(target: str | os.PathLike[str]) -> Path:
    """A new, empty, hidden folder beside ``target`` to build its replacement in (give it to `swap_folder`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should read like any folder
    return staging


def swap_folder(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the finished ``staging`` folder into place as ``target``, replacing a folder already there.

    Each step is a rename: the old folder moves aside, the new one in, then the old one is deleted. If the
    second rename fails the old folder is moved back, so ``target`` is the old folder or the new one."""
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_folder(out) as tmp:`` build the folder's content in ``tmp``; on leaving the block it replaces
    ``out`` whole (`swap_folder`), and on an exception it is deleted and ``out`` stays as it was."""
    staging = staging_folder(target)
    try:
        yield staging
        swap_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    s = os.fspath(uri)
    if is_s3(s):
        bucket, key = split_s3(s)
        client = _s3()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise SegqaError(f"{s}: no such object") from None
    path = local_path(s)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SegqaError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SegqaError(f"{path}: is a folder, expected a file") from None


def write_bytes(uri: str | os.PathLike[str], data: bytes, content_type: str | None = None) -> str:
    """Write bytes; returns the URI written."""
    s = os.fspath(uri)
    if is_s3(s):
        bucket, key = split_s3(s)
        extra = {"ContentType": content_type} if content_type else {}
        _s3().put_object(Bucket=bucket, Key=key, Body=data, **extra)
        return s
    atomic_write_bytes(local_path(s), data)
    return s


def create_once(uri: str | os.PathLike[str], data: bytes, content_type: str | None = None) -> bool:
    """Create the object unless it exists (S3: a conditional put, ``If-None-Match: *``); never replaces one.
    Returns True when this call created it - a lock two processes cannot both take."""
    s = os.fspath(uri)
    if is_s3(s):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(s)
        extra = {"ContentType": content_type} if content_type else {}
        try:
            _s3().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*", **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True
    path = local_path(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_create_bytes(path, data)


def read_text(uri: str | os.PathLike[str]) -> str:
    data = read_bytes(uri)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SegqaError(f"{os.fspath(uri)}: not UTF-8 text") from None


def write_text(uri: str | os.PathLike[str], text: str, content_type: str = "text/plain; charset=utf-8") -> str:
    return write_bytes(uri, text.encode("utf-8"), content_type)


def read_json(uri: str | os.PathLike[str]) -> Any:
    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SegqaError(f"{os.fspath(uri)}: not valid JSON "
                         f"({exc.msg}, line {exc.lineno} column {exc.colno})") from None


def write_json(uri: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> str:
    text = json.dumps(obj, indent=indent, sort_keys=False, ensure_ascii=False)
    return write_bytes(uri, (text + "\n").encode("utf-8"), "application/json")


def read_schema_json(uri: str | os.PathLike[str], schema: str, missing: str) -> dict[str, Any]:
    """A JSON object whose ``schema`` field must equal ``schema``; ``missing`` is the error when it is absent."""
    if not exists(uri):
        raise SegqaError(missing)
    obj = read_json(uri)
    got = obj.get("schema") if isinstance(obj, dict) else None
    if got != schema:
        raise SegqaError(f"{os.fspath(uri)}: schema {got!r} is not {schema!r}")
    return obj


def exists(uri: str | os.PathLike[str]) -> bool:
    s = os.fspath(uri)
    if is_s3(s):
        bucket, key = split_s3(s)
        client = _s3()
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
    return local_path(s).exists()


def any_under(prefix: str | os.PathLike[str]) -> bool:
    """Whether a prefix or folder holds at least one object / file (one request on S3)."""
    s = os.fspath(prefix)
    if is_s3(s):
        bucket, key = split_s3(s)
        return bool(_s3().list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1).get("KeyCount"))
    root = local_path(s)
    return root.is_dir() and any(p.is_file() for p in root.rglob("*"))


def list_uris(prefix: str | os.PathLike[str]) -> Iterator[str]:
    """Every object / file under a prefix or folder, as URIs of the same kind, sorted."""
    s = os.fspath(prefix)
    if is_s3(s):
        bucket, key = split_s3(s)
        paginator = _s3().get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        for k in sorted(keys):
            yield f"s3://{bucket}/{k}"
        return
    root = local_path(s)
    if not root.exists():
        return
    for p in sorted(root.rglob("*")):
        if p.is_file():
            yield str(p)
