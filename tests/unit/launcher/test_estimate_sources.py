"""Where the estimate's inputs come from: SkyPilot's real catalog functions (offline, a catalog CSV in SkyPilot's
own format and place under a temporary HOME), and the runtime's pipeline for rows and tokens (all rows, and a
sample scaled up)."""

from __future__ import annotations

import calendar
import os
import time
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.config import load_config
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.errors import UserError
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[3]

# SkyPilot's AWS catalog columns (sky/catalog/data_fetchers/fetch_aws.py USEFUL_COLUMNS); prices are per instance
_GPU = "\"{'Gpus': [{'Name': 'H100', 'Manufacturer': 'NVIDIA', 'Count': 8, 'MemoryInfo': {'SizeInMiB': 81920}}]}\""
_AWS = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone,"
    "Arch,LocalDiskType,NVMeSupported,LocalDiskSize,LocalDiskCount,MaximumEfaInterfaces\n"
    f"p5.48xlarge,H100,8,192,2048,{_GPU},98.32,39.10,us-east-1,use1-az6,x86_64,ssd,True,3800,8,32\n"
    f"p5.48xlarge,H100,8,192,2048,{_GPU},98.32,35.60,us-east-2,use2-az3,x86_64,ssd,True,3800,8,32\n"
    f"p5.4xlarge,H100,1,16,256,{_GPU},6.88,2.10,us-east-1,use1-az6,x86_64,ssd,True,3800,1,0\n"
    "p4d.24xlarge,A100,8,96,1152,,32.77,12.50,us-east-1,use1-az2,x86_64,ssd,True,1000,8,4\n"
)


@pytest.fixture(scope="module")
def sky() -> str:
    python = os.environ.get("MUDPUPPY_SKYPILOT_PYTHON") or str(ROOT / ".venv-sky" / "bin" / "python")
    if not Path(python).exists():
        if os.environ.get("MUDPUPPY_REQUIRE_EXTRAS"):
            pytest.fail(f"no SkyPilot environment at {python}: run `make sky-venv`")
        pytest.skip(f"no SkyPilot environment at {python} (make sky-venv)")
    return python


