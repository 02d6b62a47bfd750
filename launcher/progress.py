"""How far a run is: its ``metrics.jsonl`` read from wherever this machine can reach it, reduced to one summary.

Where the file is (first that answers, newest step wins when several do):

- the run's output folder when it is on this machine or a filesystem this machine shares (local backend, SLURM
  submitted from here, SSH with ``launch.ssh.shared_fs``): ``RunRecord.output`` is ``session:path``;
- ``launch.volume`` (``file://`` here; ``s3://`` / ``gs://`` through fsspec): the runtime mirrors ``metrics.jsonl``
  there after each checkpoint upload and at the end;
- the backend's logs (``status`` only, never ``runs``): the runtime's progress lines ``step N/T | loss ...``.

Every reader is tolerant: a missing file, a half-written last line (the runtime appends while we read), a line
of garbage or a non-object is skipped and counted; the result says what it could not read instead of raising.
Summaries are cached per run in the state dir so ``runs`` can show a remote run's last known progress (dated)
without asking its backend again.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
# the runtime's progress line (runtime/train/callbacks.py ProgressCallback._line)
_LINE = re.compile(r"step (?P<step>\d+)/(?P<total>\d+) \| loss (?P<loss>[-+0-9.eEnaif]+)"
                   r"(?:.*?\| (?P<tps>[0-9,.]+) tok/s)?(?:.*?\| eta (?P<eta>\d+:\d\d:\d\d))?")


@dataclass
class Metrics:
    """The parsed records of one ``metrics.jsonl`` (train steps and evals), and what could not be read."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    source: str = ""

    @property
    def train(self) -> list[dict[str, Any]]:
        return [r for r in self.records if _number(r.get("loss")) is not None and _number(r.get("step")) is not None]

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of every record that has ``key`` as a finite number, in file order."""
        xs, ys = [], []
        for r in self.records:
            step, value = _number(r.get("step")), _number(r.get(key))
            if step is not None and value is not None:
                xs.append(step)
                ys.append(value)
        return xs, ys


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def parse_metrics(text: str, source: str = "") -> Metrics:
    metrics = Metrics(source=source)
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            metrics.skipped += 1
            continue
        if isinstance(record, dict):
            metrics.records.append(record)
        else:
            metrics.skipped += 1
    return metrics


# a summary needs only the newest records: `runs` reads this much of each file's end, not a long run's whole log
SUMMARY_TAIL_BYTES = 256 * 1024


def read_metrics_file(path: Path, tail: int | None = None) -> Metrics | None:
    """The file's records; with ``tail``, only those in its last ``tail`` bytes (the cut first line is dropped)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            start = max(0, size - tail) if tail else 0
            handle.seek(start)
            data = handle.read()
    except OSError:
        return None
    if start:
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return parse_metrics(data.decode("utf-8", errors="replace"), str(path))


@dataclass
class Progress:
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None
    eta_s: float | None = None
    source: str = ""
    as_of: float | None = None     # when this was read (cached summaries keep their time)
    problem: str = ""              # what could not be read, one line

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(metrics: Metrics, now: float | None = None) -> Progress:
    train = metrics.train
    progress = Progress(source=metrics.source, as_of=now or time.time())
    if metrics.skipped:
        progress.problem = f"{metrics.skipped} unreadable line(s) in {metrics.source or METRICS_FILE} skipped"
    if not train:
        if not progress.problem:
            progress.problem = f"no training step logged yet in {metrics.source or METRICS_FILE}"
        return progress
    last = train[-1]
    # the step count: the newest record of any kind (the end-of-training summary comes after an unlogged last step)
    progress.step = int(max(_number(r.get("step")) or 0 for r in metrics.records))
    total = _number(last.get("max_steps"))
    progress.total = int(total) if total else None
    progress.loss = _number(last.get("loss"))
    progress.tokens_per_second = _number(last.get("tokens_per_second"))
    evals = metrics.series("eval_loss")[1]
    progress.eval_loss = evals[-1] if evals else None
    progress.eta_s = _eta(train, progress.total)
    return progress


