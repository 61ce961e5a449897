"""The SageMaker launcher (`qa_workflow.cloud.sagemaker`): bundle, entry script, request, dry run.

The SageMaker launcher (SDK v3 ModelTrainer): the source bundle, its entry script, the ModelTrainer built
offline, the request it sends (moto SageMaker + the service model), and `segqa train-remote --dry-run`."""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from qa_workflow.cli import main
from qa_workflow.cloud import sagemaker as sl
from qa_workflow.contract import SegqaError

pytestmark = pytest.mark.filterwarnings("ignore:sagemaker.train.configs has been moved:DeprecationWarning")

ROLE = "arn:aws:iam::123456789012:role/segqa-dev-TrainingRole-X"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-gpu-py38"


def launch(**over) -> sl.TrainingLaunch:
    base = dict(network="unet", train_uri="s3://d-sagemaker/retrain/dataset/train/",
                validation_uri="s3://d-sagemaker/retrain/dataset/validation/", output_uri="s3://d-sagemaker/models/unet/",
                role_arn=ROLE, image_uri=IMAGE, instance_count=1, hyperparameters={"epochs": 40})
    base.update(over)
    return sl.TrainingLaunch(**base)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return sl.build_source_dir(tmp_path_factory.mktemp("bundle") / "source")


def test_bundle_carries_the_training_code_and_the_contract_only(import_closure):
    files = sl.bundle_sources()
    assert {"training/train.py", "qa_workflow/__init__.py", "qa_workflow/contract.py", sl.ENTRY_SCRIPT} <= set(files)
    assert not any(f.startswith("qa_workflow/") and f not in sl.CONTRACT_FILES for f in files)
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    closure = import_closure(files, "training.train")
    assert {"training.train", "qa_workflow.contract"} <= closure
    # The AWS MXNet 1.9 images run Python 3.8: everything the bundle ships must parse and run there.
    assert sl.py38_incompatibilities(files) == []


def test_py38_check_finds_run_time_features_newer_than_3_8():
    source = (b"from __future__ import annotations\nfrom functools import cache\nfrom datetime import UTC\n"
              b"def f(a: list[int], b) -> dict[str, int]:\n    x: tuple[int, ...] = ()\n"
              b"    pairs = zip(a, b, strict=True)\n    return list[int](b.removeprefix('x'))\n")
    problems = sl.py38_incompatibilities({"training/y.py": source})
    assert problems == ["training/y.py:2: functools.cache needs Python 3.9",
                        "training/y.py:3: datetime.UTC needs Python 3.11",
                        "training/y.py:6: zip(strict=...) needs Python 3.10",
                        "training/y.py:7: list[...] evaluated at run time needs Python 3.9",
                        "training/y.py:7: .removeprefix() needs Python 3.9"]  # annotations are not evaluated
    # without the __future__ import, 3.8 evaluates annotations: there they count too
    eager = sl.py38_incompatibilities({"training/z.py": b"def f(a: list[int]) -> None:\n    pass\n"})
    assert eager == ["training/z.py:1: list[...] evaluated at run time needs Python 3.9"]


def test_py38_check_finds_newer_syntax():
    problems = sl.py38_incompatibilities({"training/x.py": b"match x:\n    case 1:\n        pass\n", "a.txt": b"match"})
    assert len(problems) == 1 and problems[0].startswith("training/x.py:") and "Pattern matching" in problems[0]


def test_tarball_is_reproducible_and_holds_the_bundle(tmp_path):
    a = sl.build_source_tarball(tmp_path / "a.tar.gz")
    b = sl.build_source_tarball(tmp_path / "b.tar.gz")
    assert a == b and (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == list(sl.bundle_sources())
        assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0}
        assert tar.extractfile(sl.ENTRY_SCRIPT).read().decode() == sl.ENTRY_SOURCE


def test_requirements_leave_the_images_mxnet_and_numpy_alone():
    text = "# training deps\nmxnet==1.9.1\nnumpy==1.23.5\nscipy>=1.10\nPillow\nmxnet-cu112 ; sys_platform=='linux'\n"
    kept = sl._requirements_for_image(text)
    assert "scipy>=1.10" in kept and "Pillow" in kept and "# training deps" in kept
    assert "numpy" not in kept and "mxnet==" not in kept
    assert "mxnet-cu112" in kept  # a different distribution: the user's explicit choice stays


