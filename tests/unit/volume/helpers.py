"""Checkpoint directories and volume wrappers shared by the volume unit and integration tests."""

from __future__ import annotations

import threading
from pathlib import Path

from mudpuppy.runtime.checkpoints.manifest import write_manifest
from mudpuppy.runtime.checkpoints.volume import Volume


def make_checkpoint(output_dir: Path, step: int, size: int = 4096) -> Path:
    """A complete ``checkpoint-N`` (files whose bytes depend on the step, then the manifest)."""
    ckpt = output_dir / f"checkpoint-{step}"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(bytes([step % 256]) * size)
    (ckpt / "sub" / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    write_manifest(ckpt, step)
    return ckpt


class RecordingVolume(Volume):
    """Logs every write (in order) and can block or fail ``put_file`` on demand."""

    def __init__(self, inner: Volume) -> None:
        super().__init__(inner.url, inner.fs, inner.root, inner.commit_hook, inner.reload_hook)
        self.events: list[tuple[str, str]] = []
        self.gate: threading.Event | None = None
        self.fail_puts = 0
        self.fail_after_puts: int | None = None
        self.puts_started = threading.Semaphore(0)

    def put_file(self, local: Path, rel: str) -> None:
        self.puts_started.release()
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.fail_puts > 0:
            self.fail_puts -= 1
            raise OSError("injected network failure")
        if self.fail_after_puts is not None:
            if self.fail_after_puts == 0:
                raise OSError("injected crash mid-upload")
            self.fail_after_puts -= 1
        super().put_file(local, rel)
        self.events.append(("put", rel))

    def write_text(self, rel: str, text: str) -> None:
        super().write_text(rel, text)
        self.events.append(("write", rel))

    def __hash__(self) -> int:
        return id(self)
