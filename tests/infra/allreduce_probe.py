"""``python -m tests.infra.allreduce_probe OUT``: one gloo all_reduce across the torchrun world, result to OUT.rank.

Checks that a rendezvous address reaches every process intact (e.g. an IPv6 address from Modal's
``container_ips()``), without the cost of a training run.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    value = torch.tensor([dist.get_rank() + 1.0])
    dist.all_reduce(value)
    with open(f"{sys.argv[1]}.{dist.get_rank()}", "w") as fh:
        fh.write(f"{value.item():g} {os.environ.get('MASTER_ADDR')}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
