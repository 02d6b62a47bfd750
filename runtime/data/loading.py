"""Raw dataset loading for one ``datasets:`` entry, with Axolotl's precedence: local path (file or folder),
hub id (online only), s3/gs (fsspec), https URL. A malformed JSON line is reported with its file and line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

log = logging.getLogger(__name__)

SUFFIX_TYPES = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".txt": "text"}
REMOTE_PREFIXES = ("s3://", "gs://", "gcs://")


def ds_type(ds: Any, path: str) -> str:
    if ds.ds_type:
        return {"txt": "text", "jsonl": "json"}.get(ds.ds_type, ds.ds_type)
    for suffix, kind in SUFFIX_TYPES.items():
        if suffix in path:
            return kind
    return "json"


def _offline() -> bool:
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_raw(ds: Any, split: str, skip_invalid: bool = False) -> tuple[Any, int]:
    """The raw rows of one dataset entry (a ``datasets.Dataset``) and how many malformed lines were skipped."""
    import datasets

    path = ds.path
    if not path:
        raise UserError("datasets: an entry has no path")
    kwargs: dict[str, Any] = {"split": ds.split or None, "name": ds.name}
    local = Path(path)
    try:
        if local.is_dir():
            if ds.data_files:
                files = folder_data_files(local, ds.data_files)
                loaded = datasets.load_dataset(ds_type(ds, files[0]), data_files=files, **kwargs)
            elif (local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists():
                loaded = datasets.load_from_disk(str(local))
            else:
                loaded = datasets.load_dataset(str(local), **kwargs)
        elif local.is_file():
            kind = ds_type(ds, path)
            kwargs["split"] = kwargs["split"] or "train"
            if kind == "json":
                return _load_json_file(local, kwargs, skip_invalid)
            loaded = datasets.load_dataset(kind, data_files=str(local), **kwargs)
        elif path.startswith(REMOTE_PREFIXES):
            loaded = _load_remote(ds, kwargs)
        elif path.startswith(("https://", "http://")):
            loaded = datasets.load_dataset(ds_type(ds, path), data_files=path, **kwargs)
        elif path.startswith((".", "/", "~")) or path.count("/") != 1 or _offline():
            raise UserError(f"datasets: path {path!r} does not exist",
                            hint="give a local file/folder, an https:// or s3:// URL, or a hub id when online")
        else:
            loaded = datasets.load_dataset(path, data_files=ds.data_files, revision=ds.revision,
                                           trust_remote_code=bool(ds.trust_remote_code), **kwargs)
    except UserError:
        raise
    except (FileNotFoundError, ValueError, OSError, datasets.exceptions.DatasetGenerationError) as exc:
        cause = exc.__cause__ if isinstance(exc, datasets.exceptions.DatasetGenerationError) and exc.__cause__ else exc
        reason = (str(cause).splitlines() or [type(cause).__name__])[0]
        raise UserError(f"datasets: cannot load {path!r}: {reason}") from None
    return select_split(loaded, ds, split), 0


def folder_data_files(folder: Path, data_files: str | list[str]) -> list[str]:
    """``data_files`` of a local folder entry, read as Axolotl reads them: relative to where the command runs
    (Axolotl hands them to ``load_dataset(type, data_files=...)`` as they are). A name found only inside the
    folder is taken from there too, with a warning: Axolotl itself would not find it."""
    out = []
    for value in [data_files] if isinstance(data_files, str) else data_files:
        given = Path(value).expanduser()
        if not given.is_absolute() and not given.exists() and (folder / given).exists():
            log.warning("datasets: data_files %r is not under the current folder but is inside %s; reading it "
                        "from there (Axolotl reads data_files relative to where the command runs)", value, folder)
            given = folder / given
        out.append(str(given))
    return out


def select_split(loaded: Any, ds: Any, split: str) -> Any:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if ds.split and ds.split in loaded:
            return loaded[ds.split]
        if split in loaded:
            return loaded[split]
        raise UserError(f"datasets: {ds.path!r} has no {split!r} split (has {', '.join(loaded)})",
                        hint="pick one with `split:`")
    return loaded


def _load_json_file(path: Path, kwargs: dict[str, Any], skip_invalid: bool) -> tuple[Any, int]:
    """datasets' json builder reports a bad line without saying where; find it ourselves when that happens."""
    import datasets

    first = _first_row(path)
    if first is None:
        raise UserError(f"{path} has no rows (the file is empty or only whitespace)",
                        hint="add rows, or remove this entry from datasets:")
    line_no, text = first
    if not text.startswith(b"["):  # JSON lines: pyarrow kills the process (SIGSEGV) when the file starts with null
        why = None
        try:
            value = json.loads(text)
            if not isinstance(value, dict):
                why = f"expected an object, got {type(value).__name__}"
        except ValueError as exc:
            if text.startswith(b"null"):  # other malformed lines: datasets fails below and the scan names them
                why = getattr(exc, "msg", str(exc))
        if why and not skip_invalid:
            raise UserError(f"{path}: line {line_no}: malformed JSON ({why})",
                            hint="fix the line or set skip_invalid_rows: true")
        if why:
            return _tolerant_rows(path)
    try:
        return datasets.load_dataset("json", data_files=str(path), **kwargs), 0
    except Exception as exc:  # pyarrow/datasets raise assorted types for malformed json
        bad = _first_bad_json_line(path)
        if bad is None:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{path}: cannot read as JSON: {reason}") from None
        if not skip_invalid:
            line_no, why = bad
            raise UserError(f"{path}: line {line_no}: malformed JSON ({why})",
                            hint="fix the line or set skip_invalid_rows: true") from None
    return _tolerant_rows(path)


def _tolerant_rows(path: Path) -> tuple[Any, int]:
    """The object rows of a JSON lines file, skipping (and counting) every other line."""
    import datasets

    rows, skipped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(value, dict):
            rows.append(value)
        else:
            skipped += 1
    if not rows:
        raise UserError(f"{path}: no valid rows ({skipped} malformed lines skipped)", hint="check the file's format")
    return datasets.Dataset.from_list(rows), skipped


def _first_row(path: Path) -> tuple[int, bytes] | None:
    """(line number, text) of the first non-blank line, or None for a file of only whitespace.

    Reads line by line (each capped at 16 MiB), so only as much of a big file as it takes to find a row.
    """
    with path.open("rb") as handle:
        number = 0
        while line := handle.readline(1 << 24):
            number += 1
            if line.strip():
                return number, line.strip()
    return None


def _first_bad_json_line(path: Path) -> tuple[int, str] | None:
    text = path.read_text(encoding="utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array file, not JSON lines
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return exc.lineno, exc.msg
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return number, exc.msg
        if not isinstance(value, dict):
            return number, f"expected an object, got {type(value).__name__}"
    return None


def _load_remote(ds: Any, kwargs: dict[str, Any]) -> Any:
    import datasets

    try:
        import fsspec
    except ImportError:
        raise UserError(f"datasets: {ds.path!r} needs fsspec", hint="pip install 'mudpuppy[s3]'") from None
    fs, _, _ = fsspec.get_fs_token_paths(ds.path)
    if fs.isdir(ds.path):
        return datasets.load_from_disk(ds.path)
    return datasets.load_dataset(ds_type(ds, ds.path), data_files=ds.path, **kwargs)
