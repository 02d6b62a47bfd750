"""Runs a job on one host, restarting it on the requeue exit code; the local and SSH backends start it detached.

Pure stdlib, because it runs on remote hosts with nothing but Python and the bundled mudpuppy wheel::

    python -m mudpuppy.backends.supervisor start --retries N [--secrets-stdin] RUN_DIR -- CMD...
    python -m mudpuppy.backends.supervisor spawn --retries N RUN_DIR -- CMD...   # detached; secrets on stdin
    python -m mudpuppy.backends.supervisor status RUN_DIR        # one JSON line
    python -m mudpuppy.backends.supervisor logs RUN_DIR [--follow]
    python -m mudpuppy.backends.supervisor cancel RUN_DIR

RUN_DIR holds ``output.log`` (job + supervisor lines), ``state.json`` (written atomically after every change)
and ``supervisor.pid``. The supervisor leads its own process group (the caller starts it with setsid), so
cancel signals the whole group: supervisor, torchrun and every rank. Secrets arrive as one JSON object on
stdin and live only in the child's environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2
EXIT_REQUEUE = 75
LOG = "output.log"
STATE = "state.json"
PIDFILE = "supervisor.pid"
CANCEL_GRACE_S = 30.0


def write_state(run_dir: Path, **state: Any) -> None:
    state["updated"] = time.time()
    tmp = run_dir / f".{STATE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, sort_keys=True))
    os.replace(tmp, run_dir / STATE)


def read_state(run_dir: Path) -> dict[str, Any]:
    """The last state written, corrected to ``failed`` when the supervisor died without saying so."""
    try:
        state: dict[str, Any] = json.loads((run_dir / STATE).read_text())
    except FileNotFoundError:
        if not run_dir.is_dir():
            return {"state": "unknown", "reason": f"no run folder {run_dir}"}
        return {"state": "pending", "reason": "supervisor starting"}
    except json.JSONDecodeError:
        return {"state": "unknown", "reason": "state file unreadable"}
    if state.get("state") in ("running", "pending") and not _alive(state.get("supervisor_pid")):
        state["state"] = "failed"
        state["reason"] = "the supervisor process died (host rebooted or process killed)"
    return state


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, parent has not reaped it yet) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class Supervisor:
    def __init__(self, run_dir: Path, command: list[str], retries: int, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.command = command
        self.retries = retries
        self.env = env
        self.child: subprocess.Popen[bytes] | None = None
        self.cancelling = False
        self.attempt = 0

    def say(self, line: str) -> None:
        print(f"[mudpuppy supervisor] {line}", flush=True)

    def state(self, state: str, **extra: Any) -> None:
        write_state(
            self.run_dir,
            state=state,
            attempts=self.attempt,
            supervisor_pid=os.getpid(),
            child_pid=self.child.pid if self.child else None,
            **extra,
        )

    def _on_term(self, signum: int, _frame: Any) -> None:
        self.cancelling = True
        self._forward(signum)

    def _forward(self, signum: int, _frame: Any = None) -> None:
        if self.child and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGUSR1, self._forward)
        (self.run_dir / PIDFILE).write_text(str(os.getpid()))
        code = 1
        while True:
            self.attempt += 1
            env = {**self.env, "MUDPUPPY_ATTEMPT": str(self.attempt - 1)}  # 0 on the first run (contract)
            self.say(f"attempt {self.attempt}/{self.retries + 1}: {' '.join(self.command)}")
            self.child = subprocess.Popen(self.command, env=env, cwd=self.run_dir)
            self.state("running")
            code = self._wait()
            if self.cancelling:
                self.say(f"cancelled (job exit code {code})")
                self.state("cancelled", exit_code=code, reason="cancelled by user")
                return 143
            if code == 0:
                self.say("job finished")
                self.state("succeeded", exit_code=0)
                return 0
            if code == EXIT_REQUEUE and self.attempt <= self.retries:
                self.say(f"job was preempted (exit {EXIT_REQUEUE}); restarting from its checkpoint")
                continue
            reason = _reason(code, self.attempt, self.retries)
            self.say(f"job failed: {reason}")
            self.state("failed", exit_code=code, reason=reason)
            return code if code > 0 else 1

    def _wait(self) -> int:
        assert self.child is not None
        while True:
            try:
                return self.child.wait()
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue


def _reason(code: int, attempt: int, retries: int) -> str:
    if code == EXIT_REQUEUE:
        return f"preempted {attempt} times; launch.retries={retries} exhausted"
    if code == EXIT_USER_ERROR:
        return "user error (exit 2): see the last lines of the log"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def cancel(run_dir: Path, grace_s: float = CANCEL_GRACE_S) -> bool:
    """SIGTERM the supervisor's process group, SIGKILL after ``grace_s``; False if nothing was running."""
    try:
        pid = int((run_dir / PIDFILE).read_text())
    except (FileNotFoundError, ValueError):
        return False
    if not _alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    state = read_state(run_dir)
    if state.get("state") not in ("cancelled", "succeeded", "failed"):
        write_state(run_dir, **{**state, "state": "cancelled", "reason": "killed after the grace period"})
    return True


