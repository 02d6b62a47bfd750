"""``mudpuppy pull RUN``: bring a run's final outputs (and, on request, its verified checkpoints) to this machine.

Why a command: a run's outputs end wherever its backend put them (a volume, a remote workdir, a cluster's shared
filesystem, a Modal volume, a bucket), and a plain copy can neither tell a finished copy from a torn one nor a good
byte from a flipped one. Every file is checked against the run's own manifest: ``mudpuppy-outputs.json`` for the
final outputs, ``checkpoint-N/mudpuppy-manifest.json`` for each checkpoint (both written by the runtime last).

Safe to interrupt and run again: a file already here with the manifest's sha256 is skipped; a file is downloaded
to a hidden ``.NAME.part`` beside its place and renamed only once its sha256 matches; a local manifest is written
after all its files, so a pulled folder that has one is complete. A mismatch stops the pull with one line naming
the file, and a local file that differs from the run's is never overwritten.

Sources share three methods (``sizes``, ``read_text``, ``get_file``; the runtime's ``Volume`` has exactly these):
fsspec volumes (``file://``, ``s3://``, ``gs://``) through the runtime's own volume reader, SFTP over the SSH
backend's checked connection, and Modal volumes through the Modal SDK.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from mudpuppy.launcher.errors import UserError

if TYPE_CHECKING:
    from mudpuppy.launcher.config.schema.launch import LaunchSection
    from mudpuppy.launcher.registry import RunRecord

OUTPUTS_MANIFEST = "mudpuppy-outputs.json"  # the runtime's names (runtime.checkpoints.sync / manifest)
CHECKPOINT_MANIFEST = "mudpuppy-manifest.json"
PART_SUFFIX = ".part"


class Source(Protocol):
    """Where a run's output folder can be read: paths are relative to it, with ``/`` separators."""

    url: str

    def sizes(self, rel: str = "") -> dict[str, int]: ...

    def read_text(self, rel: str) -> str | None: ...

    def get_file(self, rel: str, local: Path) -> None: ...


@dataclass
class PullReport:
    dest: Path
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    checkpoints: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # checkpoints on the source that are not complete there
    outputs: bool = False  # the final outputs (and their manifest) are here

    def line(self) -> str:
        what = "final outputs" if self.outputs else "no final outputs"
        if self.checkpoints:
            what += f" and {len(self.checkpoints)} checkpoint(s) ({', '.join(self.checkpoints)})"
        return (f"pulled {what} into {self.dest}: {len(self.copied)} file(s) copied "
                f"({self.bytes_copied / 1e6:.1f} MB), {len(self.skipped)} already there (sha256 verified)")


# ---------------------------------------------------------------- pulling


def pull(source: Source, dest: Path, *, checkpoints: bool = False,
         say: Callable[[str], None] | None = None) -> PullReport:
    """Copy the final outputs (and with ``checkpoints`` every complete checkpoint) from ``source`` into ``dest``."""
    from mudpuppy.runtime.checkpoints.manifest import Manifest

    dest.mkdir(parents=True, exist_ok=True)
    report = PullReport(dest)
    outputs_text = source.read_text(OUTPUTS_MANIFEST)
    groups: list[tuple[str, str, Manifest, str]] = []  # (folder on the source, manifest name, manifest, its text)
    if outputs_text is not None:
        groups.append(("", OUTPUTS_MANIFEST, _parse(outputs_text, OUTPUTS_MANIFEST, source), outputs_text))
    elif not checkpoints:
        raise UserError(f"{source.url} has no final outputs ({OUTPUTS_MANIFEST} is missing): the run has not "
                        "finished", hint="`mudpuppy pull RUN --checkpoints` copies its verified checkpoints")
    if checkpoints:
        found, report.incomplete = _complete_checkpoints(source)
        for name, text in found:
            groups.append((name, CHECKPOINT_MANIFEST, _parse(text, f"{name}/{CHECKPOINT_MANIFEST}", source), text))
        for name in report.incomplete:
            if say:
                say(f"skipping {name} on {source.url}: incomplete there (no manifest, or sizes differ)")
        if not groups:
            raise UserError(f"{source.url} has neither final outputs nor a complete checkpoint")
    for folder, manifest_name, manifest, text in groups:
        local_folder = dest / folder if folder else dest
        for entry in manifest.files:
            rel = _safe_rel(entry.path, source)
            remote = f"{folder}/{rel}" if folder else rel
            fetched = fetch_file(source, remote, local_folder / rel, entry.size, entry.sha256)
            (report.copied if fetched else report.skipped).append(remote)
            if fetched:
                report.bytes_copied += entry.size
                if say:
                    say(f"copied {remote} ({entry.size / 1e6:.1f} MB)")
        _write_manifest(local_folder / manifest_name, text)
        if folder:
            report.checkpoints.append(folder)
        else:
            report.outputs = True
    return report


