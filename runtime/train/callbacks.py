"""Trainer callbacks: one progress line per log, metrics.jsonl, the loss watchdog, preemption stops.

The progress line counts only real (non-pad) tokens for tokens/s, so packed and unpacked runs compare honestly.
``metrics.jsonl`` gets one JSON object per log event (with ``max_steps`` and the wall-clock ``time``, which
``mudpuppy status`` reads for progress and ETA); on resume, entries past the resumed step are dropped so
the file reads as one uninterrupted curve.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from transformers import TrainerCallback

from mudpuppy.runtime.train.signals import PreemptionWatcher, agreed

METRICS_FILE = "metrics.jsonl"


class ProgressCallback(TrainerCallback):
    def __init__(self, output_dir: Path, stream: TextIO | None = None) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self.stream = stream or sys.stdout
        self._rich = None
        if self.stream.isatty():
            try:
                from rich.console import Console

                self._rich = Console(file=self.stream, highlight=False)
            except ImportError:
                self._rich = None
        self.start_time = time.monotonic()
        self.start_step = 0
        self.last_time = self.start_time
        self.last_tokens = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start_time = self.last_time = time.monotonic()
        self.start_step = state.global_step
        self.last_tokens = state.num_input_tokens_seen
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _truncate_after(self.path, state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        now = time.monotonic()
        record: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        record.update({k: v for k, v in logs.items() if k != "epoch"})
        is_train_step = "loss" in logs
        if is_train_step:
            tokens = state.num_input_tokens_seen - self.last_tokens
            elapsed = max(now - self.last_time, 1e-9)
            record["tokens_per_second"] = round(tokens / elapsed, 1)
            self.last_time, self.last_tokens = now, state.num_input_tokens_seen
        # for `mudpuppy status` / `runs`: how far along (max_steps) and when (wall clock, for the ETA)
        record["max_steps"] = state.max_steps
        record["time"] = round(time.time(), 3)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
        self._print(self._line(record, state, now, is_train_step))

    def _line(self, record: dict[str, Any], state: Any, now: float, is_train_step: bool) -> str:
        total = state.max_steps or 0
        head = f"step {state.global_step}/{total}"
        if not is_train_step:
            parts = [f"{k} {_fmt(v)}" for k, v in record.items() if k.startswith("eval_") and "per_second" not in k]
            if not parts:
                parts = [f"{k} {_fmt(v)}" for k, v in record.items() if k not in ("step", "epoch", "max_steps", "time")]
            return " | ".join([head, *parts])
        done = state.global_step - self.start_step
        eta = (now - self.start_time) / done * (total - state.global_step) if done > 0 and total else 0.0
        parts = [head, f"loss {record['loss']:.4f}"]
        if "learning_rate" in record:
            parts.append(f"lr {record['learning_rate']:.2e}")
        if record.get("grad_norm") is not None:
            parts.append(f"grad {float(record['grad_norm']):.3f}")
        parts.append(f"{record['tokens_per_second']:,.0f} tok/s")
        parts.append(f"eta {_duration(eta)}")
        return " | ".join(parts)

    def _print(self, line: str) -> None:
        if self._rich is not None:
            self._rich.print(f"[cyan]{line}[/cyan]")
        else:
            print(line, file=self.stream, flush=True)


class LossWatchdogCallback(TrainerCallback):
    """Stop a run whose loss stays above ``threshold`` for ``patience`` consecutive logs (Axolotl's watchdog)."""

    def __init__(self, threshold: float, patience: int = 3) -> None:
        self.threshold = threshold
        self.patience = patience
        self.strikes = 0
        self.tripped = False

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        self.strikes = self.strikes + 1 if (loss > self.threshold or math.isnan(loss)) else 0
        if self.strikes >= self.patience:
            self.tripped = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                print(f"mudpuppy: loss {loss:.4f} above loss_watchdog_threshold {self.threshold} for "
                      f"{self.strikes} logs; stopping", file=sys.stderr, flush=True)


class SaveFirstStepCallback(TrainerCallback):
    """``save_first_step``: a checkpoint right after step 1 (catches a broken save path before hours pass)."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 1:
            control.should_save = True


class PreemptionCallback(TrainerCallback):
    """After each optimizer step: if a preemption signal arrived, save now and stop."""

    def __init__(self, watcher: PreemptionWatcher) -> None:
        self.watcher = watcher
        self.preempted = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if agreed(self.watcher.requested, device=args.device):
            self.preempted = True
            control.should_save = True
            control.should_evaluate = False
            control.should_training_stop = True


class NothingLeftToTrain(Exception):
    """Raised by ``EndReachedCallback``: the resumed checkpoint already is the last step."""

    def __init__(self, step: int) -> None:
        super().__init__(f"resumed at step {step}, the last one")
        self.step = step


class EndReachedCallback(TrainerCallback):
    """Stop before any step when the resumed checkpoint is already at ``max_steps``.

    transformers checks ``max_steps`` only after a step, so resuming ``checkpoint-12`` of a 12-step run (the
    final outputs were lost after the last checkpoint) trained step 13/12, with the schedule wrapping around.
    ``on_train_begin`` runs after the checkpoint's weights and state are loaded; the caller catches the
    exception and writes the final outputs from those weights.
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise NothingLeftToTrain(state.global_step)


def _truncate_after(path: Path, step: int) -> None:
    """Keep only entries up to ``step`` (a resumed run re-logs what came after its checkpoint)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    from mudpuppy.runtime.checkpoints.manifest import write_text_atomic

    write_text_atomic(path, "".join(k + "\n" for k in kept))


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
