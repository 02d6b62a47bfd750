"""Local checkpoints that are either complete or invisible.

A checkpoint is written into ``output_dir/.staging/checkpoint-N``, renamed to ``output_dir/checkpoint-N`` when
every file is down, and only then gets its manifest (written last, atomically). A crash or a second signal at
any moment therefore leaves either the previous complete checkpoints untouched plus debris that readers skip, or a
new complete one. Rotation (``save_total_limit``) counts complete checkpoints only and never removes the newest
one, nor the best one when ``load_best_model_at_end`` tracks it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mudpuppy.runtime.checkpoints.manifest import (
    checkpoint_step,
    complete_checkpoints,
    read_manifest,
    write_manifest,
)

STAGING_DIR = ".staging"


def staging_root(output_dir: Path) -> Path:
    return output_dir / STAGING_DIR


def publish(staged: Path, output_dir: Path, step: int) -> Path:
    """Move a fully written ``staged`` checkpoint into place and write its manifest last."""
    final = output_dir / f"checkpoint-{step}"
    if final.exists():
        # an incomplete leftover (or a re-save of the same step after a resume): never merge into it
        doomed = output_dir / f".{final.name}.old-{os.getpid()}"
        os.replace(final, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    os.replace(staged, final)
    _fsync_dir(output_dir)
    write_manifest(final, step)
    return final


def rotate(output_dir: Path, limit: int | None, *, keep: Path | None = None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``limit`` and incomplete debris older than the newest."""
    removed: list[Path] = []
    complete = complete_checkpoints(output_dir)
    if complete:
        newest_step = checkpoint_step(complete[-1]) or 0
        for child in output_dir.iterdir():
            step = checkpoint_step(child)
            if step is not None and child.is_dir() and read_manifest(child) is None and step < newest_step:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    if limit is None or limit < 1:
        return removed
    protected = {complete[-1].resolve()} if complete else set()
    if keep is not None:
        protected.add(Path(keep).resolve())
    surplus = len(complete) - limit
    for path in complete:
        if surplus <= 0:
            break
        if path.resolve() in protected:
            continue
        _remove_complete(path)
        removed.append(path)
        surplus -= 1
    return removed


def clear_staging(output_dir: Path) -> None:
    shutil.rmtree(staging_root(output_dir), ignore_errors=True)


def _remove_complete(path: Path) -> None:
    """Invalidate first (manifest gone = invisible), then delete, so a crash mid-delete leaves no half-valid one."""
    from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME

    (path / MANIFEST_NAME).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
