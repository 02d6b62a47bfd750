"""The per-node command every backend runs: the runtime directly, or torchrun when there are several processes.

Why not plain ``torchrun``: it turns any worker failure into exit code 1, which would hide the requeue code
(75) the runtime uses to say "preempted, checkpoint saved". Here torchrun's ``main`` runs in-process and the
workers' own exit codes are mapped back. torch is imported only on the multi-process path.

Signals. torchrun starts each worker in its own session, so a signal sent to our process group (the local
and SSH supervisors' cancel, a terminal's Ctrl-C, and SLURM under ``proctrack/pgid``, which signals only each
task's process group) reaches only this process. So SIGTERM, SIGINT and SIGUSR1 are always relayed to the
workers. Under ``proctrack/cgroup`` or ``linuxproc`` SLURM signals every process of the step itself, so a worker
gets the same signal twice within milliseconds: the runtime treats a repeat of the same signal within its
window as an echo (``runtime.train.signals``), never as the "exit now" second request. torchrun's own SIGTERM
handling is switched off (``--signals-to-handle``) because it kills the workers at once and drops their exit
codes: here the agent keeps waiting, the workers save and exit 75, and the node exits 75.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from mudpuppy.launcher.contract import ENV_NODE_EXITS, ENV_REQUEUE_MARKERS, EXIT_REQUEUE, EXIT_USER_ERROR


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


# Signals a worker may have exited from without a save: negative (killed) or 128+N from a shell or os._exit.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGUSR1, signal.SIGHUP)
_SIGNALLED = {-int(s) for s in _STOP_SIGNALS} | {128 + int(s) for s in _STOP_SIGNALS}


def exit_code_of(codes: list[int]) -> int:
    """One node's exit code from its workers' codes.

    Requeue when some worker saved and exited 75 and every other one either did too or was stopped by a signal
    afterwards (torchrun stops the rest once one exits; a save is collective, so one 75 means it is on disk).
    A real crash anywhere wins: requeueing a crash would only repeat it.
    """
    real = [c for c in codes if c > 0 and c not in _SIGNALLED]
    if EXIT_REQUEUE in codes and all(c == EXIT_REQUEUE for c in real):
        return EXIT_REQUEUE
    if real and all(c == EXIT_USER_ERROR for c in real):
        return EXIT_USER_ERROR
    return 1


def requeue_if_saved(code: int, markers: Path) -> int:
    """75 when any worker left a requeue marker (its save is collective, so the checkpoint is complete), whatever
    torchrun made of the exit codes of workers that were still exiting when it stopped them."""
    saved = sorted(p.name for p in markers.iterdir()) if markers.is_dir() else []
    if saved and code != 0:
        print(f"[mudpuppy] {', '.join(saved)} saved a checkpoint for requeue", file=sys.stderr, flush=True)
        return EXIT_REQUEUE
    return code


class _Relay:
    """Our handler for SIGTERM/SIGINT/SIGUSR1 while torchrun's agent runs its workers."""

    def __init__(self, relay: bool, stop_before_start: type[BaseException]) -> None:
        self.relay = relay
        self.stopped: int | None = None
        self._stop_before_start = stop_before_start

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        workers = _children(os.getpid())
        if signum != signal.SIGUSR1:
            self.stopped = signum
            if not workers:  # still at rendezvous: nothing to save, and nothing must start after this
                raise self._stop_before_start(f"signal {signum} before the workers started", signal.Signals(signum))
        if self.relay:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signum)  # each worker leads its own session (torchrun starts them so)


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
            # not SIGTERM/SIGINT: torchrun's handler kills the workers mid-save; ours (_Relay) lets them finish
            "--signals-to-handle=SIGHUP,SIGQUIT",
            "-m",
            args.module,
            args.bundle,
        ]
    )
    relay = _Relay(relay=True, stop_before_start=SignalException)
    relay.install()
    markers = Path(tempfile.mkdtemp(prefix="mudpuppy-requeue-"))
    os.environ[ENV_REQUEUE_MARKERS] = str(markers)  # inherited by the workers torchrun starts
    code = 0
    try:
        run(torch_args)
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        code = exit_code_of(codes)
        print(f"[mudpuppy] worker exit codes {sorted(codes)} -> node exit {code}", file=sys.stderr, flush=True)
    except SignalException as exc:
        relay.stopped = int(exc.sigval)
        code = 128 + int(exc.sigval)
    code = requeue_if_saved(code, markers)
    shutil.rmtree(markers, ignore_errors=True)
    if relay.stopped is not None:
        # The scheduler is stopping this node (cancel, its own requeue, time limit): 75 if the workers saved,
        # else the conventional 128+signal. Whether to run again is the scheduler's decision, not ours.
        name = signal.Signals(relay.stopped).name
        if code not in (0, EXIT_REQUEUE):
            code = 128 + relay.stopped
        print(f"[mudpuppy] node stopped by {name}; node exit {code}", file=sys.stderr, flush=True)
    record_node_exit(node_rank, code)
    return code


def record_node_exit(node_rank: str, code: int) -> None:
    """Leave this node's exit code where the SLURM script reads it (no-op unless ``$MUDPUPPY_NODE_EXITS``)."""
    folder = os.environ.get(ENV_NODE_EXITS)
    if folder:
        with contextlib.suppress(OSError):
            tmp = Path(folder, f".node{node_rank}.tmp")
            tmp.write_text(f"{code}\n")
            tmp.replace(Path(folder, f"node{node_rank}"))


if __name__ == "__main__":
    sys.exit(main())
