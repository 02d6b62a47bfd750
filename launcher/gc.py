"""``mudpuppy gc``: find (and with ``--yes`` remove) what the run registry knows is no longer needed.

What goes, and why it is safe:
- bundles (here in STATE_DIR/bundles, and on SLURM/SSH workdirs, with their extracted folders and the SSH
  hosts' unpacked wheels) whose every registry run is finished: a running or queued run re-reads its bundle on
  each requeue, so a bundle any unfinished run uses stays. A local bundle no run uses (a dry run's) goes once it
  is an hour old (a launch in progress builds its bundle before its registry row exists);
- the run folders of finished runs on SLURM/SSH workdirs (job script, node exit codes, per-node scratch), unless
  the run's outputs are inside (an SSH run without a shared filesystem writes them there);
- venvs under a SLURM/SSH workdir that no unfinished run uses, keeping the newest run's (a relaunch reuses it);
  when an unfinished run's environment cannot be told (its bundle is gone from here), every venv stays;
- SkyPilot clusters that mudpuppy created for a finished unmanaged run (``mudpuppy-RUN``), torn down with
  SkyPilot's own ``down`` (they autostop anyway; this ends the ones whose autostop was turned off or failed).

Never touched: a run's output folder (final outputs, checkpoints, metrics) anywhere, volumes, anything the
registry does not know of (another user's runs in a shared workdir), and unfinished runs' files. Every path
about to be removed is checked against every run's output location first.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mudpuppy.launcher.contract import BUNDLE_IMAGE, BUNDLE_SUFFIX
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.locations import split_output
from mudpuppy.launcher.registry import Registry, RunRecord, state_dir

FINISHED = ("succeeded", "failed", "cancelled")
UNREFERENCED_AGE_S = 3600
DIGEST_CHARS = 16
# What `mudpuppy gc` can clean per backend (shown by `mudpuppy backends`).
GC_SCOPE = {
    "local": "bundles",
    "ssh": "bundles, run folders, venvs",
    "slurm": "bundles, run folders, venvs",
    "ray": "no: Ray keeps job files itself",
    "skypilot": "clusters made for runs",
    "modal": "no: apps stop themselves",
}


@dataclass(frozen=True)
class Item:
    kind: str      # bundle, run folder, venv, cluster
    where: str     # "here", a host / login node, or "skypilot"
    path: str      # a path there, or a cluster name
    why: str
    backend: str = "local"
    launch: str | None = field(default=None, compare=False)  # the launch section that reaches ``where``

    @property
    def action(self) -> str:
        return f"sky down {self.path}" if self.kind == "cluster" else f"rm -rf {self.path}"


@dataclass
class Found:
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was kept on purpose, or could not be looked at


def _launch(record: RunRecord) -> dict[str, Any]:
    try:
        data = json.loads(record.launch or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _finished(record: RunRecord) -> bool:
    return record.status in FINISHED


# A failed or cancelled run can still be continued by `mudpuppy resume`, which resubmits its stored bundle: the
# bundle stays until another attempt continued the run, or this many days after the run last changed.
RESUMABLE_DAYS = 14


def _resumable(record: RunRecord, records: list[RunRecord], now: float) -> bool:
    if record.status == "succeeded" or now - record.updated > RESUMABLE_DAYS * 86400:
        return False
    return not any(other.parent_id == record.id for other in records)


def _bundle_stem(digest: str) -> str:
    return digest[:DIGEST_CHARS]


def _outputs(records: list[RunRecord]) -> list[tuple[str, str]]:
    out = []
    for record in records:
        location = split_output(record.output)
        if location:
            out.append(location)
    return out


def _overlaps(path: str, output: str) -> bool:
    """True when removing ``path`` would remove ``output`` or part of it (or ``path`` lies inside it)."""
    a, b = path.rstrip("/") + "/", output.rstrip("/") + "/"
    return b.startswith(a) or a.startswith(b)


# ---------------------------------------------------------------- finding


def collect(registry: Registry) -> Found:
    records = registry.list(limit=1_000_000)
    found = Found()
    _local_bundles(records, found)
    _remote(records, found)
    _clusters(records, found)
    outputs = _outputs(records)
    safe = []
    for item in found.items:
        hit = next((o for s, o in outputs if item.kind != "cluster" and _overlaps(item.path, o)), None)
        if hit is not None:
            found.notes.append(f"kept {item.path}: a run's outputs are at {hit}")
        else:
            safe.append(item)
    found.items = safe
    return found


def _local_bundles(records: list[RunRecord], found: Found) -> None:
    store = state_dir() / "bundles"
    if not store.is_dir():
        return
    users: dict[str, list[RunRecord]] = {}
    for record in records:
        users.setdefault(_bundle_stem(record.bundle_hash), []).append(record)
    now = time.time()
    for path in sorted(store.iterdir()):
        if not path.name.endswith(BUNDLE_SUFFIX) or not path.is_file():
            continue
        stem = path.name[: -len(BUNDLE_SUFFIX)][:DIGEST_CHARS]
        runs = users.get(stem, [])
        if any(not _finished(r) for r in runs):
            continue
        resumable = [r for r in runs if _resumable(r, records, now)]
        if resumable:
            found.notes.append(f"kept {path}: `mudpuppy resume {resumable[0].id}` needs it (a {resumable[0].status} "
                               f"run nothing continued yet; kept for {RESUMABLE_DAYS} days)")
            continue
        if runs:
            why = f"bundle of finished run(s) {', '.join(r.id for r in runs[:3])}{' ...' if len(runs) > 3 else ''}"
        elif now - path.stat().st_mtime > UNREFERENCED_AGE_S:
            why = "no run in the registry uses it (built by a dry run or a launch that failed before submitting)"
        else:
            continue
        found.items.append(Item("bundle", "here", str(path), why))
        extracted = path.with_name(path.name[: -len(BUNDLE_SUFFIX)])
        if extracted.is_dir():
            found.items.append(Item("bundle", "here", str(extracted), "the extracted copy of that bundle"))


@dataclass
class _Place:
    """One workdir reached one way: a SLURM workdir through its login node (or here), or an SSH host's workdir."""

    backend: str
    where: str
    workdir: str
    launch: str
    runs: list[RunRecord] = field(default_factory=list)


