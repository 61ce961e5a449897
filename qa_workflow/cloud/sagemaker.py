"""Train U-Net / ENet on SageMaker from the operator's machine, with the SageMaker Python SDK v3 ``ModelTrainer``.

SDK v3 has no MXNet estimator (ARCHITECTURE §11), so a job is a ``sagemaker.train.ModelTrainer`` with:

- ``training_image``: an MXNet 1.9 training image (default: the AWS Deep Learning Container for the region and
  instance type, ``mxnet-training:1.9.0-{cpu,gpu}-py38``, looked up offline by ``sagemaker.core.image_uris``);
- ``source_code``: a *source bundle* built here: ``training/`` + ``qa_workflow/__init__.py`` +
  ``qa_workflow/contract.py`` (+ ``storage.py``, which training uses for atomic writes) + an entry script
  `ENTRY_SCRIPT` that runs ``training/train.py``. The SDK's
  drivers call it as ``python segqa_sagemaker_entry.py --key value ...`` with the SageMaker environment
  (``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``, ``SM_MODEL_DIR``, ``SM_HOSTS``);
- input channels ``train`` (a segqa dataset folder; its split ``train``) and optionally ``validation``;
- hyperparameters: ``network`` plus whatever the user sets; with several hosts ``kvstore=dist_sync``, and the
  entry script starts MXNet's parameter servers (scheduler on the first host, one server per host) because
  ModelTrainer bypasses the MXNet container's own launcher.

The same bundle, as a reproducible ``sourcedir.tar.gz``, is what `segqa deploy` uploads for the scheduled
retraining Lambda (which starts jobs through the MXNet container's script mode: ``sagemaker_program`` =
`ENTRY_SCRIPT`, ``sagemaker_submit_directory`` = the tarball).

`build_model_trainer` makes the ModelTrainer without calling AWS (given a role ARN, it skips the SDK's IAM
role check when ``validate_role=False``); `trainer_summary` is the dry run's view of it; `start_training` calls
``ModelTrainer.train``.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import hashlib
import io
import logging
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa_workflow import storage
from qa_workflow.contract import (
    MXNET_PY_VERSION,
    MXNET_VERSION,
    NETWORKS,
    TRAINING_ENTRY_SCRIPT,
    TRAINING_JOB_NAME_RE,
    TRAINING_METRIC_DEFINITIONS,
    SegqaError,
)

__all__ = [
    "ENTRY_SCRIPT", "NETWORKS", "MXNET_VERSION", "MXNET_PY_VERSION", "METRIC_DEFINITIONS", "TrainingLaunch",
    "bundle_sources", "build_source_dir", "build_source_tarball", "default_training_image", "hyperparameters",
    "build_model_trainer", "trainer_summary", "start_training", "py38_incompatibilities", "parse_hyperparameters",
    "is_gpu_instance",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
#: The script SageMaker runs, the MXNet container and the metric definitions: the retrain-trigger Lambda starts
#: the same jobs, so both take them from the contract.
ENTRY_SCRIPT = TRAINING_ENTRY_SCRIPT
METRIC_DEFINITIONS = TRAINING_METRIC_DEFINITIONS
#: Shared modules the training code imports: the contract (ARCHITECTURE §2), and the storage layer for its
#: atomic writes (standard library; boto3 only for s3:// URIs). tests/test_cloud_launch.py checks that the
#: import closure of training/train.py stays inside the bundle.
CONTRACT_FILES = ("qa_workflow/__init__.py", "qa_workflow/contract.py", "qa_workflow/storage.py")
#: Requirements the MXNet image already satisfies with its own (GPU) build; pip must not replace them.
IMAGE_PROVIDED = ("mxnet", "numpy")
_TAR_EPOCH = 0

ENTRY_SOURCE = '''\
"""SageMaker entry point of a segqa training job (written by qa_workflow/cloud/sagemaker.py; do not edit).

