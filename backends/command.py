"""The command and plain environment every backend gives each node (secrets are never part of either)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mudpuppy.launcher.contract import ENV_BUNDLE, ENV_RUN_ID, ENV_VOLUME, ENV_WORKDIR

if TYPE_CHECKING:
    from mudpuppy.launcher.config.schema.launch import LaunchSection

__all__ = ["job_env", "node_command", "nproc_per_node"]


def nproc_per_node(launch: LaunchSection, explicit: int | None) -> int:
    if explicit:
        return explicit
    _kind, count = launch.gpu_kind_and_count()
    return count or 1


def node_command(
    python: str,
    launch: LaunchSection,
    bundle: str,
    *,
    nnodes: int,
    nproc: int,
    node_rank: str,
    master_addr: str,
    master_port: int,
) -> list[str]:
    return [
        python,
        "-m",
        "mudpuppy.launcher.node_entry",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc}",
        f"--node-rank={node_rank}",
        f"--master-addr={master_addr}",
        f"--master-port={master_port}",
        f"--module={launch.entrypoint}",
        bundle,
    ]


def job_env(launch: LaunchSection, run_id: str, workdir: str, bundle: str) -> dict[str, str]:
    env = dict(sorted(launch.env.items()))
    env[ENV_RUN_ID] = run_id
    env[ENV_BUNDLE] = bundle
    env[ENV_WORKDIR] = workdir
    if launch.volume:
        env[ENV_VOLUME] = launch.volume
    return env