def _places(records: list[RunRecord]) -> dict[tuple[str, str, str], _Place]:
    places: dict[tuple[str, str, str], _Place] = {}
    for record in records:
        launch = _launch(record)
        targets: list[tuple[str, str]] = []
        if record.backend == "slurm":
            slurm = launch.get("slurm") or {}
            targets = [(slurm.get("login") or "local", slurm.get("workdir") or "~/.mudpuppy")]
        elif record.backend == "ssh":
            ssh = launch.get("ssh") or {}
            hosts = list(ssh.get("hosts") or [])[: int(launch.get("nodes") or 1)]
            targets = [(host, ssh.get("workdir") or "~/.mudpuppy") for host in hosts]
        for where, workdir in targets:
            key = (record.backend, where, workdir.rstrip("/") or "/")
            place = places.setdefault(key, _Place(record.backend, where, key[2], record.launch or "{}"))
            place.runs.append(record)
    return places


def _transport(place: _Place) -> Any:
    from mudpuppy.backends.base import get_backend
    from mudpuppy.launcher.config.schema.launch import LaunchSection

    backend = get_backend(place.backend, LaunchSection.model_validate_json(place.launch))
    return backend.transport(place.where)  # type: ignore[attr-defined]


def _listing(t: Any, folder: str) -> list[str]:
    from mudpuppy.backends.transport import rpath

    res = t.run(f"ls -1A {rpath(folder)} 2>/dev/null", timeout=30)
    return [line for line in res.stdout.splitlines() if line.strip()] if res.code == 0 else []


def _remote(records: list[RunRecord], found: Found) -> None:
    for place in _places(records).values():
        where = "here" if place.where == "local" else place.where
        try:
            t = _transport(place)
        except (UserError, ImportError) as exc:
            found.notes.append(f"skipped {place.backend} workdir {place.workdir} on {where}: {exc}")
            continue
        try:
            _remote_place(place, where, t, found)
        except (UserError, OSError) as exc:
            found.notes.append(f"could not look at {place.workdir} on {where}: {exc}")
        finally:
            t.close()


