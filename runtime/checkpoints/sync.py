"""Mirror a run's checkpoints to its volume while it trains, and pull them back on every start.

Why: a spot machine can vanish at any moment; whatever is only on its disk is lost. With a volume, a relaunch
anywhere resumes from the newest checkpoint that reached the volume intact.

Layout on the volume (it mirrors ``output_dir``, so pointing ``output_dir`` at a downloaded copy just works)::

    checkpoint-200/...files...             uploaded first
    checkpoint-200/mudpuppy-manifest.json  uploaded last: the checkpoint counts only once this exists and the
                                           sizes it lists match the files on the volume
    latest                                 "checkpoint-200", rewritten after each manifest (for people/tools)
    adapter_model.safetensors, tokenizer*, metrics.jsonl, logs/...   final outputs (``finish``)
    mudpuppy-outputs.json                  written after the final outputs: their sizes and sha256

Integration surface for the trainer (one object per process; only rank 0 creates it)::

    sync = VolumeSync.from_env(output_dir, save_total_limit=cfg.save_total_limit)  # None: no volume set
    if sync:
        sync.restore()               # before building the trainer: pulls a newer verified checkpoint
        ...
        sync.on_checkpoint(ckpt)     # after checkpoint-N (with manifest) is renamed into place; returns at once
                                     # unless ``queue_size`` uploads are already waiting (backpressure)
        ...
        sync.finish()                # after the final save: drain uploads, upload outputs, commit
        sync.close()                 # always (also on SIGTERM before exiting 75): waits for queued uploads

``on_checkpoint`` hard-links the checkpoint's files into ``output_dir/.mudpuppy-upload/`` before queueing, so
local rotation (``save_total_limit``) may delete the checkpoint while it uploads. Retention on the volume keeps
the newest ``save_total_limit`` complete checkpoints and never the newest verified one; a checkpoint is deleted
manifest first so a half-deleted one never looks complete. ``restore`` verifies every sha256 after download and
falls back to the previous checkpoint, with a warning, when the newest is partial or corrupt.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mudpuppy.launcher.contract import ENV_VOLUME
from mudpuppy.runtime.checkpoints import verified
from mudpuppy.runtime.checkpoints.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    checkpoint_step,
    latest_complete_checkpoint,
    read_manifest,
    sha256_file,
    verify,
    write_text_atomic,
)
from mudpuppy.runtime.checkpoints.volume import Volume, open_volume

log = logging.getLogger(__name__)

LATEST_NAME = "latest"
OUTPUTS_MANIFEST = "mudpuppy-outputs.json"
SNAPSHOT_DIR = ".mudpuppy-upload"
DOWNLOAD_PREFIX = ".download-"
SIDE_FILES = ("metrics.jsonl", "logs")
UNREADABLE_MANIFEST = f"truncated or unreadable {MANIFEST_NAME}"


class SyncError(RuntimeError):
    """An upload or download that could not complete (after retries)."""


@dataclass
class RemoteCheckpoint:
    name: str
    step: int
    manifest: Manifest | None
    complete: bool
    problem: str = ""
    sizes: dict[str, int] = field(default_factory=dict, repr=False)


# --- reading the volume ----------------------------------------------------------------------------------
def remote_checkpoints(volume: Volume) -> list[RemoteCheckpoint]:
    """Every ``checkpoint-N`` on the volume, oldest first; ``complete`` means manifest present and sizes match.

    Sizes come from one recursive listing; sha256 is checked only on download (reading a 10 GB checkpoint back
    just to list it would cost more than the upload).
    """
    groups: dict[str, dict[str, int]] = {}
    for rel, size in volume.sizes().items():
        top, _, rest = rel.partition("/")
        if rest and checkpoint_step(Path(top)) is not None:
            groups.setdefault(top, {})[rest] = size
    found = []
    for name, sizes in groups.items():
        step = checkpoint_step(Path(name))
        assert step is not None
        found.append(_describe(volume, name, step, sizes))
    return sorted(found, key=lambda c: c.step)


def _describe(volume: Volume, name: str, step: int, sizes: dict[str, int]) -> RemoteCheckpoint:
    if MANIFEST_NAME not in sizes:
        return RemoteCheckpoint(name, step, None, False, "no manifest (upload interrupted)", sizes)
    text = volume.read_text(f"{name}/{MANIFEST_NAME}")
    try:
        manifest = Manifest.from_json(text or "")
    except (ValueError, KeyError, TypeError):
        return RemoteCheckpoint(name, step, None, False, UNREADABLE_MANIFEST, sizes)
    for entry in manifest.files:
        if sizes.get(entry.path) != entry.size:
            got = sizes.get(entry.path)
            why = "missing" if got is None else f"{got} bytes, manifest says {entry.size}"
            return RemoteCheckpoint(name, step, manifest, False, f"{entry.path}: {why}", sizes)
    return RemoteCheckpoint(name, step, manifest, True, "", sizes)


def newest_remote_step(volume: Volume) -> int | None:
    complete = [c for c in remote_checkpoints(volume) if c.complete]
    return complete[-1].step if complete else None


# --- uploading ---------------------------------------------------------------------------------------------
def upload_checkpoint(volume: Volume, local_dir: Path, *, name: str | None = None) -> Manifest:
    """Upload one complete local checkpoint: files, then (after checking sizes on the volume) the manifest,
    then the ``latest`` pointer. ``name`` overrides the directory name (snapshots live under other names)."""
    name = name or local_dir.name
    manifest = read_manifest(local_dir)
    if manifest is None or not verify(local_dir, checksums=False):
        raise SyncError(f"{local_dir} is not a complete checkpoint (no valid {MANIFEST_NAME}); not uploading it")
    # A manifest left by an earlier upload of this step must not vouch for files we are about to replace.
    volume.remove(f"{name}/{MANIFEST_NAME}")
    for entry in manifest.files:
        volume.put_file(local_dir / entry.path, f"{name}/{entry.path}")
    landed = volume.sizes(name)
    for entry in manifest.files:
        got = landed.get(f"{name}/{entry.path}")
        if got != entry.size:
            raise SyncError(f"{name}/{entry.path} on {volume.url} has {got} bytes after upload, expected {entry.size}")
    volume.write_text(f"{name}/{MANIFEST_NAME}", (local_dir / MANIFEST_NAME).read_text())
    _advance_latest(volume, name, manifest.step)
    volume.commit()
    return manifest


def _advance_latest(volume: Volume, name: str, step: int) -> None:
    current = (volume.read_text(LATEST_NAME) or "").strip()
    current_step = checkpoint_step(Path(current)) if current else None
    if current_step is None or current_step <= step or not volume.exists(f"{current}/{MANIFEST_NAME}"):
        volume.write_text(LATEST_NAME, name + "\n")


def apply_retention(volume: Volume, limit: int | None, *, protect: int | None = None) -> list[str]:
    """Delete old checkpoints on the volume: keep the newest ``limit`` complete ones (and ``protect``).

    Incomplete leftovers older than the newest complete checkpoint are always removed (killed uploads);
    newer incomplete ones are left alone. Returns the names deleted.
    """
    found = remote_checkpoints(volume)
    complete = [c for c in found if c.complete]
    if not complete:
        return []
    keep = {complete[-1].step}
    if limit is not None:
        keep |= {c.step for c in complete[-max(limit, 1) :]}
    else:
        keep |= {c.step for c in complete}
    if protect is not None:
        keep.add(protect)
    newest = complete[-1].step
    deleted = []
    for ckpt in found:
        if ckpt.step in keep or (not ckpt.complete and ckpt.step > newest):
            continue
        # Manifest first: if we die half-way, what is left is visibly incomplete, never "complete but short".
        volume.remove(f"{ckpt.name}/{MANIFEST_NAME}")
        volume.remove(ckpt.name, recursive=True)
        deleted.append(ckpt.name)
    if deleted:
        volume.commit()
        log.info("volume retention: deleted %s from %s", ", ".join(deleted), volume.url)
    return deleted


def output_files(output_dir: Path) -> list[Path]:
    """Final outputs: every file under ``output_dir`` except checkpoints and our hidden temp/staging dirs."""
    files = []
    for path in sorted(output_dir.rglob("*")):
        rel = path.relative_to(output_dir)
        top = rel.parts[0]
        if top.startswith(".") or checkpoint_step(Path(top)) is not None or not path.is_file():
            continue
        if path.name.startswith(".") or rel.as_posix() == OUTPUTS_MANIFEST:
            continue
        files.append(path)
    return files


def upload_outputs(volume: Volume, output_dir: Path, *, step: int = -1) -> Manifest:
    """Upload final outputs (model/adapter, tokenizer, metrics, logs), then their manifest last."""
    entries = []
    for path in output_files(output_dir):
        rel = path.relative_to(output_dir).as_posix()
        entries.append(FileEntry(path=rel, size=path.stat().st_size, sha256=sha256_file(path)))
        volume.put_file(path, rel)
    manifest = Manifest(step=step, files=entries)
    volume.write_text(OUTPUTS_MANIFEST, manifest.to_json())
    volume.commit()
    return manifest


def upload_side_files(volume: Volume, output_dir: Path, names: Iterable[str] = SIDE_FILES) -> None:
    """Metrics and logs so far, so a lost machine still leaves its attempt's logs on the volume."""
    for name in names:
        path = output_dir / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        for file in files:
            volume.put_file(file, file.relative_to(output_dir).as_posix())