def _eta(train: list[dict[str, Any]], total: int | None) -> float | None:
    """Seconds left at the pace of this attempt's logged steps (wall ``time`` per record)."""
    timed = [(float(r["step"]), float(r["time"])) for r in train if _number(r.get("time")) is not None]
    if not total or len(timed) < 2:
        return None
    # only the newest attempt: a resumed run's log jumps in time between its checkpoint step and the next one
    pace = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(timed, timed[1:], strict=False) if s1 > s0]
    recent = sorted(pace[-5:])
    typical = recent[len(recent) // 2] if recent else 0.0
    start = len(timed) - 1
    while start > 0:
        (s0, t0), (s1, t1) = timed[start - 1], timed[start]
        if s1 <= s0 or t1 < t0 or (typical > 0 and (t1 - t0) / (s1 - s0) > 20 * typical):
            break
        start -= 1
    (s0, t0), (s1, t1) = timed[start], timed[-1]
    if s1 <= s0 or t1 <= t0:
        return None
    return max(0.0, (total - s1) * (t1 - t0) / (s1 - s0))


def from_log_lines(lines: Iterable[str], source: str) -> Progress:
    """The newest ``step N/T | loss ...`` line of the runtime's output (when no metrics file is reachable)."""
    found = None
    for line in lines:
        for match in _LINE.finditer(line):
            found = match
    if found is None:
        return Progress(source=source, as_of=time.time(), problem=f"no progress line in {source} yet")
    eta = found.group("eta")
    seconds = None
    if eta:
        h, m, s = (int(x) for x in eta.split(":"))
        seconds = float(h * 3600 + m * 60 + s)
    try:
        loss: float | None = float(found.group("loss"))
    except ValueError:
        loss = None
    tps = found.group("tps")
    return Progress(step=int(found.group("step")), total=int(found.group("total")), loss=loss,
                    tokens_per_second=float(tps.replace(",", "")) if tps else None, eta_s=seconds,
                    source=source, as_of=time.time())


# --- where a run's metrics live -----------------------------------------------------------------------------
def launch_of(record: Any) -> dict[str, Any]:
    try:
        data = json.loads(record.launch or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def local_output_dir(record: Any) -> Path | None:
    """The run's ``output_dir`` when this machine sees it (same host, or a filesystem shared with the nodes)."""
    if not record.output or ":" not in record.output:
        return None
    session, path = record.output.split(":", 1)
    path = path.split(" (", 1)[0].strip()
    launch = launch_of(record)
    here = session in (socket.gethostname(), "local", "localhost")
    shared = record.backend == "ssh" and bool((launch.get("ssh") or {}).get("shared_fs"))
    if not (here or shared) or not path.startswith("/"):
        return None
    folder = Path(path)
    return folder if folder.is_dir() else None


def volume_metrics(url: str, options: dict[str, Any] | None = None, tail: int | None = None) -> Metrics | None:
    """``metrics.jsonl`` at the root of a volume URL, opened the way the runtime opens it (same endpoint and
    credential rules); None when it is not there or the store is unreachable."""
    if url.startswith("file://"):
        return read_metrics_file(Path(url[len("file://"):]) / METRICS_FILE, tail)
    if not url.startswith(("s3://", "gs://")):
        return None  # modal:// is only mounted inside Modal's containers
    try:
        from mudpuppy.runtime.checkpoints.volume import open_volume

        volume = open_volume(url, options)
        data = volume.fs.cat_file(volume.path(METRICS_FILE))
    except Exception:  # missing file, no credentials, no network, fsspec plugin not installed: all "unknown"
        return None
    return parse_metrics(data.decode("utf-8", errors="replace"), f"{url.rstrip('/')}/{METRICS_FILE}")


def reachable_metrics(record: Any, *, remote: bool = True, tail: int | None = None) -> list[Metrics]:
    """Every copy of the run's ``metrics.jsonl`` this machine reaches: output folder, then volume (an object store
    only when ``remote``: ``runs`` never waits on the network per row)."""
    found: list[Metrics] = []
    folder = local_output_dir(record)
    if folder is not None:
        metrics = read_metrics_file(folder / METRICS_FILE, tail)
        if metrics is not None:
            found.append(metrics)
    launch = launch_of(record)
    volume = launch.get("volume")
    if isinstance(volume, str) and volume and (remote or volume.startswith("file://")):
        options = (launch.get("options") or {}).get("volume")
        metrics = volume_metrics(volume, options if isinstance(options, dict) else None, tail)
        if metrics is not None:
            found.append(metrics)
    return found


def newest_metrics(record: Any) -> Metrics | None:
    """The reachable copy with the most training steps (the output folder is ahead of the volume while it runs)."""
    found = reachable_metrics(record)
    return max(found, key=lambda m: (len(m.train), -found.index(m))) if found else None


def read_progress(record: Any, *, use_logs: bool = False, logs: Any = None, remote: bool = True) -> Progress:
    """The freshest progress this machine can read for ``record`` (see the module docstring for the order)."""
    summaries = [summarize(m) for m in reachable_metrics(record, remote=remote, tail=SUMMARY_TAIL_BYTES)]
    with_steps = [s for s in summaries if s.step is not None]
    if with_steps:
        return max(with_steps, key=lambda s: s.step or 0)
    if use_logs and logs is not None:
        try:
            from_logs = from_log_lines(logs(), f"{record.backend} logs")
        except Exception as exc:  # an unreachable host or SDK problem: progress unknown, said in one line
            from_logs = Progress(problem=f"{record.backend} logs unreadable: {str(exc).splitlines()[0][:200]}"
                                 if str(exc) else f"{record.backend} logs unreadable: {type(exc).__name__}")
        if from_logs.step is not None or not summaries:
            return from_logs
    if summaries:
        return summaries[0]
    return Progress(problem="no metrics.jsonl reachable from here (output folder, volume)")


# --- cache, so `runs` stays fast -----------------------------------------------------------------------------
def _cache_path(run_id: str) -> Path:
    from mudpuppy.launcher.registry import state_dir

    return state_dir() / "progress" / f"{run_id}.json"


def save_cached(run_id: str, progress: Progress) -> None:
    path = _cache_path(run_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(progress.to_dict()))
        tmp.replace(path)
    except OSError:
        pass  # a cache: losing it costs one backend call later


def load_cached(run_id: str, max_age_s: float | None = None, now: float | None = None) -> Progress | None:
    """A summary stored by ``status`` (or an earlier ``runs``); None when absent, unreadable or too old."""
    try:
        data = json.loads(_cache_path(run_id).read_text())
        progress = Progress(**{k: data.get(k) for k in Progress.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None
    if max_age_s is not None and (progress.as_of is None or (now or time.time()) - progress.as_of > max_age_s):
        return None
    return progress


def same_day(when: float | None, now: float | None = None) -> bool:
    if when is None:
        return False
    return time.strftime("%Y-%m-%d", time.localtime(when)) == time.strftime("%Y-%m-%d", time.localtime(now))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
