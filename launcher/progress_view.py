"""One run's progress and elapsed cost as display fields, shared by ``status RUN`` and the ``runs`` table.

Elapsed cost = wall time since submission (until the last registry update once the run is over; queueing
included) x the GPUs it asked for x the price per GPU-hour of its backend (the spot price when ``launch.spot``;
Modal's preemptible rate unless ``launch.modal.nonpreemptible``). Unknown prices leave the GPU-hours alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mudpuppy.launcher import progress as prog

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class View:
    progress: prog.Progress
    elapsed_s: float
    gpu_hours: float | None
    cost: float | None
    price_note: str

    def fields(self) -> dict[str, Any]:
        p = self.progress
        return {
            "step": p.step, "total_steps": p.total, "loss": p.loss, "eval_loss": p.eval_loss,
            "tokens_per_second": p.tokens_per_second, "eta_s": p.eta_s, "progress_source": p.source or None,
            "progress_problem": p.problem or None, "elapsed_s": round(self.elapsed_s, 1),
            "gpu_hours": None if self.gpu_hours is None else round(self.gpu_hours, 4),
            "cost_usd": None if self.cost is None else round(self.cost, 2), "price": self.price_note or None,
        }


def gpus_of(launch: dict[str, Any]) -> int:
    from mudpuppy.launcher.estimate import parse_gpus

    try:
        _kind, count = parse_gpus(launch.get("gpus"))
    except ValueError:
        return 0
    return count * int(launch.get("nodes") or 1)


def price_per_gpu_hour(launch: dict[str, Any], *, allow_slow: bool, run_id: str | None = None,
                       now: float | None = None) -> tuple[float | None, str]:
    """($ per GPU-hour that applies to this run, where it comes from). SkyPilot's catalog costs a process start
    in SkyPilot's environment: asked only when ``allow_slow`` (``status``), and kept for the day per run so
    ``runs`` and the next ``status`` reuse it."""
    backend = launch.get("backend")
    if backend not in ("modal", "skypilot") or not launch.get("gpus"):
        return None, ""
    if backend != "skypilot":
        return _lookup(launch)
    cache = _price_cache(run_id) if run_id else None
    if cache is not None:
        try:
            stored = json.loads(cache.read_text())
            if prog.same_day(stored["at"], now):
                return stored["value"], stored["note"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if not allow_slow:
        return None, ""
    value, note = _lookup(launch)
    if cache is not None and value is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"at": now or time.time(), "value": value, "note": note}))
        except OSError:
            pass
    return value, note


def _price_cache(run_id: str) -> Path:
    from mudpuppy.launcher.registry import state_dir

    return state_dir() / "progress" / f"{run_id}.price.json"


def _lookup(launch: dict[str, Any]) -> tuple[float | None, str]:
    from mudpuppy.launcher import estimate_prices
    from mudpuppy.launcher.config.schema.launch import LaunchSection
    from mudpuppy.launcher.errors import UserError

    backend = launch.get("backend")
    try:
        section = LaunchSection.model_validate(launch)
        price = estimate_prices.for_launch(section)
    except (UserError, ValueError) as exc:
        return None, f"no price: {exc}"
    if price is None:
        return None, ""
    spot = not section.modal.nonpreemptible if backend == "modal" else section.spot
    value = price.spot if spot and price.spot is not None else price.on_demand
    kind = "spot" if spot and price.spot is not None else "on-demand"
    return value, f"{kind} ${value:,.2f}/GPU-h, {price.source.split(' (')[0]} as of {price.as_of}" if value else ""


def build(record: Any, *, use_logs: bool, logs: Any = None, now: float | None = None,
          allow_slow_price: bool = False) -> View:
    now = now or time.time()
    launch = prog.launch_of(record)
    progress = prog.read_progress(record, use_logs=use_logs, logs=logs, remote=use_logs)
    if progress.step is None:
        cached = prog.load_cached(record.id)
        if cached is not None and cached.step is not None and (use_logs or prog.same_day(cached.as_of, now)):
            cached.source = f"{cached.source} (cached {time.strftime('%H:%M', time.localtime(cached.as_of))})"
            progress = cached
    elif use_logs:
        prog.save_cached(record.id, progress)
    end = record.updated if record.status in TERMINAL else now
    elapsed = max(0.0, end - record.created)
    count = gpus_of(launch)
    gpu_hours = elapsed / 3600 * count if count else None
    price, note = price_per_gpu_hour(launch, allow_slow=allow_slow_price, run_id=record.id, now=now)
    cost = price * gpu_hours if price is not None and gpu_hours is not None else None
    return View(progress, elapsed, gpu_hours, cost, note)


def step_text(p: prog.Progress) -> str:
    if p.step is None:
        return "-"
    return f"{p.step}/{p.total}" if p.total else str(p.step)


def number(value: float | None, fmt: str = "{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)
