"""Ask the process that owns a node's volume mount to commit (or reload) it, and wait until it has.

Why: on volumes that are not shared filesystems (Modal's: each container sees its own writes until it commits, and
other containers' commits only after it reloads), a sharded multi-node checkpoint is complete on the volume only
when every node has committed its shards *before* rank 0 writes the manifest. The runtime cannot call the volume's
commit itself (Modal's hooks live in the container's function process, the runtime is its child), so the two
meet through a local folder: the runtime drops ``<token>.commit`` (or ``.reload``) there and waits for
``<token>.done`` (or ``<token>.failed`` with the error). The backend sets ``MUDPUPPY_VOLUME_FLUSH`` to that folder
and runs a ``FlushServer``; without the variable (local disks, shared POSIX filesystems, fsspec volumes that rank
0 uploads itself) ``request`` does nothing, so the same checkpoint code runs on every backend.

This module lives in ``launcher`` because both sides import it: backends may not import the runtime and vice versa.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ENV_VOLUME_FLUSH = "MUDPUPPY_VOLUME_FLUSH"
KINDS = ("commit", "reload")


class FlushError(RuntimeError):
    """The node's volume could not be committed/reloaded (after the server's own retries), or nobody answered."""


def request(kind: str, *, timeout_s: float = 900.0, poll_s: float = 0.05) -> bool:
    """Have this node's volume committed (``commit``) or refreshed (``reload``); blocks until done.

    Returns False when no server is configured (nothing to do), True when done; raises ``FlushError`` when the
    server reports a failure or does not answer within ``timeout_s``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown volume flush kind {kind!r}")
    folder = os.environ.get(ENV_VOLUME_FLUSH, "").strip()
    if not folder:
        return False
    base = Path(folder) / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp = base.with_suffix(".tmp")
    tmp.write_text(kind)
    os.replace(tmp, base.with_suffix(f".{kind}"))  # the server only ever sees complete requests
    done, failed = base.with_suffix(".done"), base.with_suffix(".failed")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done.exists():
            done.unlink(missing_ok=True)
            return True
        if failed.exists():
            why = failed.read_text().strip()
            failed.unlink(missing_ok=True)
            raise FlushError(f"volume {kind} failed: {why}")
        time.sleep(poll_s)
    raise FlushError(f"volume {kind} not answered within {timeout_s:.0f}s (no flush server for {folder}?)")


class FlushServer:
    """Answers ``request`` calls for one node: a thread that runs ``commit``/``reload`` for each request file.

    ``commit`` and ``reload`` return None on success or the error as one line (the backend's own retry wrapper,
    e.g. ``commit_with_retries``); requests are served one at a time, in the order they arrived.
    """

    def __init__(self, folder: Path, commit: Callable[[], str | None], reload: Callable[[], str | None],
                 poll_s: float = 0.05) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.actions = {"commit": commit, "reload": reload}
        self.poll_s = poll_s
        self.served: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mudpuppy-volume-flush", daemon=True)

    def start(self) -> FlushServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.serve_pending()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.serve_pending()

    def serve_pending(self) -> None:
        pending = [p for p in self.folder.iterdir() if p.suffix.lstrip(".") in KINDS]
        for path in sorted(pending, key=lambda p: p.stat().st_mtime_ns):
            kind = path.suffix.lstrip(".")
            try:
                error = self.actions[kind]()
            except Exception as exc:  # a hook that raises instead of returning its error
                error = f"{type(exc).__name__}: {exc}"
            answer = path.with_suffix(".failed" if error else ".done")
            tmp = path.with_suffix(".answer-tmp")
            tmp.write_text(error or "")
            os.replace(tmp, answer)
            path.unlink(missing_ok=True)
            self.served.append(kind)
            if error:
                self.failures.append(f"{kind}: {error}")
