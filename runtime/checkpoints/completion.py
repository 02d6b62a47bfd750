"""A finished run stays finished: the completion marker, and the check every start makes before doing anything.

Why: backends rerun a job for reasons unrelated to training (a Modal or SkyPilot retry after the last upload, a
SLURM requeue that lands after the end, a user repeating the command). Without this, a relaunch resumed from the
final checkpoint and trained past ``max_steps``, rewriting the final adapter each time.

The marker is ``mudpuppy-outputs.json`` in ``output_dir``: the final outputs' paths, sizes and sha256 (the same
manifest format as checkpoints, with the step the run ended at). ``run_training`` writes it last, after the final
outputs are in place and uploaded to the volume (whose own copy of the same name is written by
``VolumeSync.finish``), so its presence means nothing is left to do anywhere.

A run counts as complete when that manifest parses and every file it lists exists with the listed size, in
``output_dir`` or on the run's volume. The check reads only: it never creates, downloads or rewrites a file.
To train again, point ``output_dir`` (and ``launch.volume``) somewhere new, or delete the old ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mudpuppy.launcher.contract import ENV_VOLUME
from mudpuppy.runtime.checkpoints.manifest import FileEntry, Manifest, sha256_file, write_text_atomic
from mudpuppy.runtime.checkpoints.sync import OUTPUTS_MANIFEST, output_files


@dataclass(frozen=True)
class Completion:
    """Where a finished run's outputs are (a local folder or a volume URL) and what they are."""

    location: str
    on_volume: bool
    manifest: Manifest

    def line(self, output_dir: Path, volume_url: str | None) -> str:
        """The one line a relaunch prints: complete, where, and how to train again instead."""
        step = f" at step {self.manifest.step}" if self.manifest.step >= 0 else ""
        where = f"volume {self.location}" if self.on_volume else self.location
        fresh = f"delete {output_dir}" + (f" and {volume_url}" if volume_url else "")
        new = "a new output_dir" + (" and launch.volume" if volume_url else "")
        return (f"run already complete{step}: outputs in {where} ({len(self.manifest.files)} files); "
                f"nothing to do. To train again, {fresh}, or set {new}")


def mark_complete(output_dir: Path, step: int) -> Manifest:
    """Hash the final outputs and write the marker last (atomically): the run is finished from here on."""
    entries = [
        FileEntry(path=p.relative_to(output_dir).as_posix(), size=p.stat().st_size, sha256=sha256_file(p))
        for p in output_files(output_dir)
    ]
    manifest = Manifest(step=step, files=entries)
    write_text_atomic(output_dir / OUTPUTS_MANIFEST, manifest.to_json())
    return manifest


def local_completion(output_dir: Path) -> Completion | None:
    manifest = _parse((output_dir / OUTPUTS_MANIFEST).read_text()) if (output_dir / OUTPUTS_MANIFEST).is_file() \
        else None
    if manifest is None:
        return None
    for entry in manifest.files:
        path = output_dir / entry.path
        if not path.is_file() or path.stat().st_size != entry.size:
            return None
    return Completion(str(output_dir), False, manifest)


def volume_completion(volume: Any) -> Completion | None:
    """The volume's outputs manifest, when every file it lists is on the volume with the listed size."""
    volume.reload()
    manifest = _parse(volume.read_text(OUTPUTS_MANIFEST))
    if manifest is None:
        return None
    sizes = volume.sizes()
    if any(sizes.get(entry.path) != entry.size for entry in manifest.files):
        return None
    return Completion(volume.url, True, manifest)


def volume_url(cfg: Any, environ: dict[str, str] | None = None) -> str | None:
    """The run's volume as the runtime resolves it: ``MUDPUPPY_VOLUME`` (set by backends), else ``launch.volume``."""
    variables = environ if environ is not None else os.environ
    launch = getattr(cfg, "launch", None)
    return variables.get(ENV_VOLUME, "").strip() or (getattr(launch, "volume", None) or None)


def find_completion(cfg: Any, output_dir: Path, environ: dict[str, str] | None = None) -> Completion | None:
    """The finished run in ``output_dir`` or on its volume, or None when there is training to do."""
    found = local_completion(output_dir)
    if found is not None:
        return found
    url = volume_url(cfg, environ)
    if not url:
        return None
    from collections.abc import Mapping

    from mudpuppy.runtime.checkpoints.volume import open_volume

    options = (getattr(getattr(cfg, "launch", None), "options", None) or {}).get("volume")
    volume = open_volume(url, dict(options) if isinstance(options, Mapping) else None)
    return volume_completion(volume)


def _parse(text: str | None) -> Manifest | None:
    if not text:
        return None
    try:
        return Manifest.from_json(text)
    except (ValueError, KeyError, TypeError):
        return None