def test_skypilot_prices_come_from_its_catalog_offline(sky: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.launcher import estimate_prices

    catalog = tmp_path / ".sky" / "catalogs" / "v8" / "aws" / "vms.csv"
    catalog.parent.mkdir(parents=True)
    catalog.write_text(_AWS)
    stamp = calendar.timegm((2026, 11, 1, 12, 0, 0, 0, 0, 0))
    os.utime(catalog, (stamp, stamp))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MUDPUPPY_SKYPILOT_PYTHON", sky)
    launch = LaunchSection(backend="skypilot", gpus="H100:8", spot=True)
    price = estimate_prices.for_launch(launch)
    assert price is not None
    # the cheapest 8 x H100 node: on-demand $98.32/h, spot $35.60/h (us-east-2) -> per GPU-hour / 8
    assert price.on_demand == pytest.approx(98.32 / 8) and price.spot == pytest.approx(35.60 / 8)
    assert price.as_of == "2026-11-01" and str(catalog) in price.source
    assert "p5.48xlarge" in price.detail and "us-east-2" in price.detail
    assert os.path.getmtime(catalog) == stamp  # a hand-placed catalog is never refreshed over the network

    # a spot run's elapsed cost in `status` (asks the catalog once), then `runs` (today's stored price only)
    import json

    from mudpuppy.launcher import progress_view
    from mudpuppy.launcher.registry import Registry

    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    registry = Registry()
    record = registry.create(name="sky", backend="skypilot", bundle_hash="0" * 64, config_path="c.yml",
                             launch=launch.model_dump_json())
    record = registry.update(record.id, status="cancelled")
    view = progress_view.build(record, use_logs=False, allow_slow_price=True, now=record.updated)
    hours = (record.updated - record.created) / 3600 * 8
    assert view.gpu_hours == pytest.approx(hours) and view.cost == pytest.approx(hours * 35.60 / 8)
    assert view.price_note.startswith("spot $4.45/GPU-h, SkyPilot catalog as of 2026-11-01")
    catalog.unlink()  # `runs` must not need SkyPilot again today
    again = progress_view.build(record, use_logs=False, allow_slow_price=False, now=record.updated)
    assert again.cost == pytest.approx(view.cost) and json.loads(
        (tmp_path / "state" / "progress" / f"{record.id}.price.json").read_text())["value"] == pytest.approx(4.45)


def test_no_catalog_on_disk_is_a_hint_not_a_download() -> None:
    from mudpuppy.launcher import estimate_prices

    with pytest.raises(UserError, match="sky gpus list"):
        estimate_prices.cheapest({"offers": [], "catalogs": []}, 8)


def _tiny(tmp_path: Path, **extra: object) -> Path:
    cfg = {"base_model": str(EXAMPLES / "tiny-llama"), "datasets": [
        {"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}],
        "sequence_len": 128, "sample_packing": True, "val_set_size": 0.05, "micro_batch_size": 2,
        "gradient_accumulation_steps": 2, "num_epochs": 2, "adapter": "lora", "lora_r": 4,
        "lora_target_linear": True, "learning_rate": 0.001, "output_dir": str(tmp_path / "out"), **extra}
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_sample_scales_to_about_the_full_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.launcher import estimate_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config(_tiny(tmp_path, dataset_prepared_path=str(tmp_path / "prepared"))).config
    started = time.perf_counter()
    full = estimate_data.measure(cfg, sample_rows=10_000)
    sample = estimate_data.measure(cfg, sample_rows=120)
    assert full.sampled == 1.0 and "all 240 rows" in full.source
    assert sample.sampled == 0.5 and "120 of 240 rows" in sample.source
    assert full.rows == 228  # 240 rows, 5% (12) held out for eval
    assert abs(sample.tokens - full.tokens) / full.tokens < 0.15
    assert abs(sample.batches_rows - full.batches_rows) / full.batches_rows < 0.2
    assert not (tmp_path / "prepared").exists()  # the estimate never writes the prepared cache
    from mudpuppy.runtime.data import prepare

    prepare(cfg)  # what `mudpuppy preprocess` does: now the estimate reads the prepared rows
    cached = estimate_data.measure(cfg, sample_rows=120)
    assert cached.source.startswith(f"prepared dataset {tmp_path / 'prepared'}") and cached.sampled == 1.0
    assert (cached.rows, cached.tokens, cached.batches_rows) == (full.rows, full.tokens, full.batches_rows)
    assert time.perf_counter() - started < 90


def test_estimate_cli_and_the_dry_run_lines(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MUDPUPPY_STATE_DIR": str(tmp_path / "state")}
    cfg = _tiny(tmp_path)
    shown = subprocess.run([sys.executable, "-m", "mudpuppy", "estimate", str(cfg), "--backend", "modal", "--gpus",
                            "H100:2", "--mfu", "0.5"], capture_output=True, text=True, timeout=150, env=env)
    assert shown.returncode == 0, shown.stderr[-2000:]
    lines = {line.split()[0]: line for line in shown.stdout.splitlines()[1:]}
    assert "228 train rows" in lines["data"] and "all 240 rows tokenized" in lines["data"]
    # r=4 on the tiny Llama's 7 linear layers (hidden 64, k/v 32, mlp 128): 4*(2*128 + 2*96 + 3*192) = 4096, x 2 layers
    assert "LoRA 8,192 trainable" in lines["model"]
    assert "MFU 0.50 (given)" in lines["compute"]
    assert "on-demand $11.85/GPU-h" in lines["price"] and "spot $3.95/GPU-h" in lines["price"]
    assert "as of 2026-05-07" in lines["price"]
    dry = subprocess.run([sys.executable, "-m", "mudpuppy", "launch", str(cfg), "--backend", "slurm", "--gpus",
                          "H100:8", "--dry-run"], capture_output=True, text=True, timeout=150, env=env)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert dry.stdout.startswith('# backend: "slurm"') and "#SBATCH --gpus-per-node=H100:8" in dry.stdout
    assert "estimate (" not in dry.stdout  # stdout is the plan only
    assert "estimate (slurm, 1 x 8 x H100, 8 process(es))" in dry.stderr
    assert "slurm: no price list (your own machines): GPU-hours only" in dry.stderr
    assert "GPU-hours on H100 at 989.4 TFLOP/s" in dry.stderr
    quiet = subprocess.run([sys.executable, "-m", "mudpuppy", "launch", str(cfg), "--backend", "slurm", "--dry-run",
                            "--no-estimate"], capture_output=True, text=True, timeout=150, env=env)
    assert quiet.returncode == 0 and "estimate (" not in quiet.stderr
