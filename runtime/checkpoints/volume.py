"""A run's durable storage, addressed by one URL, so the sync code never branches on where bytes live.

``open_volume(url)`` understands:

``file:///shared/runs/x``  a local or shared (NFS, Lustre) directory: the usual case on SLURM and ssh.
``s3://bucket/prefix``     AWS S3 or any S3-compatible store through s3fs. The endpoint comes from
                           ``storage_options["endpoint_url"]`` (the launcher passes ``launch.options``), else
                           ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; credentials from the usual AWS chain.
``gs://bucket/prefix``     Google Cloud Storage through gcsfs, when installed.
``modal://name[/sub]``     a Modal Volume mounted into the container (default mount ``/vol/<name>``, or
                           ``MUDPUPPY_MODAL_VOLUME_ROOT``). Files go through the mount; ``commit()`` publishes
                           writes to other containers and ``reload()`` sees theirs, via ``modal.Volume``.

Everything is fsspec underneath; a ``Volume`` only adds the root prefix, an atomic small-file write (local
filesystems get temp + rename, object stores are atomic per PUT) and the commit/reload hooks that only Modal
needs. Paths given to a ``Volume`` are relative, with ``/`` separators.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mudpuppy.launcher.errors import UserError

log = logging.getLogger(__name__)

ENV_MODAL_VOLUME_ROOT = "MUDPUPPY_MODAL_VOLUME_ROOT"
MODAL_DEFAULT_MOUNT = "/vol"
SCHEMES = ("file", "s3", "gs", "modal")


@dataclass
class Volume:
    """A directory on some filesystem: ``fs`` is an fsspec filesystem, ``root`` the path inside it."""

    url: str
    fs: Any
    root: str
    commit_hook: Callable[[], None] | None = field(default=None, repr=False)
    reload_hook: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    def path(self, rel: str = "") -> str:
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def child(self, rel: str) -> Volume:
        """The same volume rooted deeper, e.g. at a run's own directory."""
        rel = rel.strip("/")
        return Volume(
            url=f"{self.url.rstrip('/')}/{rel}",
            fs=self.fs,
            root=self.path(rel),
            commit_hook=self.commit_hook,
            reload_hook=self.reload_hook,
        )

    # --- files -----------------------------------------------------------------------------------------
    def put_file(self, local: Path, rel: str) -> None:
        target = self.path(rel)
        if self.is_local:
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        self.fs.put_file(str(local), target)

    def get_file(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self.path(rel), str(local))

    def read_text(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist."""
        try:
            data = self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            return None
        return bytes(data).decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        """Write a small file so readers see the old or the new content, never a torn one."""
        target = self.path(rel)
        data = text.encode("utf-8")
        if self.is_local:
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            tmp = f"{posixpath.dirname(target)}/.{posixpath.basename(target)}.tmp-{uuid.uuid4().hex[:8]}"
            self.fs.pipe_file(tmp, data)
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, data)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def sizes(self, rel: str = "") -> dict[str, int]:
        """Every file under ``rel`` (recursively) -> its size, keyed by path relative to the volume root."""
        self.invalidate()
        base = self.path(rel)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        prefix = self.root.rstrip("/") + "/"
        out: dict[str, int] = {}
        for name, info in found.items():
            if info.get("type", "file") != "file":
                continue
            stripped = _strip_protocol(self.fs, name)
            if stripped.startswith(prefix):
                out[stripped[len(prefix) :]] = int(info.get("size") or 0)
        return out

    def remove(self, rel: str, *, recursive: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(rel), recursive=recursive)
        self.invalidate()

    def invalidate(self) -> None:
        """Forget cached listings (s3fs caches directory listings per instance)."""
        invalidate = getattr(self.fs, "invalidate_cache", None)
        if invalidate is not None:
            invalidate()

    # --- Modal-style visibility hooks (no-ops elsewhere) ------------------------------------------------
    def commit(self) -> None:
        """Make our writes visible to other containers (Modal); filesystems and object stores need nothing."""
        if self.commit_hook is not None:
            self.commit_hook()

    def reload(self) -> None:
        """See writes other containers committed (Modal) before reading."""
        if self.reload_hook is not None:
            self.reload_hook()
        self.invalidate()


def open_volume(url: str, storage_options: Mapping[str, Any] | None = None) -> Volume:
    """Parse a volume URL into a ready ``Volume``; a bad or unsupported URL is a one-line ``UserError``."""
    options = dict(storage_options or {})
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UserError(f"volume {url!r}: file URLs need an absolute path, like file:///shared/runs")
        return _local_volume(url, parts.path)
    if scheme == "s3":
        return _s3_volume(url, parts.netloc, parts.path, options)
    if scheme == "gs":
        return _gcs_volume(url, parts.netloc, parts.path, options)
    if scheme == "modal":
        return _modal_volume(url, parts.netloc, parts.path, options)
    if not scheme and url.startswith("/"):
        raise UserError(f"volume {url!r} is a bare path; write it as a URL: file://{url}")
    raise UserError(
        f"volume {url!r}: unsupported scheme {scheme or '(none)'!r}; use file:///path, s3://bucket/prefix, "
        "gs://bucket/prefix or modal://name"
    )


def _local_volume(url: str, path: str) -> Volume:
    from fsspec.implementations.local import LocalFileSystem

    if not path.startswith("/"):
        raise UserError(f"volume {url!r}: file URLs need an absolute path, like file:///shared/runs")
    root = os.path.normpath(path)
    fs = LocalFileSystem(auto_mkdir=True)
    fs.makedirs(root, exist_ok=True)
    return Volume(url=url, fs=fs, root=root)


def _bucket_root(url: str, bucket: str, path: str) -> str:
    if not bucket:
        raise UserError(f"volume {url!r} names no bucket; write it like {url.split(':', 1)[0]}://bucket/prefix")
    prefix = path.strip("/")
    return f"{bucket}/{prefix}" if prefix else bucket


def _s3_volume(url: str, bucket: str, path: str, options: dict[str, Any]) -> Volume:
    try:
        import s3fs
    except ImportError:
        raise UserError(f"volume {url!r} needs s3fs, which is not installed: pip install 'mudpuppy[s3]'") from None
    endpoint = (
        options.pop("endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        client_kwargs = dict(options.pop("client_kwargs", {}) or {})
        client_kwargs.setdefault("endpoint_url", endpoint)
        options["client_kwargs"] = client_kwargs
    # A fresh instance per volume: fsspec's instance cache would otherwise share listings across tests/runs.
    options.setdefault("skip_instance_cache", True)
    fs = s3fs.S3FileSystem(**options)
    return Volume(url=url, fs=fs, root=_bucket_root(url, bucket, path))


def _gcs_volume(url: str, bucket: str, path: str, options: dict[str, Any]) -> Volume:
    try:
        import gcsfs
    except ImportError:
        raise UserError(f"volume {url!r} needs gcsfs, which is not installed: pip install 'mudpuppy[gcs]'") from None
    fs = gcsfs.GCSFileSystem(**options)
    return Volume(url=url, fs=fs, root=_bucket_root(url, bucket, path))


def _modal_volume(url: str, name: str, path: str, options: dict[str, Any]) -> Volume:
    """A Modal Volume is a mounted directory plus explicit commit/reload calls on the ``modal.Volume``."""
    from fsspec.implementations.local import LocalFileSystem

    if not name:
        raise UserError(f"volume {url!r} names no Modal volume; write it like modal://my-volume")
    mount = options.pop("mount_path", None) or os.environ.get(ENV_MODAL_VOLUME_ROOT) or f"{MODAL_DEFAULT_MOUNT}/{name}"
    root = os.path.normpath(os.path.join(mount, path.strip("/"))) if path.strip("/") else os.path.normpath(mount)
    if not os.path.isdir(mount):
        raise UserError(
            f"volume {url!r}: Modal volume {name!r} is not mounted at {mount}; mount it there or set "
            f"{ENV_MODAL_VOLUME_ROOT} to its mount path"
        )
    fs = LocalFileSystem(auto_mkdir=True)
    fs.makedirs(root, exist_ok=True)
    commit_hook = options.pop("commit_hook", None)
    reload_hook = options.pop("reload_hook", None)
    if commit_hook is None or reload_hook is None:
        default_commit, default_reload = _modal_hooks(name)
        commit_hook = commit_hook or default_commit
        reload_hook = reload_hook or default_reload
    return Volume(url=url, fs=fs, root=root, commit_hook=commit_hook, reload_hook=reload_hook)


def _modal_hooks(name: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """commit/reload on ``modal.Volume.from_name(name)``; looked up lazily so import stays cheap."""
    handle: dict[str, Any] = {}

    def volume() -> Any:
        if "v" not in handle:
            import modal

            handle["v"] = modal.Volume.from_name(name)
        return handle["v"]

    def commit() -> None:
        volume().commit()

    def reload() -> None:
        volume().reload()

    return commit, reload


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _strip_protocol(fs: Any, name: str) -> str:
    return str(fs._strip_protocol(name))
