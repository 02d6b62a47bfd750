"""The ray backend on two Ray nodes (head 127.0.0.2, worker 127.0.0.3) with checkpoints in S3 (moto server).

Each node offers one CPU, so Ray's scheduler must put one of the two Train workers on each node. The nodes share
this machine's disk, which a real cluster's nodes do not: the run passes only if every node works in its own
folder (``ray_entry.node_workdir``) instead of racing the other node leader on the bundle, the dataset cache and
the checkpoints. The S3 endpoint reaches the job through ``launch.env``; the (fake moto) credentials are the nodes'
own environment, as ``backends.ray`` expects of a real cluster.
One run, a few steps, one ``fit``: start-up dominates.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.train")
pytest.importorskip("moto")

from mudpuppy.backends.base import State  # noqa: E402
from mudpuppy.launcher import dispatch  # noqa: E402
from mudpuppy.launcher.registry import Registry, new_run_id  # noqa: E402
from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME, verify  # noqa: E402
from mudpuppy.tests.infra.ray import HOST, add_node, ray_cluster, ray_env  # noqa: E402
from mudpuppy.tests.infra.s3 import S3Server, s3_server  # noqa: E402, F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]
EXAMPLES = Path(__file__).resolve().parents[2] / "templates" / "examples"
WORKER_IP = "127.0.0.3"
MAX_STEPS = 4
OUTPUT_DIR = "outputs/tiny-alpaca"
PUBLIC = {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED"}  # the rest is credentials


def s3_client(server: S3Server):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


def test_two_nodes_with_s3_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: S3Server,  # noqa: F811
) -> None:
    for key, value in ray_env().items():
        if key.startswith("RAY_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MUDPUPPY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    bucket = s3_server.bucket("ray")
    workdir = tmp_path / "work"
    cfg = yaml.safe_load((EXAMPLES / "tiny-alpaca.yml").read_text())
    cfg.update({
        "base_model": str(EXAMPLES / "tiny-llama"),
        "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}],
        "val_set_size": 0, "sequence_len": 128, "micro_batch_size": 2, "gradient_accumulation_steps": 1,
        "max_steps": MAX_STEPS, "save_steps": 2, "logging_steps": 1, "warmup_steps": 0, "save_total_limit": None,
        "dataloader_num_workers": 0, "output_dir": OUTPUT_DIR,
        "launch": {"backend": "ray", "nodes": 2, "retries": 0,
                   "env": {"OMP_NUM_THREADS": "1", **{k: v for k, v in s3_server.env.items() if k in PUBLIC}},
                   "ray": {"num_workers": 2, "storage_path": f"s3://{bucket}/runs", "workdir": str(workdir)}},
    })
    config = tmp_path / "tiny-ray.yml"
    config.write_text(yaml.safe_dump(cfg))

    # Credentials are the nodes' own (an instance role or ~/.aws on a real cluster): the Ray processes inherit them.
    for key, value in s3_server.env.items():
        if key not in PUBLIC:
            monkeypatch.setenv(key, value)
    started = time.monotonic()
    with ray_cluster(num_cpus=1) as cluster:
        node = add_node(cluster, WORKER_IP, num_cpus=1)
        try:
            monkeypatch.setenv("RAY_ADDRESS", cluster.address)
            registry = Registry()
            record = dispatch.submit(dispatch.prepare(str(config), {}, new_run_id()), str(config), registry)
            deadline = time.monotonic() + 300
            while True:
                record, status = dispatch.refresh(record, registry)
                if status.state.terminal or time.monotonic() > deadline:
                    break
                time.sleep(2)
            logs = "".join(dispatch.iter_logs(record, follow=False))
        finally:
            node.stop()
    print(logs)  # shown when an assertion fails
    print(f"two-node run incl. cluster start/stop: {time.monotonic() - started:.0f} s")
    assert status.state == State.SUCCEEDED, logs[-4000:]
    assert status.exit_code in (0, None), status

    # one Train worker on each node: Ray's own node IPs in the workers' start lines
    placed = dict(re.findall(r"Train worker rank (\d) of 2 starting on node (\S+)", logs))
    assert set(placed) == {"0", "1"}, logs[-4000:]
    assert set(placed.values()) == {HOST, WORKER_IP}, placed

    # checkpoints and the final outputs landed in the bucket, each checkpoint complete per its manifest
    client = s3_client(s3_server)
    prefix = f"runs/{record.id}/"
    keys = [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])]
    steps = sorted({int(m.group(1)) for key in keys if (m := re.match(rf"{prefix}checkpoint-(\d+)/", key))})
    assert steps == [2, 4], keys
    for step in steps:
        local = tmp_path / "fetched" / f"checkpoint-{step}"
        for key in keys:
            if key.startswith(f"{prefix}checkpoint-{step}/") and not key.endswith("/"):  # not folder markers
                target = local / key[len(f"{prefix}checkpoint-{step}/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(target))
        assert (local / MANIFEST_NAME).is_file(), sorted(p.name for p in local.iterdir())
        assert verify(local), f"checkpoint-{step} in S3 does not match its manifest"
    assert f"{prefix}final/mudpuppy-final.json" in keys, keys

    # rank 0's outputs where the config puts them; the other node (either one may hold rank 0) worked in a
    # folder of its own: its dataset cache is there, and no second node folder exists
    run_dir = workdir / record.id
    assert (run_dir / OUTPUT_DIR / "metrics.jsonl").is_file(), list(run_dir.rglob("*"))[:50]
    assert (run_dir / OUTPUT_DIR / "checkpoint-4" / MANIFEST_NAME).is_file()
    assert sorted(p.name for p in (run_dir / "nodes").iterdir()) == [f"node-{placed['1']}"]
    assert (run_dir / "nodes" / f"node-{placed['1']}" / OUTPUT_DIR / ".mudpuppy-prepared").is_dir()
