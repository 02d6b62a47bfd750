"""Bundles: content addressing, path rewriting, the runtime-side reader, and that secrets never land in one."""

from __future__ import annotations

import gzip
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.bundle import build_bundle, open_bundle
from mudpuppy.launcher.config import load_config
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(300)

EXAMPLES = Path(__file__).resolve().parents[3] / "templates" / "examples"
SECRET = "hf_topsecret_value_0123456789"


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    (tmp_path / "fake.whl").write_bytes(b"not really a wheel")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _build(project: Path, overrides: dict | None = None, store: str = "store"):
    config = load_config("examples/tiny-alpaca.yml", overrides or {}).config
    return build_bundle(config, project / store, wheel=project / "fake.whl")


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_same_inputs_same_bundle_and_reuse(project: Path) -> None:
    first = _build(project)
    second = _build(project)
    assert second.digest == first.digest and second.path == first.path
    assert not first.reused and second.reused
    other_store = _build(project, store="elsewhere")
    assert other_store.path.read_bytes() == first.path.read_bytes()  # deterministic bytes, not just names


def test_data_or_config_change_changes_hash(project: Path) -> None:
    base = _build(project)
    assert _build(project, {"learning_rate": 1e-3}).digest != base.digest
    data = project / "examples/data/alpaca_tiny.jsonl"
    data.write_text(data.read_text() + data.read_text().splitlines(keepends=True)[0])
    assert _build(project).digest != base.digest


def test_launch_only_changes_keep_the_bundle(project: Path) -> None:
    base = _build(project)
    moved = _build(project, {"launch.backend": "slurm", "launch.slurm.partition": "gpu", "launch.nodes": 2})
    assert moved.digest == base.digest


def test_local_paths_rewritten_and_copied(project: Path) -> None:
    bundle = _build(project)
    members = _members(bundle.path)
    config = yaml.safe_load(members["config.yml"])
    assert config["base_model"] == "files/base_model/tiny-llama"
    assert config["datasets"][0]["path"] == "files/datasets/0/alpaca_tiny.jsonl"
    assert "launch" not in config
    assert members["files/datasets/0/alpaca_tiny.jsonl"] == (project / "examples/data/alpaca_tiny.jsonl").read_bytes()
    assert "files/base_model/tiny-llama/config.json" in members
    assert "wheels/fake.whl" in members
    image = yaml.safe_load(members["image.json"])
    assert image["wheel"] == "wheels/fake.whl" and image["python"]


def test_hub_ids_and_urls_left_alone(project: Path) -> None:
    remote = {"base_model": "org/some-model", "datasets": [{"path": "s3://b/d.jsonl", "type": "alpaca"}]}
    bundle = _build(project, remote)
    config = yaml.safe_load(_members(bundle.path)["config.yml"])
    assert config["base_model"] == "org/some-model"
    assert config["datasets"][0]["path"] == "s3://b/d.jsonl"


def test_secrets_never_written(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    bundle = _build(project, {"launch.secrets": ["HF_TOKEN"]})
    raw = gzip.decompress(bundle.path.read_bytes())
    assert SECRET.encode() not in raw
    image = yaml.safe_load(_members(bundle.path)["image.json"])
    assert image["secrets"] == ["HF_TOKEN"]


def test_secret_in_plain_env_is_refused(project: Path) -> None:
    with pytest.raises(UserError, match="launch.env.HF_TOKEN looks like a secret"):
        _build(project, {"launch.env": {"HF_TOKEN": SECRET}})


def test_open_bundle_extracts_once_and_links_data(project: Path, tmp_path: Path) -> None:
    bundle = _build(project)
    run_a, run_b = tmp_path / "run-a", tmp_path / "run-b"
    config_a, work_a = open_bundle(bundle.path, run_a)
    config_b, work_b = open_bundle(bundle.path, run_b)
    assert config_a == config_b == bundle.path.parent / bundle.path.name.removesuffix(".tar.gz") / "config.yml"
    assert (work_a, work_b) == (run_a, run_b)
    data_path = yaml.safe_load(config_a.read_text())["datasets"][0]["path"]
    assert (work_a / data_path).read_bytes() == (project / "examples/data/alpaca_tiny.jsonl").read_bytes()
    again, _ = open_bundle(config_a.parent, run_a)  # an extracted folder works too
    assert again == config_a


def test_open_bundle_uses_env_workdir(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _build(project)
    monkeypatch.setenv("MUDPUPPY_WORKDIR", str(tmp_path / "from-env"))
    _config, work = open_bundle(bundle.path)
    assert work == tmp_path / "from-env" and (work / "files").is_symlink()


def test_open_bundle_rejects_non_bundles(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_bundle(tmp_path / "missing.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a mudpuppy bundle"):
        open_bundle(tmp_path / "empty")


def test_open_bundle_refuses_to_clobber_a_real_files_dir(project: Path, tmp_path: Path) -> None:
    bundle = _build(project)
    (tmp_path / "busy" / "files").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        open_bundle(bundle.path, tmp_path / "busy")