_TERMINAL = ("succeeded", "failed", "cancelled", "unknown")


def iter_logs(run_dir: Path, follow: bool, poll_s: float = 0.5) -> Iterator[str]:
    """The log's lines; with ``follow``, keep reading until the run reaches a terminal state."""
    path = run_dir / LOG
    while not path.exists():
        if not follow or read_state(run_dir).get("state") in _TERMINAL:
            return
        time.sleep(poll_s)
    with open(path, encoding="utf-8", errors="replace") as fh:
        while True:
            line = fh.readline()
            if line:
                yield line
                continue
            if not follow:
                return
            if read_state(run_dir).get("state") in _TERMINAL:
                yield from fh.readlines()
                return
            time.sleep(poll_s)


def logs(run_dir: Path, follow: bool) -> None:
    for line in iter_logs(run_dir, follow):
        sys.stdout.write(line)
        sys.stdout.flush()


def start_detached(
    run_dir: Path, command: list[str], retries: int, python: str, env: dict[str, str], secrets: dict[str, str]
) -> int:
    """Start a supervisor in its own session, output to RUN_DIR/output.log; returns its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "mudpuppy.backends.supervisor", "start", "--retries", str(retries)]
    if secrets:
        argv.append("--secrets-stdin")
    argv.append(str(run_dir))
    with open(run_dir / LOG, "ab") as log:
        proc = subprocess.Popen(
            [*argv, "--", *command],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=run_dir,
        )
    assert proc.stdin is not None
    if secrets:
        proc.stdin.write(json.dumps(secrets).encode())
    proc.stdin.close()
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mudpuppy.backends.supervisor")
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start")
    start.add_argument("run_dir", type=Path)
    start.add_argument("--retries", type=int, default=0)
    start.add_argument("--secrets-stdin", action="store_true")
    start.add_argument("command", nargs=argparse.REMAINDER)
    spawn = sub.add_parser("spawn", help="start detached, secrets JSON on stdin; prints the supervisor pid")
    spawn.add_argument("run_dir", type=Path)
    spawn.add_argument("--retries", type=int, default=0)
    spawn.add_argument("command", nargs=argparse.REMAINDER)
    for name in ("status", "cancel"):
        sub.add_parser(name).add_argument("run_dir", type=Path)
    log_parser = sub.add_parser("logs")
    log_parser.add_argument("run_dir", type=Path)
    log_parser.add_argument("--follow", action="store_true")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.expanduser()
    if args.action == "status":
        print(json.dumps(read_state(run_dir), sort_keys=True))
        return 0
    if args.action == "cancel":
        print(json.dumps({"cancelled": cancel(run_dir)}))
        return 0
    if args.action == "logs":
        logs(run_dir, args.follow)
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error(f"{args.action} needs a command after --")
    if args.action == "spawn":
        secrets = {str(k): str(v) for k, v in json.loads(sys.stdin.read() or "{}").items()}
        pid = start_detached(run_dir, command, args.retries, sys.executable, dict(os.environ), secrets)
        print(pid)
        return 0
    env = dict(os.environ)
    if args.secrets_stdin:
        env.update({str(k): str(v) for k, v in json.loads(sys.stdin.read() or "{}").items()})
    run_dir.mkdir(parents=True, exist_ok=True)
    write_state(run_dir, state="pending", attempts=0, supervisor_pid=os.getpid())
    return Supervisor(run_dir, command, args.retries, env).run()


if __name__ == "__main__":
    sys.exit(main())
