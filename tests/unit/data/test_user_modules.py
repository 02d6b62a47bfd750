"""User Python modules named by a config (``type: pkg.module`` strategies, ``module.function`` transforms,
``trl.reward_funcs``) travel in the bundle and import from the run folder there, giving the rows Axolotl gave
(the user_module goldens); a broken module is one line naming it."""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.bundle import build_bundle, open_bundle
from mudpuppy.launcher.config import load_config, load_config_text
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "data" / "golden"
TINY = ROOT / "templates" / "examples" / "tiny-llama"


def _forget(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "project"
    home.mkdir()
    shutil.copytree(GOLDEN / "inputs" / "user_strategies", home / "user_strategies")
    shutil.copy(GOLDEN / "inputs" / "shout.jsonl", home / "shout.jsonl")
    shutil.copy(ROOT / "tests" / "data" / "rl" / "toy_rewards.py", home / "toy_rewards.py")
    monkeypatch.chdir(home)
    monkeypatch.setattr(sys, "path", list(sys.path))
    _forget("user_strategies")
    yield home
    _forget("user_strategies")


def _config(home: Path, **extra: object) -> Path:
    golden = json.loads((GOLDEN / "user_module.json").read_text())
    cfg = {**golden["config"], "base_model": str(TINY), "output_dir": "out", **extra,
           "datasets": [{"path": "shout.jsonl", "type": "user_strategies.shout", "field": "question"}]}
    path = home / "run.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bundle_carries_the_module_and_the_run_folder_imports_it(project: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.runtime.data import prepare

    config = load_config(str(_config(project, trl={"reward_funcs": ["toy_rewards.vowel_reward"]}))).config
    bundle = build_bundle(config, tmp_path / "store")
    with tarfile.open(bundle.path) as tar:
        names = set(tar.getnames())
    assert {"files/python/user_strategies/shout.py", "files/python/user_strategies/__init__.py",
            "files/python/toy_rewards.py"} <= names
    # elsewhere, with the project gone: only the bundle's copy can be imported
    shutil.rmtree(project / "user_strategies")
    work = tmp_path / "work"
    cfg_path, workdir = open_bundle(bundle.path, work)
    monkeypatch.chdir(workdir)
    cfg = load_config(str(cfg_path)).config
    rows = prepare(cfg).train
    expected = json.loads((GOLDEN / "user_module.json").read_text())["train"]
    assert [list(r["input_ids"]) for r in rows] == [e["input_ids"] for e in expected]
    assert [list(r["labels"]) for r in rows] == [e["labels"] for e in expected]
    assert "files/python" in sys.modules["user_strategies.shout"].__file__


@pytest.mark.parametrize(("source", "message"), [
    ("def other():\n    pass\n", "has no load"),
    ("def load(tokenizer, cfg):\n    raise ValueError('bad field')\n", "load\\(\\) raised ValueError: bad field"),
    ("def load(tokenizer, cfg):\n    return 3\n", "not a strategy with tokenize_prompt"),
    ("import axolotl_is_not_here\n", "importing it failed"),
])
def test_broken_modules_are_one_line(project: Path, source: str, message: str) -> None:
    from mudpuppy.runtime.data import prepare

    (project / "user_strategies" / "broken.py").write_text(source)
    text = yaml.safe_dump({"base_model": str(TINY), "output_dir": "out", "sequence_len": 64, "learning_rate": 0.001,
                           "datasets": [{"path": "shout.jsonl", "type": "user_strategies.broken"}]})
    with pytest.raises(UserError, match=message):
        prepare(load_config_text(text, name="broken.yml").config)


def test_row_errors_name_the_strategy(project: Path) -> None:
    from mudpuppy.runtime.data import prepare

    (project / "user_strategies" / "picky.py").write_text(
        "class S:\n    def tokenize_prompt(self, row):\n        return {'input_ids': [1]}\n"
        "def load(tokenizer, cfg):\n    return S()\n")
    text = yaml.safe_dump({"base_model": str(TINY), "output_dir": "out", "sequence_len": 64, "learning_rate": 0.001,
                           "datasets": [{"path": "shout.jsonl", "type": "user_strategies.picky"}]})
    with pytest.raises(UserError, match=r"shout.jsonl: row 0: .*user_strategies.picky.*without"):
        prepare(load_config_text(text, name="picky.yml").config)
