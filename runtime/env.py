"""Where this process sits in a run: one ``Env`` read from whichever launcher started us.

Every backend starts the runtime differently (torchrun, ``srun``, SkyPilot, Ray, Modal, or a plain
``python -m``), and each speaks its own variables. They are all folded into one ``Env`` here so nothing else
in the runtime reads ``os.environ`` for topology. The first source that sets a field wins, in the order of
the table below (mudpuppy's own names override everything, so a backend can always pin a value).

====================  =========================================================================================
field                 sources, in priority order
====================  =========================================================================================
rank                  MUDPUPPY_RANK, RANK (torchrun, Ray Train), SLURM_PROCID, SKYPILOT_NODE_RANK*gpus+local
local_rank            MUDPUPPY_LOCAL_RANK, LOCAL_RANK, SLURM_LOCALID, 0
world_size            MUDPUPPY_WORLD_SIZE, WORLD_SIZE, SLURM_NTASKS, SKYPILOT_NUM_NODES*SKYPILOT_NUM_GPUS_PER_NODE, 1
node_rank             MUDPUPPY_NODE_RANK, GROUP_RANK (torchrun), NODE_RANK, SLURM_NODEID, SKYPILOT_NODE_RANK,
                      MODAL_NODE_RANK, 0
nnodes                MUDPUPPY_NNODES, SLURM_JOB_NUM_NODES / SLURM_NNODES, SKYPILOT_NUM_NODES, MODAL_NNODES,
                      NNODES, 1
master_addr           MUDPUPPY_MASTER_ADDR, MASTER_ADDR, first line of SKYPILOT_NODE_IPS, MODAL_MAIN_ADDR,
                      first host of SLURM_JOB_NODELIST (plain names only), 127.0.0.1
master_port           MUDPUPPY_MASTER_PORT, MASTER_PORT, 29500
attempt               MUDPUPPY_ATTEMPT, SLURM_RESTART_COUNT (unset on the first run), SKYPILOT_TASK_RETRY,
                      0 (0 = first attempt)
run_id                MUDPUPPY_RUN_ID, SLURM_JOB_ID, SKYPILOT_TASK_ID, RAY_JOB_ID, MODAL_TASK_ID, "local"
====================  =========================================================================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from mudpuppy.launcher.contract import ENV_ATTEMPT, ENV_RUN_ID


@dataclass(frozen=True)
class Env:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    node_rank: int = 0
    nnodes: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    attempt: int = 0
    run_id: str = "local"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def torch_variables(self) -> dict[str, str]:
        """The variables torch.distributed's env:// rendezvous reads, for launchers that do not set them."""
        return {
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.local_rank),
            "WORLD_SIZE": str(self.world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def read_env(environ: Mapping[str, str] | None = None) -> Env:
    env = os.environ if environ is None else environ

    def first(*names: str) -> str | None:
        for name in names:
            value = env.get(name)
            if value not in (None, ""):
                return value
        return None

    def number(*names: str, default: int) -> int:
        raw = first(*names)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            return default

    sky_nodes = number("SKYPILOT_NUM_NODES", default=0)
    sky_gpus = number("SKYPILOT_NUM_GPUS_PER_NODE", default=0)
    sky_node_rank = number("SKYPILOT_NODE_RANK", default=0)

    local_rank = number("MUDPUPPY_LOCAL_RANK", "LOCAL_RANK", "SLURM_LOCALID", default=0)
    node_rank = number(
        "MUDPUPPY_NODE_RANK", "GROUP_RANK", "NODE_RANK", "SLURM_NODEID", "SKYPILOT_NODE_RANK", "MODAL_NODE_RANK",
        default=0,
    )
    rank_default = sky_node_rank * sky_gpus + local_rank if sky_gpus and "SKYPILOT_NODE_RANK" in env else 0
    rank = number("MUDPUPPY_RANK", "RANK", "SLURM_PROCID", default=rank_default)
    world_default = sky_nodes * sky_gpus if sky_nodes and sky_gpus else 1
    world_size = number("MUDPUPPY_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS", default=world_default)
    nnodes = number(
        "MUDPUPPY_NNODES", "SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SKYPILOT_NUM_NODES", "MODAL_NNODES", "NNODES",
        default=1,
    )

    master_addr = first("MUDPUPPY_MASTER_ADDR", "MASTER_ADDR")
    if master_addr is None and env.get("SKYPILOT_NODE_IPS"):
        master_addr = env["SKYPILOT_NODE_IPS"].split()[0]
    if master_addr is None:
        master_addr = first("MODAL_MAIN_ADDR")
    if master_addr is None and env.get("SLURM_JOB_NODELIST"):
        master_addr = _first_slurm_host(env["SLURM_JOB_NODELIST"])

    attempt = number(ENV_ATTEMPT, "SLURM_RESTART_COUNT", "SKYPILOT_TASK_RETRY", default=0)
    run_id = first(ENV_RUN_ID, "SLURM_JOB_ID", "SKYPILOT_TASK_ID", "RAY_JOB_ID", "MODAL_TASK_ID") or "local"
    return Env(
        rank=rank,
        local_rank=local_rank,
        world_size=max(world_size, 1),
        node_rank=node_rank,
        nnodes=max(nnodes, 1),
        master_addr=master_addr or "127.0.0.1",
        master_port=number("MUDPUPPY_MASTER_PORT", "MASTER_PORT", default=29500),
        attempt=attempt,
        run_id=run_id,
    )


_BRACKETS = re.compile(r"^([^\[,]+)\[([^\]]+)\]")


def _first_slurm_host(nodelist: str) -> str | None:
    """First host of a SLURM nodelist: ``n[1-3,7],gpu2`` -> ``n1`` (zero padding kept: ``n[01-02]`` -> ``n01``)."""
    nodelist = nodelist.strip()
    match = _BRACKETS.match(nodelist)
    if match:
        prefix, ranges = match.groups()
        first_range = ranges.split(",")[0]
        return prefix + first_range.split("-")[0]
    return nodelist.split(",")[0] or None