def fetch_file(source: Source, remote: str, target: Path, size: int, sha256: str) -> bool:
    """Make ``target`` hold ``remote`` with the given sha256; False when it already did. Never overwrites a
    local file that differs from the run's; never leaves an unverified file under the real name."""
    from mudpuppy.runtime.checkpoints.manifest import sha256_file

    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise UserError(f"{target} exists and is not a regular file; nothing was overwritten",
                        hint="move it away, or pull --to another folder")
    if target.is_file():
        if target.stat().st_size == size and sha256_file(target) == sha256:
            return False
        raise UserError(f"{target} exists and differs from the run's {remote}; nothing was overwritten",
                        hint="move it away, or pull --to another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}{PART_SUFFIX}")
    part.unlink(missing_ok=True)
    try:
        source.get_file(remote, part)
        digest = sha256_file(part)
    except FileNotFoundError:
        part.unlink(missing_ok=True)
        raise UserError(f"{remote} is listed in the run's manifest but missing on {source.url}") from None
    if digest != sha256:
        part.unlink(missing_ok=True)
        raise UserError(f"{remote} on {source.url} is damaged: sha256 {digest[:12]}..., the run's manifest says "
                        f"{sha256[:12]}...; it was not written", hint="nothing else was changed")
    os.replace(part, target)
    return True


def _complete_checkpoints(source: Source) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, manifest text) of each complete ``checkpoint-N`` on the source, oldest first, and the incomplete
    ones' names. Complete: the manifest parses and every file it lists is there with its size."""
    from mudpuppy.runtime.checkpoints.manifest import Manifest, checkpoint_step

    groups: dict[str, dict[str, int]] = {}
    for rel, size in source.sizes().items():
        top, _, rest = rel.partition("/")
        if rest and checkpoint_step(Path(top)) is not None:
            groups.setdefault(top, {})[rest] = size
    complete: list[tuple[int, str, str]] = []
    incomplete: list[str] = []
    for name, sizes in groups.items():
        step = checkpoint_step(Path(name))
        assert step is not None
        text = source.read_text(f"{name}/{CHECKPOINT_MANIFEST}") if CHECKPOINT_MANIFEST in sizes else None
        try:
            manifest = Manifest.from_json(text) if text else None
        except (ValueError, KeyError, TypeError):
            manifest = None
        if manifest is None or any(sizes.get(e.path) != e.size for e in manifest.files):
            incomplete.append(name)
            continue
        assert text is not None
        complete.append((step, name, text))
    return [(name, text) for _, name, text in sorted(complete)], sorted(incomplete)


def _parse(text: str, name: str, source: Source) -> Any:
    from mudpuppy.runtime.checkpoints.manifest import Manifest

    try:
        return Manifest.from_json(text)
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{name} on {source.url} is unreadable (truncated or not a mudpuppy manifest)") from None


def _safe_rel(rel: str, source: Source) -> str:
    """A manifest entry as a relative path that stays inside the folder it describes."""
    parts = PurePosixPath(rel).parts
    if not parts or "\0" in rel or rel.startswith(("/", "\\")) or any(p in ("..", ".") for p in parts):
        raise UserError(f"manifest entry {rel!r} on {source.url} escapes the run's folder; refusing to pull it")
    return "/".join(parts)


def _write_manifest(path: Path, text: str) -> None:
    from mudpuppy.runtime.checkpoints.manifest import write_text_atomic

    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


# ---------------------------------------------------------------- sources