Runs training/train.py with the job's hyperparameters (``--key value``). With several hosts, and no MXNet
parameter server started by the container (the SDK v3 ModelTrainer bypasses the MXNet container's launcher),
it first starts the parameter-server processes the way the SageMaker MXNet container does: a scheduler on the
first host and one server per host, all pointing at the first host; this process then runs as a worker, so
the dist_sync kvstore in training/train.py can connect.
"""
import json
import os
import socket
import subprocess
import sys
import time

PS_ROOT_PORT = "8000"


def parameter_server_env(role, hosts, root_uri, port=PS_ROOT_PORT):
    """The DMLC variables of one parameter-server process (role: scheduler, server or worker)."""
    return {"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": root_uri, "DMLC_PS_ROOT_PORT": str(port),
            "DMLC_NUM_SERVER": str(len(hosts)), "DMLC_NUM_WORKER": str(len(hosts))}


def roles_on_host(hosts, current_host):
    """Background roles this host starts: the first host also runs the scheduler."""
    return (["scheduler"] if current_host == hosts[0] else []) + ["server"]


def _lookup(host, attempts=30):
    for i in range(attempts):
        try:
            return socket.gethostbyname(host)
        except socket.gaierror:
            time.sleep(min(10, 1 + i))
    raise RuntimeError("cannot resolve training host %r" % host)


def start_parameter_servers(hosts, current_host):
    root = _lookup(hosts[0])
    procs = []
    for role in roles_on_host(hosts, current_host):
        env = dict(os.environ)
        env.update(parameter_server_env(role, hosts, root))
        procs.append(subprocess.Popen([sys.executable, "-c", "import mxnet"], env=env))
    os.environ.update(parameter_server_env("worker", hosts, root))
    return procs


def main(argv):
    hosts = json.loads(os.environ.get("SM_HOSTS") or "[]")
    if len(hosts) > 1 and "DMLC_ROLE" not in os.environ:
        start_parameter_servers(hosts, os.environ.get("SM_CURRENT_HOST", hosts[0]))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from training.train import main as train_main

    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


# --------------------------------------------------------------------------------------------------------
# The source bundle


def _requirements_for_image(text: str) -> str:
    """training/requirements.txt without the packages the MXNet image provides (see `IMAGE_PROVIDED`)."""
    keep = []
    for line in text.splitlines():
        name = re.split(r"[<>=!~\[;\s]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
        if line.strip() and not line.lstrip().startswith("#") and name in IMAGE_PROVIDED:
            continue
        keep.append(line)
    return "\n".join(keep).strip() + "\n"


def bundle_sources(root: Path = ROOT) -> dict[str, bytes]:
    """The source bundle as ``{relative path: bytes}``: training/ (Python files, requirements.txt, and the native
    operators' C++ source, which train.py builds in the container when it has a compiler), the
    contract files, the entry script, and a root ``requirements.txt`` (from training/requirements.txt, minus
    the packages the image provides) when training has one."""
    root = Path(root)
    training = root / "training"
    if not (training / "train.py").is_file():
        raise SegqaError(f"{training / 'train.py'}: the training entry point is missing; run from a segqa checkout")
    files: dict[str, bytes] = {}
    for path in sorted(training.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".txt", ".json", ".cc"):
            files[rel] = path.read_bytes()
    for rel in CONTRACT_FILES:
        src = root / rel
        if not src.is_file():
            raise SegqaError(f"{src}: shared contract module missing")
        files[rel] = src.read_bytes()
    files[ENTRY_SCRIPT] = ENTRY_SOURCE.encode("utf-8")
    req = training / "requirements.txt"
    if req.is_file():
        files["requirements.txt"] = _requirements_for_image(req.read_text(encoding="utf-8")).encode("utf-8")
    return dict(sorted(files.items()))


def build_source_dir(dest: str | os.PathLike[str], root: Path = ROOT) -> Path:
    """Write the source bundle into the (new or empty) folder ``dest``; returns its path."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise SegqaError(f"{dest}: folder is not empty; the source bundle needs an empty folder")
    for rel, data in bundle_sources(root).items():
        storage.atomic_write_bytes(dest / rel, data)
    return dest


def source_tarball_bytes(root: Path = ROOT) -> bytes:
    """The source bundle as a reproducible ``sourcedir.tar.gz`` (sorted entries, fixed times and owners):
    unchanged sources give identical bytes, so its hash can name the S3 object."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, data in bundle_sources(root).items():
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = len(data), _TAR_EPOCH, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=_TAR_EPOCH, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def build_source_tarball(path: str | os.PathLike[str], root: Path = ROOT) -> str:
    """Write ``sourcedir.tar.gz`` atomically at ``path``; returns its SHA-256 (hex)."""
    data = source_tarball_bytes(root)
    storage.atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


#: Run-time features newer than Python 3.8 that parse under 3.8 and fail only when run: keyword arguments of
#: builtins, names imported from the standard library, and methods (by name: a method of that name on one of
#: our own objects is flagged too, and renamed).
_NEWER_KEYWORDS = {("zip", "strict"): "3.10", ("dataclass", "slots"): "3.10", ("dataclass", "kw_only"): "3.10"}
_NEWER_IMPORTS = {("functools", "cache"): "3.9", ("datetime", "UTC"): "3.11", ("math", "lcm"): "3.9",
                  ("typing", "TypeAlias"): "3.10", ("typing", "ParamSpec"): "3.10", ("itertools", "pairwise"): "3.10"}
_NEWER_METHODS = {"removeprefix": "3.9", "removesuffix": "3.9", "is_relative_to": "3.9", "with_stem": "3.9",
                  "bit_count": "3.10"}
#: Builtins that are subscriptable only from 3.9 (``list[int]``) where it is evaluated.
_GENERIC_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def _annotation_nodes(tree: ast.Module) -> set[int]:
    """ids of every node inside an annotation, where ``from __future__ import annotations`` keeps annotations
    from being evaluated; none in a module without it (3.8 evaluates them there)."""
    lazy = any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
               and any(alias.name == "annotations" for alias in node.names) for node in tree.body)
    if not lazy:
        return set()
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(n) for root in roots for n in ast.walk(root)}


def _newer_at_run_time(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    in_annotation = _annotation_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            for kw in node.keywords:
                version = _NEWER_KEYWORDS.get((node.func.id, kw.arg or ""))
                if version:
                    found.append((node.lineno, f"{node.func.id}({kw.arg}=...) needs Python {version}"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                version = _NEWER_IMPORTS.get((node.module, alias.name))
                if version:
                    found.append((node.lineno, f"{node.module}.{alias.name} needs Python {version}"))
        elif isinstance(node, ast.Attribute):
            version = _NEWER_METHODS.get(node.attr)
            if version:
                found.append((node.lineno, f".{node.attr}() needs Python {version}"))
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
              and node.value.id in _GENERIC_BUILTINS and id(node) not in in_annotation):
            found.append((node.lineno, f"{node.value.id}[...] evaluated at run time needs Python 3.9"))
    return found


def py38_incompatibilities(files: Mapping[str, bytes]) -> list[str]:
    """Python files of a bundle that would not run on Python 3.8 (the AWS MXNet 1.9 images run 3.8).

    Syntax (``match``, parenthesised context managers, ...) by parsing as 3.8, and the run-time features of
    `_NEWER_KEYWORDS`, `_NEWER_IMPORTS`, `_NEWER_METHODS` and builtin generics evaluated at run time, which parse
    but fail when run. Returns ``"<path>:<line>: <message>"`` strings, empty when none is found.
    """
    problems = []
    for rel, data in files.items():
        if not rel.endswith(".py"):
            continue
        try:
            tree = ast.parse(data.decode("utf-8"), filename=rel, feature_version=(3, 8))
        except SyntaxError as exc:
            problems.append(f"{rel}:{exc.lineno}: {exc.msg}")
            continue
        problems.extend(f"{rel}:{line}: {message}" for line, message in _newer_at_run_time(tree))
    return problems


# --------------------------------------------------------------------------------------------------------
# One training launch


def is_gpu_instance(instance_type: str) -> bool:
    """``ml.g4dn.xlarge`` / ``ml.p3.2xlarge`` -> True; ``ml.m5.xlarge`` -> False."""
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""
    return family[:1] in ("g", "p")


def default_training_image(region: str, instance_type: str) -> str:
    """The AWS MXNet 1.9 training image for the region and instance type (offline lookup in the SDK's tables)."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve("mxnet", region=region, version=MXNET_VERSION, py_version=MXNET_PY_VERSION,
                                   instance_type=instance_type, image_scope="training")
    except ValueError as exc:
        raise SegqaError(f"no MXNet {MXNET_VERSION} training image for region {region} / {instance_type} "
                         f"({exc}); pass --image") from None


def parse_hyperparameters(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["epochs=40", "batch-size=16"]`` -> ``{"epochs": "40", "batch-size": "16"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
            raise SegqaError(f"hyperparameter {pair!r}: expected key=value, e.g. epochs=40")
        out[key] = value.strip()
    return out



def require_role_arn(field: str, value: str | None, hint: str) -> None:
    """A SegqaError naming ``field`` unless ``value`` is an IAM role ARN; ``hint`` says where to find one."""
    if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", value or ""):
        raise SegqaError(f"{field}: expected an IAM role ARN (arn:aws:iam::<account>:role/<name>), got "
                         f"{value!r}; {hint}")


def require_instance_type(field: str, value: str, example: str) -> None:
    """A SegqaError naming ``field`` unless ``value`` is a SageMaker instance type (``ml.<family>.<size>``)."""
    if not re.fullmatch(r"ml\.[a-z0-9]+\.[a-z0-9]+", value):
        raise SegqaError(f"{field}: expected e.g. {example}, got {value!r}")

@dataclass(frozen=True)
class TrainingLaunch:
    """Everything one SageMaker training job of one network needs (no AWS calls here)."""

    network: str
    train_uri: str
    output_uri: str
    role_arn: str
    image_uri: str
    validation_uri: str | None = None
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    volume_gb: int = 30
    max_runtime_s: int = 4 * 3600
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    base_job_name: str | None = None
    spot: bool = False
    checkpoint_uri: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> TrainingLaunch:
        if self.network not in NETWORKS:
            raise SegqaError(f"network must be one of {', '.join(NETWORKS)}, got {self.network!r}")
        for name in ("train_uri", "output_uri") + (("validation_uri",) if self.validation_uri else ()) \
                + (("checkpoint_uri",) if self.checkpoint_uri else ()):
            storage.require_s3(name.replace("_uri", ""), getattr(self, name))
        require_role_arn("role", self.role_arn, "`segqa deploy` prints the stack's TrainingRoleArn")
        if not self.image_uri:
            raise SegqaError("image: a training image URI is required")
        require_instance_type("instance type", self.instance_type, "ml.g4dn.xlarge")
        if not 1 <= int(self.instance_count) <= 64:
            raise SegqaError(f"instance count must be 1..64, got {self.instance_count}")
        if not 600 <= int(self.max_runtime_s) <= 28 * 24 * 3600:
            raise SegqaError(f"max runtime must be 600 s .. 28 days, got {self.max_runtime_s}")
        name = self.job_base_name
        if not TRAINING_JOB_NAME_RE.match(name) or len(name) > 48:
            raise SegqaError(f"job name {name!r}: up to 48 letters, digits and '-' (SageMaker adds a timestamp)")
        return self

    @property
    def job_base_name(self) -> str:
        return self.base_job_name or f"segqa-{self.network}"


#: Where SageMaker syncs a job's checkpoint_s3_uri inside the container (its default, stated explicitly).
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"


def hyperparameters(launch: TrainingLaunch) -> dict[str, str]:
    """The job's hyperparameters (strings, as SageMaker passes them): ``network``, the user's,
    ``kvstore=dist_sync`` when several hosts train (unless the user chose a kvstore), and with a checkpoint URI
    ``checkpoint-dir`` (the entry point trains there and resumes from it: SDK v3's driver sets no
    SM_CHECKPOINT_DIR, so without it a restarted spot job started over)."""
    hp = {str(k): str(v) for k, v in launch.hyperparameters.items()}
    if launch.checkpoint_uri:
        hp.setdefault("checkpoint-dir", CHECKPOINT_LOCAL_PATH)
    if "network" in hp and hp["network"] != launch.network:
        raise SegqaError(f"hyperparameter network={hp['network']} contradicts the launch's network {launch.network}")
    hp["network"] = launch.network
    if launch.instance_count > 1:
        hp.setdefault("kvstore", "dist_sync")
    return dict(sorted(hp.items()))


@contextlib.contextmanager
def _sdk_role_validation(enabled: bool) -> Iterator[None]:
    """The SDK checks the role with iam:SimulatePrincipalPolicy unless SAGEMAKER_VALIDATE_ROLE=false."""
    if enabled:
        yield
        return
    old = os.environ.get("SAGEMAKER_VALIDATE_ROLE")
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SAGEMAKER_VALIDATE_ROLE", None)
        else:
            os.environ["SAGEMAKER_VALIDATE_ROLE"] = old


def build_model_trainer(launch: TrainingLaunch, source_dir: str | os.PathLike[str], *, region: str,
                        boto_session: Any = None, validate_role: bool = True) -> Any:
    """A ``sagemaker.train.ModelTrainer`` for ``launch`` with ``source_dir`` (from `build_source_dir`).

    Nothing is uploaded or started. The SDK stages the code under ``<output bucket>/sagemaker-inputs/`` when
    the job starts. ``validate_role=False`` skips the SDK's IAM check (dry runs, tests).
    """
    import boto3
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        InputData,
        MetricDefinition,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
        Tag,
    )
    from sagemaker.train import ModelTrainer

    launch.validate()
    source_dir = Path(source_dir)
    if not (source_dir / ENTRY_SCRIPT).is_file():
        raise SegqaError(f"{source_dir}: not a segqa source bundle (no {ENTRY_SCRIPT}); build it with build_source_dir")
    bucket, _ = storage.split_s3(launch.output_uri)
    boto_session = boto_session or boto3.Session(region_name=region)
    session = Session(boto_session=boto_session, default_bucket=bucket, default_bucket_prefix="sagemaker-inputs")
    channels = [InputData(channel_name="train", data_source=launch.train_uri)]
    if launch.validation_uri:
        channels.append(InputData(channel_name="validation", data_source=launch.validation_uri))
    stopping = StoppingCondition(max_runtime_in_seconds=int(launch.max_runtime_s),
                                 max_wait_time_in_seconds=int(launch.max_runtime_s) * 2 if launch.spot else None)
    source = SourceCode(source_dir=str(source_dir), entry_script=ENTRY_SCRIPT,
                        requirements="requirements.txt" if (source_dir / "requirements.txt").is_file() else None)
    with _sdk_role_validation(validate_role):
        trainer = ModelTrainer(
            training_image=launch.image_uri,
            source_code=source,
            compute=Compute(instance_type=launch.instance_type, instance_count=int(launch.instance_count),
                            volume_size_in_gb=int(launch.volume_gb), enable_managed_spot_training=launch.spot or None),
            stopping_condition=stopping,
            hyperparameters=hyperparameters(launch),
            input_data_config=channels,
            output_data_config=OutputDataConfig(s3_output_path=launch.output_uri.rstrip("/"), compression_type="GZIP"),
            checkpoint_config=(CheckpointConfig(s3_uri=launch.checkpoint_uri, local_path=CHECKPOINT_LOCAL_PATH)
                               if launch.checkpoint_uri else None),
            role=launch.role_arn,
            base_job_name=launch.job_base_name,
            sagemaker_session=session,
            tags=[Tag(key=k, value=v) for k, v in sorted({"project": "segqa", "network": launch.network,
                                                          **launch.tags}.items())],
        )
    trainer.with_metric_definitions([MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS])
    return trainer


def trainer_summary(trainer: Any) -> dict[str, Any]:
    """What a ModelTrainer will ask SageMaker for, as plain JSON-able data (the dry run prints it)."""
    source_dir = Path(trainer.source_code.source_dir)
    files = sorted(p.relative_to(source_dir).as_posix() for p in source_dir.rglob("*") if p.is_file())
    stopping = trainer.stopping_condition
    return {
        "base_job_name": trainer.base_job_name,
        "training_image": trainer.training_image,
        "role_arn": trainer.role,
        "compute": {"instance_type": trainer.compute.instance_type, "instance_count": trainer.compute.instance_count,
                    "volume_size_in_gb": trainer.compute.volume_size_in_gb,
                    "managed_spot": bool(trainer.compute.enable_managed_spot_training)},
        "max_runtime_s": stopping.max_runtime_in_seconds,
        "channels": {c.channel_name: c.data_source for c in trainer.input_data_config or []},
        "hyperparameters": dict(trainer.hyperparameters or {}),
        "output_path": trainer.output_data_config.s3_output_path,
        "checkpoint_uri": trainer.checkpoint_config.s3_uri if trainer.checkpoint_config else None,
        "entry_command": f"python {trainer.source_code.entry_script} "
                         + " ".join(f"--{k} {v}" for k, v in (trainer.hyperparameters or {}).items()),
        "source_files": files,
        "requirements": trainer.source_code.requirements,
        "tags": {t.key: t.value for t in trainer.tags or []},
    }


def start_training(trainer: Any, wait: bool = False) -> str:
    """Start the job (uploads the bundle, calls CreateTrainingJob); returns the training job name."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    try:
        trainer.train(wait=wait, logs=wait)
    except (NoCredentialsError, NoRegionError) as exc:
        raise SegqaError(f"AWS is not configured: {exc}") from None
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise SegqaError(f"SageMaker refused the training job: {err.get('Code')}: {err.get('Message')}") from None
    job = trainer._latest_training_job  # the SDK keeps the created job here (no public accessor in 3.x)
    return str(job.training_job_name) if job is not None else trainer.base_job_name


def bundle_dir_for(tmp: str | os.PathLike[str], root: Path = ROOT) -> Path:
    """Build the source bundle in ``tmp/source`` (a fresh folder) and return it."""
    dest = Path(tmp) / "source"
    if dest.exists():
        shutil.rmtree(dest)
    return build_source_dir(dest, root)


@dataclass(frozen=True)
class RemoteTraining:
    """What `segqa train-remote` asks for; S3 locations and the role may come from a deployed stack's outputs."""

    networks: tuple[str, ...]
    train_uri: str | None = None
    validation_uri: str | None = None
    output_uri: str | None = None
    role_arn: str | None = None
    image_uri: str | None = None
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    volume_gb: int = 30
    max_runtime_s: int = 4 * 3600
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    spot: bool = False
    checkpoint_uri: str | None = None


def plan_launches(request: RemoteTraining, region: str, stack_outputs: Mapping[str, str] | None = None
                  ) -> list[TrainingLaunch]:
    """One validated launch per network. Explicit locations win over the stack's (``TrainingRoleArn``,
    ``DataUri``: train and validation under ``<DataUri>/retrain/dataset/``, models under ``<DataUri>/models/``)."""
    bad = [n for n in request.networks if n not in NETWORKS]
    if bad or not request.networks:
        raise SegqaError(f"--network must be unet, enet or both, got {','.join(request.networks)!r}")
    outputs = stack_outputs or {}
    role = request.role_arn or outputs.get("TrainingRoleArn")
    data_uri = outputs.get("DataUri")
    if not role:
        raise SegqaError("no training role: pass --role ARN or --stack NAME")
    if not request.train_uri and not data_uri:
        raise SegqaError("no training data: pass --train s3://... or --stack NAME")
    train = request.train_uri or f"{data_uri}/retrain/dataset/train/"
    validation = request.validation_uri or (f"{data_uri}/retrain/dataset/validation/" if data_uri else None)
    if not request.output_uri and not data_uri:
        raise SegqaError("no output location: pass --output s3://... or --stack NAME")
    image = request.image_uri or default_training_image(region, request.instance_type)
    return [TrainingLaunch(
        network=n, train_uri=train, validation_uri=validation,
        output_uri=(request.output_uri.rstrip("/") + f"/{n}/") if request.output_uri else f"{data_uri}/models/{n}/",
        role_arn=role, image_uri=image, instance_type=request.instance_type, instance_count=request.instance_count,
        volume_gb=request.volume_gb, max_runtime_s=request.max_runtime_s,
        hyperparameters=dict(request.hyperparameters), spot=request.spot,
        checkpoint_uri=(request.checkpoint_uri.rstrip("/") + f"/{n}/") if request.checkpoint_uri else None).validate()
        for n in request.networks]


@dataclass(frozen=True)
class RemoteTrainingResult:
    summaries: list[dict[str, Any]]  # one trainer summary per network (what a dry run shows)
    jobs: list[tuple[str, str]]  # (network, training job name) of the jobs started; empty on a dry run


def train_remote(request: RemoteTraining, boto_session: Any, stack_outputs: Mapping[str, str] | None = None,
                 dry_run: bool = False, wait: bool = False,
                 warn: Callable[[str], None] | None = None) -> RemoteTrainingResult:
    """Plan the launches, bundle the training code once, build a ModelTrainer per network and, unless
    `dry_run`, start each job (waiting for it and streaming its logs with `wait`). `warn` hears, before anything
    starts, each bundled line that the MXNet 1.9 image's Python 3.8 cannot parse."""
    import tempfile

    region = boto_session.region_name
    launches = plan_launches(request, region, stack_outputs)
    with tempfile.TemporaryDirectory(prefix="segqa-sm-") as tmp:
        source = bundle_dir_for(tmp)
        for problem in py38_incompatibilities({p.relative_to(source).as_posix(): p.read_bytes()
                                               for p in source.rglob("*.py")}):
            if warn is not None:
                warn(problem)
        trainers = [build_model_trainer(launch, source, region=region, boto_session=boto_session,
                                        validate_role=not dry_run) for launch in launches]
        summaries = [trainer_summary(t) for t in trainers]
        if dry_run:
            return RemoteTrainingResult(summaries, [])
        jobs = [(launch.network, start_training(trainer, wait=wait))
                for launch, trainer in zip(launches, trainers, strict=True)]
    return RemoteTrainingResult(summaries, jobs)
