"""What goes into a bundle is what the user meant, no more and no less: two files that share a name stay two
files (checked through the runtime's own dataset loading of the unpacked bundle), private files stay private
(tar member modes, the tarball, the unpacked tree), and devices/FIFOs are refused instead of hashed forever."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.bundle import build_bundle, open_bundle
from mudpuppy.launcher.config import load_config, load_config_text
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[3] / "templates" / "examples"
REPO = Path(__file__).resolve().parents[3]


def rows(tag: str, n: int = 3) -> list[dict[str, str]]:
    return [{"instruction": f"{tag} question {i}", "input": "", "output": f"{tag} answer {i}"} for i in range(n)]


def write_jsonl(path: Path, items: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def config_with(datasets: list[dict]) -> str:
    return yaml.safe_dump({"base_model": str(EXAMPLES / "tiny-llama"), "learning_rate": 1e-4,
                           "output_dir": "out", "datasets": datasets})


def bundled_rows(tmp_path: Path, text: str) -> list[list[str]]:
    """Build, unpack elsewhere, and load every dataset entry with the runtime's loader from the unpacked config."""
    from mudpuppy.runtime.data.loading import load_raw

    bundle = build_bundle(load_config_text(text).config, tmp_path / "store")
    config_path, workdir = open_bundle(bundle.path, tmp_path / "remote-work")
    here = os.getcwd()
    os.chdir(workdir)
    try:
        config = load_config(config_path).config
        return [sorted(load_raw(ds, "train")[0]["instruction"]) for ds in config.datasets]
    finally:
        os.chdir(here)