# --- downloading ---------------------------------------------------------------------------------------------
def restore_latest(volume: Volume, output_dir: Path) -> Path | None:
    """Make ``output_dir`` hold the newest verified checkpoint, pulling it from the volume when the volume has
    a newer one than the newest sha256-verified local checkpoint. Returns the checkpoint to resume from, or None.

    A partial or corrupt newest checkpoint on the volume is skipped with a warning and the previous one tried.
    When damaged checkpoints exist (locally or on the volume) and none verifies anywhere, this refuses
    (``UserError``) rather than letting the run start from step 0 over them.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    _clean_temp_dirs(output_dir)
    volume.reload()
    local = verified.scan(output_dir)
    local_step = local.verified_step
    damaged = [why for _, why in local.bad]
    for ckpt in reversed(remote_checkpoints(volume)):
        if local_step is not None and ckpt.step <= local_step:
            break
        if not ckpt.complete:
            if ckpt.manifest is not None or ckpt.problem == UNREADABLE_MANIFEST:
                damaged.append(f"{ckpt.name} on {volume.url}: {ckpt.problem}")
            log.warning(
                "%s on %s is incomplete (%s); falling back to the previous checkpoint",
                ckpt.name,
                volume.url,
                ckpt.problem,
            )
            continue
        try:
            return download_checkpoint(volume, ckpt, output_dir)
        except SyncError as exc:
            damaged.append(f"{ckpt.name} on {volume.url}: {exc}")
            log.warning("%s on %s is corrupt (%s); falling back to the previous checkpoint", ckpt.name, volume.url, exc)
    if local.verified is None and damaged:
        raise verified.refuse(output_dir, damaged)
    return local.verified


def download_checkpoint(volume: Volume, ckpt: RemoteCheckpoint, output_dir: Path) -> Path:
    """Download into a hidden temp dir, verify every sha256, then rename into place as ``checkpoint-N``."""
    assert ckpt.manifest is not None
    tmp = output_dir / f"{DOWNLOAD_PREFIX}{ckpt.name}-{uuid.uuid4().hex[:8]}"
    try:
        for entry in ckpt.manifest.files:
            target = _entry_target(volume, ckpt.name, entry.path, tmp)
            volume.get_file(f"{ckpt.name}/{entry.path}", target)
            digest = sha256_file(target)
            if digest != entry.sha256:
                raise SyncError(f"{entry.path}: sha256 {digest[:12]}..., manifest says {entry.sha256[:12]}...")
        tmp.mkdir(parents=True, exist_ok=True)
        write_text_atomic(tmp / MANIFEST_NAME, ckpt.manifest.to_json())
        final = output_dir / ckpt.name
        if (final / MANIFEST_NAME).exists():  # a damaged local copy: kept aside for inspection, never deleted
            verified.quarantine(final)
        elif final.exists():  # an incomplete local copy (no manifest): ours is verified
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("restored %s from %s (sha256 verified)", ckpt.name, volume.url)
    return final


def _entry_target(volume: Volume, name: str, rel: str, tmp: Path) -> Path:
    """Where a manifest entry lands: refused (``SyncError``, so the checkpoint counts as damaged) when it is
    absolute, climbs out with ``..``, or is read through a symlink on the volume; a hand-edited or hostile
    manifest can therefore neither write outside the output folder nor copy files from outside the volume."""
    parts = PurePosixPath(rel).parts
    if not parts or "\0" in rel or rel.startswith(("/", "\\")) or any(p in ("..", ".") for p in parts):
        raise SyncError(f"manifest entry {rel!r} escapes the checkpoint folder; refusing it")
    if volume.is_local:
        folder = volume.path(name)
        inside = os.path.join(os.path.realpath(folder), *parts)
        if os.path.islink(folder) or os.path.realpath(volume.path(f"{name}/{rel}")) != inside:
            raise SyncError(f"manifest entry {rel!r} is a symlink on the volume; refusing it")
    target = tmp / rel
    if not target.resolve().is_relative_to(tmp.resolve()):
        raise SyncError(f"manifest entry {rel!r} escapes the checkpoint folder; refusing it")
    return target


def _clean_temp_dirs(output_dir: Path) -> None:
    """Leftovers of a killed attempt: half-downloaded checkpoints and upload snapshots."""
    for child in output_dir.iterdir():
        if child.is_dir() and (child.name.startswith(DOWNLOAD_PREFIX) or child.name == SNAPSHOT_DIR):
            shutil.rmtree(child, ignore_errors=True)


# --- the background uploader -------------------------------------------------------------------------------
def snapshot(checkpoint_dir: Path, staging: Path) -> Path:
    """Hard-link a complete checkpoint into ``staging`` (milliseconds, no bytes copied) so it can be uploaded
    even if the trainer rotates the original away meanwhile. Copies when hard links are not possible."""
    if read_manifest(checkpoint_dir) is None or not verify(checkpoint_dir, checksums=False):
        raise SyncError(f"{checkpoint_dir} is not a complete checkpoint (no valid {MANIFEST_NAME}); not uploading it")
    target = staging / f"{checkpoint_dir.name}.{uuid.uuid4().hex[:8]}"
    for path in checkpoint_dir.rglob("*"):
        if not path.is_file():
            continue
        dest = target / path.relative_to(checkpoint_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)
    return target


_STOP = object()


@dataclass
class _Job:
    directory: Path
    name: str
    owned: bool  # a snapshot we created and must delete


class CheckpointUploader:
    """One background thread draining a bounded queue of checkpoints to upload.

    ``submit`` blocks only while ``queue_size`` checkpoints are already waiting (one more may be in flight):
    a volume slower than the save interval throttles training instead of filling the disk with snapshots.
    Failed uploads are retried with backoff; after the last retry the error is logged and kept in ``errors``.
    """

    def __init__(
        self,
        volume: Volume,
        *,
        save_total_limit: int | None = None,
        queue_size: int = 1,
        retries: int = 3,
        backoff_s: float = 1.0,
        output_dir: Path | None = None,
    ) -> None:
        self.volume = volume
        self.save_total_limit = save_total_limit
        self.retries = retries
        self.backoff_s = backoff_s
        self.output_dir = output_dir
        self.uploaded: list[int] = []
        self.errors: list[str] = []
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(queue_size, 1))
        self._thread = threading.Thread(target=self._run, name="mudpuppy-volume-upload", daemon=True)
        self._thread.start()
        self._closed = False

    def submit(self, directory: Path, *, name: str | None = None, owned: bool = False) -> float:
        """Queue a checkpoint directory; returns the seconds spent waiting for room in the queue."""
        if self._closed:
            raise SyncError("uploader is closed")
        start = time.perf_counter()
        self._queue.put(_Job(directory, name or directory.name, owned))
        return time.perf_counter() - start

    def drain(self) -> None:
        """Wait until every queued checkpoint is uploaded (or has failed for good)."""
        self._queue.join()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                self._upload(job)
            finally:
                self._queue.task_done()

    def _upload(self, job: _Job) -> None:
        try:
            for attempt in range(self.retries + 1):
                try:
                    start = time.perf_counter()
                    manifest = upload_checkpoint(self.volume, job.directory, name=job.name)
                    size = sum(f.size for f in manifest.files)
                    log.info(
                        "uploaded %s to %s (%.1f MB in %.1fs)",
                        job.name,
                        self.volume.url,
                        size / 1e6,
                        time.perf_counter() - start,
                    )
                    self.uploaded.append(manifest.step)
                    self._after_upload(manifest.step)
                    return
                except Exception as exc:  # network and store errors come in many types; retry them all
                    if attempt == self.retries:
                        message = f"upload of {job.name} to {self.volume.url} failed: {exc}"
                        log.error("%s", message)
                        self.errors.append(message)
                        return
                    delay = self.backoff_s * 2**attempt
                    log.warning("upload of %s failed (%s); retrying in %.0fs", job.name, exc, delay)
                    time.sleep(delay)
        finally:
            if job.owned:
                shutil.rmtree(job.directory, ignore_errors=True)

    def _after_upload(self, step: int) -> None:
        """Retention and logs: best effort, never a reason to upload the checkpoint again."""
        try:
            apply_retention(self.volume, self.save_total_limit, protect=step)
            if self.output_dir is not None:
                upload_side_files(self.volume, self.output_dir)
        except Exception as exc:  # the checkpoint itself is safe; the next upload retries both
            log.warning("after uploading step %d: retention/log sync on %s failed: %s", step, self.volume.url, exc)


class VolumeSync:
    """What the trainer calls: ``restore()``, ``on_checkpoint(dir)``, ``finish()``, ``close()`` (see module doc)."""

    def __init__(
        self,
        volume: Volume,
        output_dir: Path | str,
        *,
        save_total_limit: int | None = None,
        queue_size: int = 1,
        retries: int = 3,
        backoff_s: float = 1.0,
    ) -> None:
        self.volume = volume
        self.output_dir = Path(output_dir)
        self.uploader = CheckpointUploader(
            volume,
            save_total_limit=save_total_limit,
            queue_size=queue_size,
            retries=retries,
            backoff_s=backoff_s,
            output_dir=self.output_dir,
        )
        self.blocked_s: list[float] = []

    @classmethod
    def from_url(
        cls, url: str, output_dir: Path | str, *, storage_options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> VolumeSync:
        return cls(open_volume(url, storage_options), output_dir, **kwargs)

    @classmethod
    def from_env(
        cls, output_dir: Path | str, *, storage_options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> VolumeSync | None:
        """The run's volume from ``MUDPUPPY_VOLUME`` (set by the backend to this run's directory), or None."""
        url = os.environ.get(ENV_VOLUME, "").strip()
        return cls.from_url(url, output_dir, storage_options=storage_options, **kwargs) if url else None

    def restore(self) -> Path | None:
        """Pull a newer verified checkpoint if the volume has one; re-upload a local one the volume lacks
        (the previous attempt died before its upload finished). Returns the checkpoint to resume from."""
        resume = restore_latest(self.volume, self.output_dir)
        if resume is not None:
            remote = newest_remote_step(self.volume)
            step = checkpoint_step(resume)
            if step is not None and (remote is None or remote < step):
                log.info("%s is newer than anything on %s; uploading it", resume.name, self.volume.url)
                self.on_checkpoint(resume)
        return resume

    def on_checkpoint(self, checkpoint_dir: Path | str) -> float:
        """Queue a freshly written checkpoint for upload. Returns the seconds training was blocked."""
        start = time.perf_counter()
        directory = Path(checkpoint_dir)
        staged = snapshot(directory, self.output_dir / SNAPSHOT_DIR)
        self.uploader.submit(staged, name=directory.name, owned=True)
        blocked = time.perf_counter() - start
        self.blocked_s.append(blocked)
        return blocked

    def wait(self) -> None:
        self.uploader.drain()

    def finish(self, output_dir: Path | str | None = None) -> Manifest:
        """Drain checkpoint uploads, then upload the final outputs with their manifest last."""
        self.wait()
        out = Path(output_dir) if output_dir is not None else self.output_dir
        latest = latest_complete_checkpoint(out)
        step = checkpoint_step(latest) if latest is not None else None
        last_error: Exception | None = None
        for attempt in range(self.uploader.retries + 1):
            try:
                manifest = upload_outputs(self.volume, out, step=step if step is not None else -1)
                log.info("uploaded final outputs (%d files) to %s", len(manifest.files), self.volume.url)
                return manifest
            except Exception as exc:  # same policy as checkpoints: retry any store error
                last_error = exc
                time.sleep(self.uploader.backoff_s * 2**attempt)
        raise SyncError(f"uploading final outputs to {self.volume.url} failed: {last_error}")

    def close(self) -> None:
        """Wait for queued uploads and stop the thread. Call it before exiting, including on preemption."""
        self.uploader.close()

    @property
    def errors(self) -> list[str]:
        return list(self.uploader.errors)

    def __enter__(self) -> VolumeSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
