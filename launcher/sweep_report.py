"""``runs --group G``: a sweep's members side by side with their final metrics, best first.

The numbers come from each member's ``metrics.jsonl`` (the runtime's log of every logging step) wherever the run
wrote it: its output folder on this machine or a shared filesystem, the output folder on the SSH host or SLURM
login node it ran on, a ``file://`` volume's copy, or for Ray the final outputs in Ray Train's storage folder.
Best means the lowest final ``eval_loss``; members without an eval loss are ranked after those with one, by their
final training loss.
"""

from __future__ import annotations

import json
import math
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mudpuppy.launcher.locations import split_output
from mudpuppy.launcher.registry import RunRecord

METRICS = "metrics.jsonl"


@dataclass
class MemberResult:
    record: RunRecord
    step: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None  # the highest logged (the schedule's peak: the configured rate)
    source: str | None = None  # where the metrics were read


def summarize(lines: list[str]) -> dict[str, Any]:
    """Final step, train loss and eval loss, and the peak logged learning rate, from metrics.jsonl lines."""
    out: dict[str, Any] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a running writer
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("step"), int):
            out["step"] = max(out.get("step", 0), entry["step"])
        for key in ("loss", "eval_loss"):
            if _number(entry.get(key)):
                out[key] = float(entry[key])
        if _number(entry.get("learning_rate")):
            out["learning_rate"] = max(out.get("learning_rate", 0.0), float(entry["learning_rate"]))
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(record: RunRecord) -> tuple[list[str], str] | None:
    """The member's metrics.jsonl lines and where they came from, or None when no copy can be reached."""
    if record.backend == "ray":  # the final outputs are Ray's last checkpoint: STORAGE/RUN/final
        storage = _ray_storage(record)
        copy = Path(storage) / record.id / "final" / METRICS if storage else None
        if copy is not None and copy.is_file():
            return copy.read_text(errors="replace").splitlines(), str(copy)
        return None
    location = split_output(record.output)
    if location:
        session, path = location
        local = Path(path) / METRICS
        if local.is_file():
            return local.read_text(errors="replace").splitlines(), str(local)
        remote = _remote_text(record, session, f"{path}/{METRICS}")
        if remote is not None:
            return remote.splitlines(), f"{session}:{path}/{METRICS}"
    volume = _volume(record)
    if volume and volume.startswith("file://"):
        copy = Path(volume.removeprefix("file://")) / METRICS
        if copy.is_file():
            return copy.read_text(errors="replace").splitlines(), str(copy)
    return None


def _launch(record: RunRecord) -> dict[str, Any]:
    try:
        launch = json.loads(record.launch or "{}")
    except json.JSONDecodeError:
        return {}
    return launch if isinstance(launch, dict) else {}


def _volume(record: RunRecord) -> str | None:
    value = _launch(record).get("volume")
    return value if isinstance(value, str) else None


def _ray_storage(record: RunRecord) -> str | None:
    """Ray Train's storage as a folder here (a shared path or ``file://``), else None (an object store)."""
    launch = _launch(record)
    value = (launch.get("ray") or {}).get("storage_path") or launch.get("volume")
    if not isinstance(value, str):
        return None
    value = value.removeprefix("file://")
    return None if "://" in value else value


def _remote_text(record: RunRecord, session: str, path: str) -> str | None:
    """``cat`` over the backend's own transport (SSH host, SLURM login node); None when not reachable."""
    if record.backend not in ("ssh", "slurm") or session in ("local", socket.gethostname(), ""):
        return None
    from mudpuppy.launcher.dispatch import backend_for
    from mudpuppy.launcher.errors import UserError

    try:
        backend, _ = backend_for(record)
        transport = backend.transport(session)  # type: ignore[attr-defined]
        try:
            quoted = path if path.startswith("~/") else shlex.quote(path)
            res = transport.run(f"cat {quoted}", timeout=30)
        finally:
            transport.close()
    except (UserError, OSError, ValueError):
        return None
    return res.stdout if res.code == 0 else None


def results(records: list[RunRecord]) -> list[MemberResult]:
    out = []
    for record in records:
        found = read_metrics(record)
        result = MemberResult(record)
        if found:
            lines, result.source = found
            summary = summarize(lines)
            result.step = summary.get("step")
            result.loss = summary.get("loss")
            result.eval_loss = summary.get("eval_loss")
            result.learning_rate = summary.get("learning_rate")
        out.append(result)
    return rank(out)


def rank(items: list[MemberResult]) -> list[MemberResult]:
    """Best first: by final eval loss; then those with only a train loss, by it; then those with neither."""
    def key(r: MemberResult) -> tuple[int, float, float]:
        if r.eval_loss is not None:
            return (0, r.eval_loss, r.record.created)
        if r.loss is not None:
            return (1, r.loss, r.record.created)
        return (2, 0.0, r.record.created)

    return sorted(items, key=key)


__all__ = ["MemberResult", "rank", "read_metrics", "results", "summarize"]
