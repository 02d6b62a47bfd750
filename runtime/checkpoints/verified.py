"""Which local checkpoint may a run resume from? Only one whose every byte matches its manifest.

Why: sizes catch a truncated write but not a flipped bit (a bad disk, a torn copy, a storage bug); resuming from
such a checkpoint silently trains on damaged weights or optimizer state. So the chosen checkpoint is hashed
(sha256 of every file the manifest lists) before a run resumes from it, newest first:

- a checkpoint-N folder without a manifest is a save that died half-way: skipped quietly, as before;
- one whose manifest is there but unreadable, or does not match the files, is *bad*: one warning line names the
  file, the folder is moved aside to ``.checkpoint-N.corrupt-<time>`` (kept for inspection, invisible to
  rotation, uploads and outputs) and the previous verified one is used;
- when bad ones exist and none verifies, the run refuses (``UserError``, exit 2) instead of training from step 0
  over them, and leaves every file where it was.

Only the main process moves folders (``is_main``); other ranks make the same choice read-only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME, Manifest, checkpoint_step, sha256_file

log = logging.getLogger(__name__)

CORRUPT_MARK = ".corrupt-"

# (folder, (path, inode, size, mtime) of every file in it) -> problem ("" = verified): hashing a 10 GB checkpoint
# twice in one start-up (volume restore, then resume) would double its cost; any rewrite changes the key
_checked: dict[tuple[str, tuple[tuple[str, int, int, int], ...]], str] = {}


@dataclass
class LocalScan:
    """The newest verified checkpoint under an output folder, and the bad ones newer than it."""

    verified: Path | None = None
    bad: list[tuple[Path, str]] = field(default_factory=list)  # (folder, problem naming the file), newest first

    @property
    def verified_step(self) -> int | None:
        return checkpoint_step(self.verified) if self.verified is not None else None


def problem(directory: Path) -> str | None:
    """None when ``directory`` has no manifest (an interrupted save); "" when every file matches its manifest;
    otherwise what is wrong, naming the file."""
    if not (directory / MANIFEST_NAME).is_file():
        return None
    try:
        stats = tuple(sorted((str(p), (st := p.stat()).st_ino, st.st_size, st.st_mtime_ns)
                             for p in directory.rglob("*") if p.is_file()))
    except OSError:  # a file vanished while we looked (another rank set the folder aside)
        return _check(directory)
    key = (str(directory.resolve()), stats)
    if key not in _checked:
        _checked[key] = _check(directory)
    return _checked[key]


def _check(directory: Path) -> str:
    manifest_path = directory / MANIFEST_NAME
    try:
        manifest = Manifest.from_json(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return f"{manifest_path}: truncated or unreadable manifest"
    for entry in manifest.files:
        path = directory / entry.path
        try:
            size = path.stat().st_size
            if size != entry.size:
                return f"{path}: {size} bytes, manifest says {entry.size}"
            if sha256_file(path) != entry.sha256:
                return f"{path}: sha256 differs from the manifest (same size, damaged content)"
        except OSError:
            return f"{path}: missing"
    return ""


def scan(output_dir: Path) -> LocalScan:
    """Walk ``checkpoint-N`` folders newest first until one verifies (hashing only what it must)."""
    result = LocalScan()
    if not output_dir.is_dir():
        return result
    found = sorted(((checkpoint_step(p), p) for p in output_dir.iterdir() if checkpoint_step(p) is not None),
                   key=lambda sp: sp[0] or 0, reverse=True)
    for _, path in found:
        if not path.is_dir():
            continue
        why = problem(path)
        if why is None:
            continue
        if why == "":
            result.verified = path
            return result
        result.bad.append((path, why))
    return result


def refuse(output_dir: Path, bad: Iterable[str]) -> UserError:
    listed = "; ".join(bad)
    return UserError(
        f"no checkpoint in {output_dir} passed sha256 verification ({listed}); refusing to train from step 0 over "
        "them",
        hint=f"move the damaged checkpoint-N folders out of {output_dir} (or restore them from a copy), then rerun",
    )


def quarantine(directory: Path) -> Path:
    """Move a bad checkpoint aside under a hidden name nothing reads, rotates, uploads or deletes."""
    target = directory.with_name(f".{directory.name}{CORRUPT_MARK}{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.replace(directory, target)
    return target


def choose(output_dir: Path, *, is_main: bool = True) -> Path | None:
    """The newest verified checkpoint to resume from, setting bad newer ones aside with one line each."""
    found = scan(output_dir)
    if found.bad and found.verified is None:
        raise refuse(output_dir, [why for _, why in found.bad])
    for path, why in found.bad:
        if not is_main:
            continue
        kept = quarantine(path)
        assert found.verified is not None
        log.warning("%s failed verification (%s); resuming from %s instead; the damaged copy is kept as %s",
                    path.name, why, found.verified.name, kept.name)
    return found.verified


def check_explicit(directory: Path) -> None:
    """``resume_from_checkpoint`` names a folder: when it has a manifest, every file must match it; one made
    elsewhere (Axolotl, plain transformers) has none and is used as it is, with a warning saying so."""
    why = problem(directory)
    if why is None:
        log.warning("resume_from_checkpoint: %s has no %s; resuming without sha256 verification",
                    directory, MANIFEST_NAME)
    elif why:
        raise UserError(f"resume_from_checkpoint: {directory} failed verification: {why}",
                        hint="pick another checkpoint-N folder, or restore this one from a copy")