def test_same_named_data_files_inside_the_folder_stay_two_files(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    a = write_jsonl(data / "a" / "train.jsonl", rows("alpha"))
    b = write_jsonl(data / "b" / "train.jsonl", rows("beta"))
    monkeypatch.chdir(tmp_path)
    # absolute entries (what a local run reads as is) and entries relative to the folder (how the runtime reads them)
    for files in ([str(a), str(b)], ["a/train.jsonl", "b/train.jsonl"]):
        got = bundled_rows(tmp_path / str(len(files[0])), config_with(
            [{"path": str(data), "type": "alpaca", "data_files": files}]))
        assert got == [sorted(r["instruction"] for r in rows("alpha") + rows("beta"))]


def test_same_named_data_files_from_outside_the_folder_stay_two_files(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    write_jsonl(data / "unused.jsonl", rows("unused"))
    a = write_jsonl(tmp_path / "x" / "train.jsonl", rows("alpha"))
    b = write_jsonl(tmp_path / "y" / "train.jsonl", rows("beta"))
    monkeypatch.chdir(tmp_path)
    got = bundled_rows(tmp_path, config_with([{"path": str(data), "type": "alpaca", "data_files": [str(a), str(b)]}]))
    assert got == [sorted(r["instruction"] for r in rows("alpha") + rows("beta"))]


def test_two_sources_never_share_one_place_in_the_bundle(tmp_path: Path, monkeypatch) -> None:
    a = write_jsonl(tmp_path / "x" / "train.jsonl", rows("alpha"))
    b = write_jsonl(tmp_path / "y" / "train.jsonl", rows("beta"))
    monkeypatch.chdir(tmp_path)
    config = load_config_text(config_with([{"path": "org/some-dataset", "type": "alpaca",
                                            "data_files": [str(a), str(b)]}])).config
    bundle = build_bundle(config, tmp_path / "store")
    entry = yaml.safe_load(bundle.config_text)["datasets"][0]
    assert len(set(entry["data_files"])) == 2
    assert sorted(bundle.files[p] for p in entry["data_files"]) == sorted([str(a), str(b)])


def _tiny_config(tmp_path: Path, data: Path) -> str:
    return config_with([{"path": str(data), "type": "alpaca"}])


def test_private_data_file_stays_private_in_tar_tarball_and_unpacked_tree(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "secret.jsonl", rows("private"))
    data.chmod(0o600)
    bundle = build_bundle(load_config_text(_tiny_config(tmp_path, data)).config, tmp_path / "store")
    assert stat.S_IMODE(bundle.path.stat().st_mode) == 0o600, "the tarball holds a private file"
    with tarfile.open(bundle.path) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["files/datasets/0/secret.jsonl"] == 0o600
    assert modes["config.yml"] == 0o644

    config_path, workdir = open_bundle(bundle.path, tmp_path / "work")
    root = config_path.parent
    assert stat.S_IMODE(root.stat().st_mode) == 0o700, "the unpack folder is its owner's only"
    unpacked = root / "files" / "datasets" / "0" / "secret.jsonl"
    assert stat.S_IMODE(unpacked.stat().st_mode) == 0o600
    for parent in unpacked.relative_to(root).parents:  # nothing on the way is writable by others
        assert not stat.S_IMODE((root / parent).stat().st_mode) & 0o022

    # a chmod alone makes a new bundle (the old one must not be reused with the old modes)
    data.chmod(0o644)
    public = build_bundle(load_config_text(_tiny_config(tmp_path, data)).config, tmp_path / "store")
    assert public.digest != bundle.digest and not public.reused
    assert stat.S_IMODE(public.path.stat().st_mode) == 0o644


def test_local_transport_copy_keeps_the_bundle_private(tmp_path: Path) -> None:
    from mudpuppy.backends.transport import LocalTransport

    src = tmp_path / "b.tar.gz"
    src.write_bytes(b"bundle")
    src.chmod(0o600)
    LocalTransport().put(src, str(tmp_path / "remote" / "b.tar.gz"))
    assert stat.S_IMODE((tmp_path / "remote" / "b.tar.gz").stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "fifo-in-data_files"])
def test_launch_refuses_devices_and_fifos_instead_of_hanging(tmp_path: Path, kind: str) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    data = tmp_path / "data"
    write_jsonl(data / "ok.jsonl", rows("ok"))
    entry = {"fifo": {"path": str(fifo)}, "dev-zero": {"path": "/dev/zero"},
             "fifo-in-data_files": {"path": str(data), "data_files": ["ok.jsonl", str(fifo)]}}[kind]
    key = "datasets[0].data_files[1]" if kind == "fifo-in-data_files" else "datasets[0].path"
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(config_with([{**entry, "type": "alpaca"}]))
    env = {**os.environ, "MUDPUPPY_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "mudpuppy", "launch", str(cfg), "--backend", "local", "--dry-run"],
                          capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert key in lines[0] and "not a regular file or folder" in lines[0]


def test_build_refuses_fifo_in_a_model_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    fifo = tmp_path / "template.jinja"
    os.mkfifo(fifo)
    data = write_jsonl(tmp_path / "d.jsonl", rows("d"))
    text = _tiny_config(tmp_path, data) + f"chat_template_jinja: {fifo}\n"
    with pytest.raises(UserError, match=r"chat_template_jinja: .*template.jinja is not a regular file"):
        build_bundle(load_config_text(text).config, tmp_path / "store")
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").iterdir())


def test_example_still_bundles_unchanged_layout(tmp_path: Path, monkeypatch) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    bundle = build_bundle(load_config("examples/tiny-alpaca.yml").config, tmp_path / "store")
    assert yaml.safe_load(bundle.config_text)["datasets"][0]["path"] == "files/datasets/0/alpaca_tiny.jsonl"


def test_folder_data_files_are_read_from_where_the_command_runs_as_axolotl_reads_them(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """Axolotl passes a folder entry's ``data_files`` to ``load_dataset(type, data_files=...)`` unchanged, so
    they are relative to the working folder; a same-named file inside the dataset folder is not the one read.
    Checked both for a local run (the runtime's loader here) and through a bundle unpacked elsewhere."""
    from types import SimpleNamespace

    from mudpuppy.runtime.data.loading import load_raw

    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", rows("inside-folder"))
    write_jsonl(tmp_path / "train.jsonl", rows("working-folder"))
    monkeypatch.chdir(tmp_path)
    entry = {"path": "data", "type": "alpaca", "data_files": ["train.jsonl"]}
    local = SimpleNamespace(path="data", ds_type=None, split=None, name=None, data_files=["train.jsonl"])
    expected = sorted(r["instruction"] for r in rows("working-folder"))
    assert sorted(load_raw(local, "train")[0]["instruction"]) == expected
    assert bundled_rows(tmp_path, config_with([entry])) == [expected]


def test_pretraining_dataset_files_travel_and_stream_from_the_unpacked_bundle(tmp_path: Path, monkeypatch) -> None:
    from mudpuppy.runtime.data.streaming import open_stream

    texts = [{"text": f"streamed {i}"} for i in range(3)]
    single = write_jsonl(tmp_path / "corpus" / "one.jsonl", texts)
    write_jsonl(tmp_path / "folder" / "part.jsonl", texts)
    monkeypatch.chdir(tmp_path)
    entries = [{"path": str(single)}, {"path": "folder"}, {"path": "json", "data_files": "corpus/one.jsonl"},
               {"path": "org/hub-corpus"}]
    for i, entry in enumerate(entries):
        text = yaml.safe_dump({"base_model": str(EXAMPLES / "tiny-llama"), "learning_rate": 1e-4, "max_steps": 2,
                               "output_dir": "out", "pretraining_dataset": [entry]})
        bundle = build_bundle(load_config_text(text).config, tmp_path / "store")
        config_path, workdir = open_bundle(bundle.path, tmp_path / f"remote-{i}")
        (got,) = load_config(config_path).config.pretraining_dataset or []
        if entry["path"] == "org/hub-corpus":
            assert got.path == "org/hub-corpus"  # a hub id is read where the run runs
            assert not any("pretraining_dataset" in k for k in bundle.files)
            continue
        assert any(k.startswith("files/pretraining_dataset/0/") for k in bundle.files)
        here = os.getcwd()
        os.chdir(workdir)
        try:
            assert [r["text"] for r in open_stream(got)] == [t["text"] for t in texts]
        finally:
            os.chdir(here)
