"""Stands in for the runtime (``launch.entrypoint``) where a test checks that a secret reached the training process.

It records the sha256 of ``$MP_PROBE_SECRET`` (or that it is unset) into the file ``$MP_PROBE_OUT`` (a folder
gets one file per process); the value itself is never written or printed. Plain values (``MP_PROBE_PLAIN_*``,
e.g. hostile test strings) and its argv are recorded as they arrived.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def main() -> int:
    value = os.environ.get("MP_PROBE_SECRET")
    record = {"set": value is not None, "sha256": hashlib.sha256(value.encode()).hexdigest() if value else None,
              "argv": sys.argv[1:], "pid": os.getpid(),
              "plain": {k: v for k, v in os.environ.items() if k.startswith("MP_PROBE_PLAIN_")}}
    out = Path(os.environ["MP_PROBE_OUT"])
    if out.is_dir():  # one file per process (several Ray Train workers)
        out = out / f"{os.getpid()}.json"
    out.write_text(json.dumps(record) + "\n")
    print("secret probe: recorded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
