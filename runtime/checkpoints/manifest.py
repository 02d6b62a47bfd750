"""A checkpoint directory counts only when its manifest exists and matches its files.

The manifest (``mudpuppy-manifest.json``: step, every file's relative path, size and sha256) is written last,
atomically, locally and on the volume. A crash mid-save therefore leaves a directory without a manifest, which
every reader skips, so "newest checkpoint" always means "newest complete checkpoint".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_NAME = "mudpuppy-manifest.json"
MANIFEST_VERSION = 1
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass
class Manifest:
    step: int
    files: list[FileEntry] = field(default_factory=list)
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        return cls(step=int(raw["step"]), files=[FileEntry(**f) for f in raw["files"]], version=raw.get("version", 1))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(directory: Path, step: int) -> Manifest:
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        rel = path.relative_to(directory).as_posix()
        entries.append(FileEntry(path=rel, size=path.stat().st_size, sha256=sha256_file(path)))
    return Manifest(step=step, files=entries)


def write_manifest(directory: Path, step: int) -> Manifest:
    """Hash every file in ``directory`` and write the manifest last, via a temp file and rename."""
    manifest = build_manifest(directory, step)
    write_text_atomic(directory / MANIFEST_NAME, manifest.to_json())
    return manifest


def read_manifest(directory: Path) -> Manifest | None:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return Manifest.from_json(path.read_text())
    except (ValueError, KeyError, TypeError):
        return None


def verify(directory: Path, *, checksums: bool = True) -> bool:
    """True when the manifest exists and every listed file has its size (and sha256) on disk."""
    manifest = read_manifest(directory)
    if manifest is None:
        return False
    for entry in manifest.files:
        path = directory / entry.path
        if not path.is_file() or path.stat().st_size != entry.size:
            return False
        if checksums and sha256_file(path) != entry.sha256:
            return False
    return True


def checkpoint_step(directory: Path) -> int | None:
    match = _CHECKPOINT_DIR.match(directory.name)
    return int(match.group(1)) if match else None


def complete_checkpoints(output_dir: Path, *, checksums: bool = False) -> list[Path]:
    """``checkpoint-N`` directories under ``output_dir`` with a valid manifest, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        step = checkpoint_step(child)
        if step is not None and child.is_dir() and verify(child, checksums=checksums):
            found.append((step, child))
    return [path for _, path in sorted(found)]


def latest_complete_checkpoint(output_dir: Path, *, checksums: bool = False) -> Path | None:
    found = complete_checkpoints(output_dir, checksums=checksums)
    return found[-1] if found else None


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