def _entry_module(source: Path, monkeypatch):
    spec = importlib.util.spec_from_file_location("segqa_entry_under_test", source / sl.ENTRY_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    fake_train = type(sys)("training.train")
    fake_train.main = lambda argv: calls.append(list(argv)) or 0
    monkeypatch.setitem(sys.modules, "training.train", fake_train)
    return module, calls


def test_entry_script_runs_train_with_the_arguments(source, monkeypatch):
    module, calls = _entry_module(source, monkeypatch)
    monkeypatch.setenv("SM_HOSTS", '["algo-1"]')
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    assert module.main(["--network", "enet", "--epochs", "3"]) == 0
    assert calls == [["--network", "enet", "--epochs", "3"]]
    assert "DMLC_ROLE" not in __import__("os").environ


def test_entry_script_starts_parameter_servers_on_several_hosts(source, monkeypatch):
    module, calls = _entry_module(source, monkeypatch)
    started = []
    monkeypatch.setattr(module.subprocess, "Popen", lambda cmd, env: started.append((cmd, env)))
    monkeypatch.setattr(module.socket, "gethostbyname", lambda host: {"algo-1": "10.0.0.1"}[host])
    monkeypatch.setenv("SM_HOSTS", '["algo-1", "algo-2"]')
    monkeypatch.setenv("SM_CURRENT_HOST", "algo-1")
    for var in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER"):
        monkeypatch.delenv(var, raising=False)
    module.main(["--kvstore", "dist_sync"])
    assert [env["DMLC_ROLE"] for _, env in started] == ["scheduler", "server"]
    assert all(env["DMLC_PS_ROOT_URI"] == "10.0.0.1" and env["DMLC_NUM_WORKER"] == "2" for _, env in started)
    import os

    assert os.environ["DMLC_ROLE"] == "worker" and calls == [["--kvstore", "dist_sync"]]
    assert module.roles_on_host(["algo-1", "algo-2"], "algo-2") == ["server"]


def test_entry_script_leaves_a_container_started_parameter_server_alone(source, monkeypatch):
    module, calls = _entry_module(source, monkeypatch)
    monkeypatch.setattr(module.subprocess, "Popen", lambda *a, **k: pytest.fail("started a second parameter server"))
    monkeypatch.setenv("SM_HOSTS", '["algo-1", "algo-2"]')
    monkeypatch.setenv("DMLC_ROLE", "worker")  # the MXNet container's launcher did it (Lambda path)
    module.main([])
    assert calls == [[]]


def _no_aws(session):
    def refuse(**kwargs):
        raise AssertionError(f"unexpected AWS request: {kwargs.get('request')}")

    session.events.register("before-send", refuse)
    return session


def test_model_trainer_is_built_offline_with_the_launch_settings(source):
    session = _no_aws(boto3.Session(region_name="us-east-1"))
    trainer = sl.build_model_trainer(launch(instance_count=2, instance_type="ml.p3.2xlarge"), source,
                                     region="us-east-1", boto_session=session, validate_role=False)
    summary = sl.trainer_summary(trainer)
    assert summary["training_image"] == IMAGE and summary["role_arn"] == ROLE
    assert summary["compute"] == {"instance_type": "ml.p3.2xlarge", "instance_count": 2, "volume_size_in_gb": 30,
                                  "managed_spot": False}
    assert summary["channels"] == {"train": "s3://d-sagemaker/retrain/dataset/train/",
                                   "validation": "s3://d-sagemaker/retrain/dataset/validation/"}
    assert summary["hyperparameters"] == {"epochs": "40", "kvstore": "dist_sync", "network": "unet"}
    assert summary["entry_command"].startswith(f"python {sl.ENTRY_SCRIPT} ")
    assert summary["output_path"] == "s3://d-sagemaker/models/unet"
    assert sl.ENTRY_SCRIPT in summary["source_files"] and "training/train.py" in summary["source_files"]
    assert [m.name for m in trainer._metric_definitions] == [m["Name"] for m in sl.METRIC_DEFINITIONS]


def test_one_host_trains_without_a_distributed_kvstore_unless_asked():
    assert "kvstore" not in sl.hyperparameters(launch())
    assert sl.hyperparameters(launch(instance_count=3, hyperparameters={"kvstore": "dist_device_sync"}))["kvstore"] \
        == "dist_device_sync"
    with pytest.raises(SegqaError, match="contradicts"):
        sl.hyperparameters(launch(hyperparameters={"network": "enet"}))


@pytest.mark.parametrize("over, message", [
    ({"network": "resnet"}, "network must be one of"),
    ({"train_uri": "/data/cohort"}, "expected s3://"),
    ({"role_arn": "MyRole"}, "IAM role ARN"),
    ({"instance_type": "g4dn.xlarge"}, "instance type"),
    ({"max_runtime_s": 60}, "max runtime"),
    ({"base_job_name": "segqa_unet"}, "job name"),
])
def test_launch_mistakes_are_named(over, message):
    with pytest.raises(SegqaError, match=message):
        launch(**over).validate()


def test_start_training_sends_a_valid_create_training_job(source, model_problems):
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        session.client("s3").create_bucket(Bucket="d-sagemaker")
        sent = []
        session.events.register("provide-client-params.sagemaker.CreateTrainingJob",
                                lambda params, **kw: sent.append(dict(params)))
        trainer = sl.build_model_trainer(launch(spot=True, checkpoint_uri="s3://d-sagemaker/checkpoints/unet/"),
                                         source, region="us-east-1", boto_session=session, validate_role=False)
        name = sl.start_training(trainer)
        assert name.startswith("segqa-unet-")
        request = sent[0]
        assert model_problems("sagemaker", "CreateTrainingJob", request) == []
        assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
        assert {c["ChannelName"] for c in request["InputDataConfig"]} >= {"train", "validation", "code", "sm_drivers"}
        assert request["EnableManagedSpotTraining"] is True
        stopping = request["StoppingCondition"]
        assert stopping["MaxWaitTimeInSeconds"] >= stopping["MaxRuntimeInSeconds"]
        code = [c for c in request["InputDataConfig"] if c["ChannelName"] == "code"][0]["DataSource"]["S3DataSource"]
        assert code["S3Uri"].startswith("s3://d-sagemaker/sagemaker-inputs/")
        keys = [o["Key"] for o in session.client("s3").list_objects_v2(Bucket="d-sagemaker")["Contents"]]
        assert any(k.endswith(f"/input/code/{sl.ENTRY_SCRIPT}") for k in keys)
        assert any(k.endswith("/input/code/qa_workflow/contract.py") for k in keys)
        job = session.client("sagemaker").describe_training_job(TrainingJobName=name)
        assert job["HyperParameters"]["network"] == "unet"
        # a restarted spot job resumes: the entry point trains in the folder SageMaker syncs with the checkpoints
        assert request["CheckpointConfig"] == {"S3Uri": "s3://d-sagemaker/checkpoints/unet/",
                                               "LocalPath": "/opt/ml/checkpoints"}
        assert request["HyperParameters"]["checkpoint-dir"] == "/opt/ml/checkpoints"
        from training.train import build_arg_parser

        assert build_arg_parser().parse_args(["--checkpoint-dir", "/opt/ml/checkpoints"]).checkpoint_dir == (
            "/opt/ml/checkpoints")


def test_train_remote_dry_run_prints_both_trainers(capsys):
    rc = main(["train-remote", "--dry-run", "--region", "eu-west-1", "--role", ROLE, "--train",
               "s3://d-sagemaker/retrain/dataset/train/", "--output", "s3://d-sagemaker/models", "--instance-count",
               "2", "--instance-type", "ml.m5.xlarge", "--hp", "epochs=5"])
    out = capsys.readouterr().out
    assert rc == 0 and "dry run: no job was started" in out
    trainers = json.loads(out[:out.rindex("]") + 1])
    assert [t["hyperparameters"]["network"] for t in trainers] == ["unet", "enet"]
    assert all(t["training_image"].endswith("mxnet-training:1.9.0-cpu-py38") for t in trainers)
    assert trainers[1]["output_path"] == "s3://d-sagemaker/models/enet"
    assert trainers[0]["hyperparameters"] == {"epochs": "5", "kvstore": "dist_sync", "network": "unet"}


def test_train_remote_without_a_role_says_what_to_pass(capsys):
    rc = main(["train-remote", "--dry-run", "--region", "eu-west-1", "--train", "s3://d-sagemaker/t/",
               "--output", "s3://d-sagemaker/m/"])
    assert rc == 2 and "pass --role ARN or --stack NAME" in capsys.readouterr().err
