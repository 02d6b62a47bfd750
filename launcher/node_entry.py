"""The per-node command every backend runs: the runtime directly, or torchrun when there are several processes.

Why not plain ``torchrun``: it turns any worker failure into exit code 1, which would hide the requeue code
(75) the runtime uses to say "preempted, checkpoint saved". Here torchrun's ``main`` runs in-process and the
workers' own exit codes are mapped back. SIGUSR1 (a preemption notice) would kill the torchrun agent, so it is
forwarded to the workers instead. torch is imported only on the multi-process path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from mudpuppy.launcher.contract import EXIT_REQUEUE, EXIT_USER_ERROR


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(") ", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry.name))
    return out


def _forward_usr1(_signum: int, _frame: object) -> None:
    for child in _children(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGUSR1)


def exit_code_of(codes: list[int]) -> int:
    """One node's exit code from its failed workers' codes: requeue only when every real exit asked for it."""
    real = [c for c in codes if c > 0]
    if real and all(c == EXIT_REQUEUE for c in real):
        return EXIT_REQUEUE
    if real and all(c == EXIT_USER_ERROR for c in real):
        return EXIT_USER_ERROR
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mudpuppy.launcher.node_entry")
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--nproc-per-node", type=int, default=1)
    parser.add_argument("--node-rank", default="0", help="a number, or env:NAME to read it from a variable")
    parser.add_argument("--master-addr", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=29500)
    parser.add_argument("--module", default="mudpuppy.runtime")
    parser.add_argument("bundle")
    args = parser.parse_args(argv)
    node_rank = args.node_rank
    if node_rank.startswith("env:"):
        node_rank = os.environ.get(node_rank[4:], "0")
    if args.nnodes * args.nproc_per_node == 1:
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", args.module, args.bundle])
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    torch_args = get_args_parser().parse_args(
        [
            f"--nnodes={args.nnodes}",
            f"--nproc-per-node={args.nproc_per_node}",
            f"--node-rank={node_rank}",
            f"--master-addr={args.master_addr}",
            f"--master-port={args.master_port}",
            "--max-restarts=0",
            "-m",
            args.module,
            args.bundle,
        ]
    )
    signal.signal(signal.SIGUSR1, _forward_usr1)
    try:
        run(torch_args)
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        code = exit_code_of(codes)
        print(f"[mudpuppy] worker exit codes {sorted(codes)} -> node exit {code}", file=sys.stderr, flush=True)
        return code
    except SignalException as exc:
        # The scheduler is stopping this node (cancel, its own requeue, time limit); the workers got the same
        # signal and saved if they could. Whether to run again is the scheduler's decision, not ours.
        name = signal.Signals(exc.sigval).name
        print(f"[mudpuppy] node stopped by {name}; workers were asked to save", file=sys.stderr, flush=True)
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
