"""Preprocessing under several ranks: local rank 0 tokenizes and saves, the other ranks wait and load the cache.

Without this every rank tokenized the same data at once, each with all the machine's cores (world size x cores
workers), and raced to publish the same cache folder. Now each node's local rank 0 runs the pipeline and writes
``dataset_prepared_path`` (a run-local ``.mudpuppy-prepared`` folder in ``output_dir`` when the config sets none);
the other ranks wait, then read the folder through the same fingerprint, so they never tokenize.

The wait can be long (hours of tokenization), longer than the training process group's timeout, so it runs on
its own gloo group with ``MUDPUPPY_PREPROCESS_TIMEOUT`` (default 24 h). Rank 0's outcome is broadcast: when it
fails, every rank stops with the same one-line message instead of waiting for a cache that never comes.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

RUN_LOCAL_CACHE = ".mudpuppy-prepared"
log = logging.getLogger("mudpuppy.runtime.data")


def prepare_datasets_on_ranks(cfg: Any, tokenizer: Any, env: Any) -> tuple[Any, Any]:
    """(train, eval) as ``prepare_datasets`` returns them, tokenized once per node."""
    from mudpuppy.runtime.data import preference, prepare, prepare_datasets

    if env.world_size <= 1 or preference.is_preference(cfg):
        return prepare_datasets(cfg, tokenizer)
    if not cfg.dataset_prepared_path:
        cfg = cfg.model_copy(update={"dataset_prepared_path": str(Path(cfg.output_dir) / RUN_LOCAL_CACHE)})
    import torch.distributed as dist

    from mudpuppy.runtime.parallel.dist import init_process_group

    init_process_group()
    timeout = datetime.timedelta(seconds=float(os.environ.get("MUDPUPPY_PREPROCESS_TIMEOUT", str(24 * 3600))))
    group = dist.new_group(backend="gloo", timeout=timeout)
    builder = env.local_rank == 0
    outcome: list[Any] = [None]
    result: tuple[Any, Any] | None = None
    if builder:
        try:
            result = prepare_datasets(cfg, tokenizer)
        except UserError as exc:
            outcome[0] = exc.one_line()
        except BaseException as exc:
            outcome[0] = f"preprocessing failed on rank {env.rank}: {type(exc).__name__}: {exc}"
            _share(outcome, group)
            raise
    _share(outcome, group)
    if outcome[0] is not None:
        raise UserError(str(outcome[0]))
    if result is None:  # a cache hit: the builder has just saved this fingerprint
        prepared = prepare(cfg, tokenizer)
        if not prepared.stats.from_cache:
            log.warning("rank %d found no prepared dataset from local rank 0 and tokenized itself "
                        "(is dataset_prepared_path on a node-local disk that differs between ranks?)", env.rank)
        result = _views(prepared)
    # the group is left alive: destroy_process_group() at the end of the run takes it down with the default group
    # (tearing a gloo subgroup down mid-run is one more chance for its threads to abort at exit)
    return result


def _views(p: Any) -> tuple[Any, Any]:
    train = p.train_packed if p.train_packed is not None else p.train
    evaluation = p.eval_packed if p.eval_packed is not None else p.eval
    return train, evaluation


def _share(outcome: list[Any], group: Any) -> None:
    """Every rank learns whether any builder failed (the first failure wins)."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, outcome[0], group=group)
    outcome[0] = next((o for o in gathered if o is not None), None)
