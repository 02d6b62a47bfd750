"""Images and audio that multimodal dataset rows point at travel in the bundle too.

A multimodal JSON/JSONL row names its media by path (``{"type": "image", "path": "images/cat.png"}``, an
``images`` column, ``"image": "..."``), resolved against the folder the command runs in, as Axolotl resolves
them. For a run elsewhere those files must come along: each local file a row references is copied under
``files/media/`` and the bundled copy of the dataset file is rewritten to point there (the runtime runs in a
folder where ``files/`` is the bundle's data, so the new relative paths resolve). Rows are otherwise unchanged;
URLs, base64 and references to files that do not exist are left for the runtime, which reports them per row.

Only JSON and JSONL dataset files are scanned; parquet/arrow rows carry their images as bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

MEDIA_SLOT = "media"
MEDIA_KEYS = ("path", "image", "audio")


def carry_media(data: dict[str, Any], inside_to_source: dict[str, str],
                add: Callable[[str, str, str], str]) -> dict[str, bytes]:
    """Rewritten contents (bundle path -> bytes) of the bundled dataset files whose rows reference local media.

    ``data`` is the config being bundled (its dataset paths already rewritten to ``files/...``);
    ``add(value, slot, key)`` bundles one local file and returns its path inside the bundle.
    """
    if not data.get("processor_type"):
        return {}
    out: dict[str, bytes] = {}
    for list_key in ("datasets", "test_datasets"):
        for index, entry in enumerate(data.get(list_key) or []):
            inside = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(inside, str):
                continue
            source = inside_to_source.get(inside)
            if source is None or not source.endswith((".json", ".jsonl")):
                continue
            label = f"{list_key}[{index}]"

            def bundle_one(value: str, label: str = label) -> str:
                return add(value, MEDIA_SLOT, f"{label} media {value}")

            rewritten = _rewrite(Path(source), bundle_one)
            if rewritten is not None:
                out[inside] = rewritten
    return out


def _rewrite(path: Path, bundle_one: Callable[[str], str]) -> bytes | None:
    text = path.read_text(encoding="utf-8")
    changed = False

    def fix(row: Any) -> Any:
        nonlocal changed
        if not isinstance(row, dict):
            return row
        for column in ("images", "image"):
            value = row.get(column)
            if isinstance(value, str) and _local(value):
                row[column] = bundle_one(value)
                changed = True
            elif isinstance(value, list):
                row[column] = [bundle_one(v) if isinstance(v, str) and _local(v) else v for v in value]
                changed = changed or row[column] != value
        for key in ("messages", "conversations"):
            for message in row.get(key) or []:
                content = message.get("content") if isinstance(message, dict) else None
                for part in content if isinstance(content, list) else []:
                    if not isinstance(part, dict) or part.get("type") not in ("image", "audio"):
                        continue
                    for media_key in MEDIA_KEYS:
                        value = part.get(media_key)
                        if isinstance(value, str) and _local(value):
                            part[media_key] = bundle_one(value)
                            changed = True
        return row

    stripped = text.lstrip()
    if path.suffix == ".json" and stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError:
            return None  # the runtime reports malformed JSON with its line
        result = json.dumps([fix(r) for r in rows], ensure_ascii=False)
        return result.encode() if changed else None
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.dumps(fix(json.loads(line)), ensure_ascii=False) if line.strip() else line)
        except json.JSONDecodeError:
            lines.append(line)  # left as written: the runtime names the bad line
    return ("\n".join(lines) + "\n").encode() if changed else None


def _local(value: str) -> bool:
    return "://" not in value and not value.startswith("data:") and Path(value).expanduser().is_file()