class SftpSource:
    """A folder on a host reached through the SSH backend's connection (host keys checked as for submission)."""

    def __init__(self, transport: Any, root: str) -> None:
        self.transport = transport
        # SFTP paths without a leading "/" are relative to the login's home, which is what "~/" means
        self.root = root[2:] if root.startswith("~/") else ("." if root == "~" else root)
        self.url = f"{transport.name}:{root}"
        self._sftp: Any = None

    def _client(self) -> Any:
        if self._sftp is None:
            self._sftp = self.transport._connect().sftp()
        return self._sftp

    def _path(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def sizes(self, rel: str = "") -> dict[str, int]:
        out: dict[str, int] = {}
        pending = [rel.strip("/")]
        while pending:
            folder = pending.pop()
            try:
                entries = self._client().listdir_attr(self._path(folder))
            except FileNotFoundError:
                continue
            for attr in entries:
                name = f"{folder}/{attr.filename}" if folder else attr.filename
                if stat.S_ISDIR(attr.st_mode or 0):
                    pending.append(name)
                elif stat.S_ISREG(attr.st_mode or 0):
                    out[name] = int(attr.st_size or 0)
        return out

    def read_text(self, rel: str) -> str | None:
        try:
            with self._client().open(self._path(rel), "rb") as handle:
                return bytes(handle.read()).decode("utf-8")
        except FileNotFoundError:
            return None

    def get_file(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self._client().get(self._path(rel), str(local))

    def close(self) -> None:
        self.transport.close()


class ModalSource:
    """A folder on a Modal Volume, read through the Modal SDK (``listdir``, ``read_file``) without a container."""

    def __init__(self, volume: Any, root: str, name: str) -> None:
        self.volume = volume
        self.root = root.strip("/")
        self.url = f"modal volume {name}: /{self.root}"

    def _path(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"/{self.root}/{rel}" if rel else f"/{self.root}"

    def sizes(self, rel: str = "") -> dict[str, int]:
        try:
            entries = self.volume.listdir(self._path(rel), recursive=True)
        except Exception as exc:  # Modal answers a missing folder with its own NotFoundError (a gRPC error)
            if isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFoundError":
                return {}
            raise
        prefix = self.root + "/"
        out = {}
        for entry in entries:
            path = str(entry.path).lstrip("/")
            if getattr(entry.type, "name", str(entry.type)).upper().endswith("FILE") and path.startswith(prefix):
                out[path[len(prefix):]] = int(entry.size)
        return out

    def read_text(self, rel: str) -> str | None:
        try:
            return b"".join(self.volume.read_file(self._path(rel))).decode("utf-8")
        except FileNotFoundError:
            return None

    def get_file(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with local.open("wb") as handle:
            self.volume.read_file_into_fileobj(self._path(rel), handle)


def volume_url_of(record: RunRecord, launch: LaunchSection) -> str | None:
    """The volume the run's runtime synced to (``MUDPUPPY_VOLUME`` as its backend set it), or None."""
    if record.backend == "skypilot":
        from mudpuppy.backends.skypilot import volume_url

        return volume_url(launch, record.id)
    return launch.volume or None


def launch_of(record: RunRecord) -> LaunchSection:
    from mudpuppy.launcher.config.schema.launch import LaunchSection

    return LaunchSection.model_validate(json.loads(record.launch or "{}"))


def source_for(record: RunRecord) -> Source:
    """Where ``record``'s output folder can be read from here: its volume when it has one (the runtime mirrors
    ``output_dir`` there), else the place its backend wrote it."""
    launch = launch_of(record)
    url = volume_url_of(record, launch)
    if url:
        return volume_source(url, launch)
    where = record.output or ""
    if record.backend == "modal":
        name = launch.modal.volume
        path = where.split(": ", 1)[1] if ": " in where else f"/runs/{record.id}"
        return modal_source(name, path, launch.modal.environment)
    if record.backend not in ("local", "ssh", "slurm"):
        raise UserError(f"run {record.id} ({record.backend}) kept its outputs on the cluster's nodes ({where}); "
                        "nothing here can read them", hint="give the run a launch.volume (s3://, gs://, file:// on "
                        "shared storage) and its outputs are pulled from there")
    # "SESSION:PATH": the session may hold ":port" (ssh hosts); the path starts with / or ~
    match = re.match(r"^(.*?):([/~].*)$", where)
    session, path = (match.group(1), match.group(2)) if match else ("", "")
    if not path:
        raise UserError(f"run {record.id} has no recorded output location ({record.status})",
                        hint="it may never have been submitted; `mudpuppy status RUN` says more")
    if record.backend == "local" or (record.backend == "slurm" and session == "local"):
        if record.backend == "local" and session not in (socket.gethostname(), "localhost"):
            raise UserError(f"run {record.id} wrote its outputs on {session}, not on this machine ({path})",
                            hint="run `mudpuppy pull` there, or copy the folder yourself")
        return volume_source(f"file://{path}", launch)
    from mudpuppy.backends.transport import SSHTransport

    host = session.split(",")[0]  # ssh: the first host holds rank 0's folder; slurm: the login node
    return SftpSource(SSHTransport(host, launch.ssh), path)


def volume_source(url: str, launch: LaunchSection) -> Source:
    from mudpuppy.runtime.checkpoints.volume import open_volume

    if url.startswith("modal://"):
        name, _, sub = url[len("modal://"):].partition("/")
        return modal_source(name, sub or "/", launch.modal.environment)
    options = launch.options.get("volume")
    if url.startswith("file://") and not os.path.isdir(url[len("file://"):]):
        raise UserError(f"{url} does not exist on this machine",
                        hint="pull where that folder is mounted, or copy it here first")
    volume: Source = open_volume(url, dict(options) if isinstance(options, dict) else None)
    return volume


def modal_source(name: str, path: str, environment: str | None) -> Source:
    try:
        import modal
    except ImportError:
        raise UserError("pulling from a Modal volume needs the Modal client",
                        hint="pip install 'mudpuppy[modal]'") from None
    volume = modal.Volume.from_name(name, environment_name=environment)
    return ModalSource(volume, path, name)


__all__ = ["ModalSource", "PullReport", "SftpSource", "Source", "fetch_file", "launch_of", "pull", "source_for",
           "volume_url_of"]
