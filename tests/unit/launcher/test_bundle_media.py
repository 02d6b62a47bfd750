"""Images that multimodal rows reference travel in the bundle, and the bundled rows find them in a run folder
that shares nothing with the folder the bundle was built in."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from mudpuppy.launcher.bundle import build_bundle, open_bundle
from mudpuppy.launcher.config import load_config
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(120)


def _png(path: Path, colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 4), colour).save(path)
    return path.read_bytes()


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    monkeypatch.chdir(root.parent)
    root.mkdir()
    monkeypatch.chdir(root)
    _png(root / "images" / "red.png", (255, 0, 0))
    _png(root / "other" / "red.png", (0, 255, 0))  # same name, different picture: both must survive
    _png(tmp_path / "elsewhere.png", (0, 0, 255))
    rows = [
        {"messages": [{"role": "user", "content": [{"type": "image", "path": "images/red.png"},
                                                   {"type": "text", "text": "Colour?"}]},
                      {"role": "assistant", "content": "Red."}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "other/red.png"},
                                                   {"type": "image", "url": "https://example.com/x.png"}]},
                      {"role": "assistant", "content": "Green."}], "images": [str(tmp_path / "elsewhere.png")]},
    ]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "cfg.yml").write_text("base_model: m\nlearning_rate: 1e-4\nprocessor_type: AutoProcessor\n"
                                  "allow_remote_images: true\nchat_template: gemma3\n"
                                  "datasets:\n  - path: data.jsonl\n    type: chat_template\n")
    return root


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_bundle_carries_referenced_images_and_rows_resolve_in_a_fresh_run_folder(project: Path,
                                                                                  tmp_path: Path) -> None:
    from mudpuppy.runtime.data import multimodal

    bundle = build_bundle(load_config("cfg.yml").config, tmp_path / "store")
    members = _members(bundle.path)
    media = {name: data for name, data in members.items() if name.startswith("files/media/")}
    assert sorted(media.values()) == sorted([(project / "images/red.png").read_bytes(),
                                             (project / "other/red.png").read_bytes(),
                                             (tmp_path / "elsewhere.png").read_bytes()])
    rows = [json.loads(line) for line in members["files/datasets/0/data.jsonl"].decode().splitlines()]
    assert rows[0]["messages"][0]["content"][0]["path"].startswith("files/media/")
    assert rows[1]["messages"][0]["content"][1] == {"type": "image", "url": "https://example.com/x.png"}
    assert (project / "data.jsonl").read_text().count("images/red.png") == 1  # the user's file is untouched

    # a run folder on "another machine": nothing of the project is reachable from there
    (project / "images" / "red.png").unlink()
    run = tmp_path / "run"
    config_path, workdir = open_bundle(bundle.path, run)
    import os

    os.chdir(workdir)
    cfg = load_config(config_path).config
    train, _, stats = multimodal.build(cfg, SimpleNamespace(feature_extractor=None))
    assert stats.train_rows == 2
    found = []
    for text in train[multimodal.ROW_COLUMN]:
        for message in json.loads(text):
            found += [Path(p["path"]).read_bytes() for p in message["content"] if "path" in p]
    assert sorted(found) == sorted(media.values())
    assert not any(str(project) in p for text in train[multimodal.ROW_COLUMN] for p in _paths(text))


def _paths(text: str) -> list[str]:
    return [p["path"] for m in json.loads(text) for p in m["content"] if "path" in p]


def test_text_configs_are_not_rewritten(project: Path, tmp_path: Path) -> None:
    (project / "cfg.yml").write_text((project / "cfg.yml").read_text().replace("processor_type: AutoProcessor\n",
                                                                                  "").replace(
        "allow_remote_images: true\n", ""))
    members = _members(build_bundle(load_config("cfg.yml").config, tmp_path / "store").path)
    assert not any(name.startswith("files/media/") for name in members)
    assert members["files/datasets/0/data.jsonl"] == (project / "data.jsonl").read_bytes()


def test_a_config_from_a_url_cannot_ship_images_from_outside_the_folder(project: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="outside the working folder"):
        build_bundle(load_config("cfg.yml").config, tmp_path / "store", confine_to=project)
