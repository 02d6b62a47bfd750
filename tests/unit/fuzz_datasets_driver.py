"""Child process for tests/unit/test_fuzz_inputs.py: random dataset files through the real loader.

Run as ``python fuzz_datasets_driver.py FOLDER PROGRESS``. It limits its own address space, writes each input to
PROGRESS before loading it (so a crash can be reported with its input), and prints a JSON summary last. Any
exception other than UserError propagates and exits non-zero with its traceback.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if __name__ == "__main__":  # limit only the child process, never an importer
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

from mudpuppy.launcher.errors import UserError  # noqa: E402
from mudpuppy.runtime.data.loading import load_raw  # noqa: E402

FOLDER, PROGRESS = (Path(sys.argv[1]), Path(sys.argv[2])) if __name__ == "__main__" else (Path(), Path())
COUNTS = {"examples": 0, "loaded": 0, "user_errors": 0}

ROW = json.dumps({"instruction": "Say 1.", "input": "", "output": "1 said."})
PIECES = st.sampled_from([ROW, "\n", "{", "}", "[", "]", '"', ":", ",", "null", "true", "1", "1e400", "NaN", "\\u0000",
                          '{"a": 1}', '{"a": "x"}', '{"a": [1]}', '{"a": {"b": 1}}', "[1, 2]", '"text"', " ",
                          "\xff", "\x00", "instruction,output", "a,b,c", '""'])
TEXTUAL = st.lists(PIECES, max_size=12).map(lambda parts: "".join(parts).encode("utf-8", "surrogateescape"))
CONTENT = st.one_of(st.binary(max_size=200), TEXTUAL)


EXAMPLES = max(1, int(50 * float(os.environ.get("MUDPUPPY_FUZZ_SCALE", "1"))))


@settings(derandomize=True, database=None, max_examples=EXAMPLES, deadline=20_000,
          suppress_health_check=list(HealthCheck))
@given(content=CONTENT, suffix=st.sampled_from([".jsonl", ".json", ".csv", ".txt"]),
       skip_invalid=st.booleans())
def fuzz(content: bytes, suffix: str, skip_invalid: bool) -> None:
    COUNTS["examples"] += 1
    path = FOLDER / f"case{COUNTS['examples']}{suffix}"
    path.write_bytes(content)
    PROGRESS.write_bytes(suffix.encode() + b" " + content)
    ds = SimpleNamespace(path=str(path), ds_type=None, split=None, name=None, data_files=None, revision=None,
                         trust_remote_code=False)
    try:
        rows, _ = load_raw(ds, "train", skip_invalid=skip_invalid)
        len(rows)
        COUNTS["loaded"] += 1
    except UserError as exc:
        assert "\n" not in exc.one_line()
        COUNTS["user_errors"] += 1


if __name__ == "__main__":
    FOLDER.mkdir(parents=True, exist_ok=True)
    fuzz()
    print(json.dumps(COUNTS))