def _remote_place(place: _Place, where: str, t: Any, found: Found) -> None:
    root = place.workdir
    live = [r for r in place.runs if not _finished(r)]
    item = _item_maker(place, where)
    # run folders of finished runs
    present_runs = set(_listing(t, f"{root}/runs"))
    for record in place.runs:
        if _finished(record) and record.id in present_runs:
            if record.output and split_output(record.output) is None:  # cannot tell where its outputs are
                found.notes.append(f"kept {root}/runs/{record.id}: its outputs' location {record.output!r} is unclear")
                continue
            found.items.append(item("run folder", f"{root}/runs/{record.id}", f"run {record.id} {record.status}"))
    # bundles (and extracted folders, and SSH's unpacked wheels) only our finished runs used
    live_stems = {_bundle_stem(r.bundle_hash) for r in live}
    done_stems = {_bundle_stem(r.bundle_hash) for r in place.runs if _finished(r)} - live_stems
    for name in _listing(t, f"{root}/bundles"):
        stem = name.removesuffix(BUNDLE_SUFFIX)[:DIGEST_CHARS]
        if stem in done_stems and not name.startswith("."):
            found.items.append(item("bundle", f"{root}/bundles/{name}", "bundle of finished runs only"))
    for name in _listing(t, f"{root}/wheels"):
        if name[:DIGEST_CHARS] in done_stems:
            found.items.append(item("bundle", f"{root}/wheels/{name}", "wheel unpacked from a finished run's bundle"))
    # venvs no unfinished run uses (the newest run's is kept: a relaunch reuses it)
    venvs = _listing(t, f"{root}/venvs")
    if not venvs:
        return
    keep: set[str] = set()
    newest = max(place.runs, key=lambda r: r.created)
    for record in [*live, newest]:
        key = venv_key(record)
        if key is None:
            if not _finished(record):
                found.notes.append(f"kept every venv under {root}/venvs on {where}: the environment of unfinished "
                                   f"run {record.id} cannot be told (its bundle is not in {state_dir() / 'bundles'})")
                return
            continue
        keep.add(key)
    for name in venvs:
        key = name.removesuffix(".lock")
        if key not in keep:
            found.items.append(item("venv", f"{root}/venvs/{name}", "no unfinished run uses this environment"))


def _item_maker(place: _Place, where: str) -> Any:
    def make(kind: str, path: str, why: str) -> Item:
        return Item(kind, where if where != "here" else "here", path, why, backend=place.backend, launch=place.launch)

    return make


def venv_key(record: RunRecord) -> str | None:
    """The venv folder name a run's nodes use (the image spec's key), read from its bundle here; None if gone."""
    from mudpuppy.launcher.image import image_key

    store = state_dir() / "bundles"
    matches = sorted(store.glob(f"{_bundle_stem(record.bundle_hash)}*{BUNDLE_SUFFIX}")) if store.is_dir() else []
    for path in matches:
        try:
            with tarfile.open(path, "r:*") as tar:
                member = tar.extractfile(BUNDLE_IMAGE)
                if member is not None:
                    return image_key(json.loads(member.read()))
        except (OSError, tarfile.TarError, json.JSONDecodeError, KeyError):
            continue
    return None


def _clusters(records: list[RunRecord], found: Found) -> None:
    for record in records:
        if record.backend != "skypilot" or not _finished(record) or not record.handle:
            continue
        cluster = record.handle.split("://", 1)[-1].rsplit("/", 1)[0]
        if cluster == f"mudpuppy-{record.id}":  # made for this run (a named cluster is the user's own)
            found.items.append(Item("cluster", "skypilot", cluster, f"made for run {record.id} ({record.status})",
                                    backend="skypilot", launch=record.launch))


# ---------------------------------------------------------------- removing


def remove(items: list[Item]) -> Iterator[tuple[Item, str | None]]:
    """Remove each item; yields (item, None) when done or (item, why not)."""
    for item in items:
        try:
            if item.kind == "cluster":
                _down(item)
            elif item.where == "here" and item.backend == "local":
                path = Path(item.path)
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
            else:
                _remote_rm(item)
        except (UserError, OSError) as exc:
            yield item, str(exc)
            continue
        yield item, None


def _remote_rm(item: Item) -> None:
    from mudpuppy.backends.transport import rpath

    place = _Place(item.backend, "local" if item.where == "here" else item.where, "", item.launch or "{}")
    t = _transport(place)
    try:
        res = t.run(f"rm -rf {rpath(item.path)}", timeout=120)
        if res.code != 0:
            raise UserError(f"rm -rf {item.path} on {item.where} failed: {res.stderr.strip()[:200]}")
    finally:
        t.close()


def _down(item: Item) -> None:
    from mudpuppy.backends.skypilot import call_driver, sky_python
    from mudpuppy.launcher.config.schema.launch import LaunchSection

    launch = LaunchSection.model_validate_json(item.launch or "{}")
    call_driver(sky_python(launch), "down", {"cluster": item.path}, timeout=1800)


__all__ = ["Found", "Item", "collect", "remove", "venv_key"]
