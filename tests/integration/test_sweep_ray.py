"""A sweep on a real local Ray cluster: one Ray job per member, submitted together and run side by side, each
training with its own learning rate (the peak rate in its metrics.jsonl) into its own folder; the group's
ranking reads those files where Ray's workers wrote them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.train")

from mudpuppy.launcher.registry import Registry  # noqa: E402
from mudpuppy.launcher.sweep_launch import prepare_group, submit_group, wait_group  # noqa: E402
from mudpuppy.launcher.sweep_report import results  # noqa: E402
from tests.infra.ray import RayCluster, ray_cluster, ray_env  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
EXAMPLES = Path(__file__).resolve().parents[2] / "templates" / "examples"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster(num_cpus=2) as running:
        yield running


def test_ray_sweep_is_one_job_per_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         cluster: RayCluster) -> None:
    for key, value in ray_env().items():
        if key.startswith("RAY_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load((EXAMPLES / "tiny-alpaca.yml").read_text())
    cfg.update({
        "base_model": str(EXAMPLES / "tiny-llama"),
        "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}],
        "val_set_size": 0, "sequence_len": 128, "micro_batch_size": 2, "gradient_accumulation_steps": 1,
        "max_steps": 3, "save_steps": 3, "logging_steps": 1, "warmup_steps": 2, "dataloader_num_workers": 0,
        "launch": {"backend": "ray", "retries": 0, "env": {"OMP_NUM_THREADS": "1"},
                   "ray": {"num_workers": 1, "storage_path": str(tmp_path / "storage"),
                           "workdir": str(tmp_path / "work")}},
    })
    config = tmp_path / "tiny-ray.yml"
    config.write_text(yaml.safe_dump(cfg))
    registry = Registry()
    group = prepare_group(str(config), {}, ["learning_rate=1e-3,6e-3"])
    records = submit_group(group, registry, max_parallel=None, follow=False, echo=print)
    assert [r.handle for r in records] == [f"ray://{cluster.address}/mudpuppy-{r.id}" for r in records]
    assert all(registry.get(r.id).status != "succeeded" for r in records)  # both submitted before either ended
    assert wait_group(records, registry, print) == ["succeeded", "succeeded"]
    ranked = results(registry.group(group.group_id))
    assert sorted(r.learning_rate for r in ranked) == pytest.approx([1e-3, 6e-3])  # type: ignore[type-var]
    for r in ranked:  # read from Ray's storage: the final outputs of the member's own output_dir
        assert r.source == str(tmp_path / "storage" / r.record.id / "final" / "metrics.jsonl"), r
        marker = json.loads((Path(r.source).parent / "mudpuppy-final.json").read_text())
        assert marker["output_dir"].endswith("/outputs/tiny-alpaca/" + r.record.name.removeprefix("tiny-ray-"))
    assert [r.loss for r in ranked] == sorted(r.loss for r in ranked)  # type: ignore[type-var]
