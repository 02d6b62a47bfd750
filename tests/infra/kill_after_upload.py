"""The real runtime, SIGKILLed once checkpoint-$KILL_AFTER has reached the run's ``file://`` volume: a machine lost
mid-run, at a deterministic point, with nothing saved on the way out. Used as ``launch.entrypoint`` by the resume
tests (``python -m mudpuppy.tests.infra.kill_after_upload BUNDLE``); without KILL_AFTER it is the plain runtime."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _arm() -> None:
    from mudpuppy.runtime.train import callbacks

    step = int(os.environ["KILL_AFTER"])
    marker = Path(os.environ["MUDPUPPY_VOLUME"].removeprefix("file://")) / f"checkpoint-{step}" / \
        "mudpuppy-manifest.json"
    original = callbacks.PreemptionCallback.on_step_end

    def on_step_end(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step > step:  # checkpoint-N is saved after step N's callbacks, uploaded in the background
            deadline = time.monotonic() + 120
            while not marker.is_file() and time.monotonic() < deadline:
                time.sleep(0.05)
            print(f"kill_after_upload: {marker.parent.name} is on the volume; SIGKILL at step {state.global_step}",
                  flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, args, state, control, **kwargs)

    callbacks.PreemptionCallback.on_step_end = on_step_end  # type: ignore[method-assign]


if __name__ == "__main__":
    if os.environ.get("KILL_AFTER"):
        _arm()
    from mudpuppy.runtime.entry import main

    sys.exit(main())
