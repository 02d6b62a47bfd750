"""Multimodal rows: OpenAI-style messages whose content is a list of text / image / audio parts.

As in Axolotl (``processor_type`` set, ``skip_prepare_dataset: true``) nothing is tokenized ahead of time: the
rows keep their messages and the collator (``runtime.train.mm_collator``) loads the images and lets the model's
processor render, tokenize and expand them per batch. What this module adds before training starts is the
check Axolotl leaves to the first batch that meets a bad row: every message shape and every media reference is
checked once, up front, so a missing file, a file that is not an image, an image over ``max_image_pixels`` or
a remote URL nobody allowed is one line naming the dataset file and row (or the row is skipped with
``skip_invalid_rows``), never a traceback mid-training.

Rows are normalised the way Axolotl's processing strategy does it: ``conversations`` (ShareGPT ``from``/
``value``) become ``messages`` with human/gpt mapped to user/assistant, a custom ``field_messages`` is read,
string content becomes one text part, and the first image of an ``images``/``image`` column fills the first
bare ``{"type": "image"}`` placeholder or is appended to the first user turn (then, and only then, resized to
``image_size``). Local paths resolve against the working folder, as transformers' ``load_image`` resolves them
for Axolotl. Each row is stored as JSON text plus where it came from, so the collator can name it too.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data.rows import RowError

log = logging.getLogger("mudpuppy.runtime.data")

ROW_COLUMN = "mm_messages"
WHERE_COLUMN = "mm_where"
SOURCE_KEYS = ("image", "url", "path", "base64")
ROLE_NAMES = {"human": "user", "gpt": "assistant"}


def is_multimodal(cfg: Any) -> bool:
    """Axolotl uses its multimodal collator exactly when ``processor_type`` is set."""
    return bool(cfg.processor_type)


# ---------------------------------------------------------------- row shape


def _messages_field(row: Mapping[str, Any], wanted: tuple[str, ...]) -> str | None:
    for name in wanted:
        if row.get(name) is not None:
            return name
    return "messages" if row.get("messages") is not None else None


def normalize_messages(row: Mapping[str, Any], field_messages: tuple[str, ...]) -> list[dict[str, Any]]:
    """The row's conversation as ``[{"role", "content": [parts]}]`` (Axolotl's normalisation)."""
    name = _messages_field(row, field_messages)
    messages = row.get(name) if name else None
    if messages is None:
        messages = row.get("conversations")
    if not isinstance(messages, list) or not messages:
        wanted = ", ".join(dict.fromkeys([*field_messages, "messages", "conversations"]))
        raise RowError(wanted, "needs a non-empty list of messages")
    out = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise RowError(f"messages[{index}]", "must be an object with role and content")
        if "from" in message and "value" in message and "role" not in message:
            role, content = ROLE_NAMES.get(message["from"], message["from"]), message["value"]
        else:
            role, content = message.get("role"), message.get("content")
        if not isinstance(role, str):
            raise RowError(f"messages[{index}].role", "is missing")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            parts = [dict(_strip_nulls(p)) for p in content]
        else:
            raise RowError(f"messages[{index}].content", "must be a string or a list of parts")
        for k, part in enumerate(parts):
            if not isinstance(part.get("type"), str):
                raise RowError(f"messages[{index}].content[{k}]", "needs a type (text, image, audio)")
        out.append({"role": role, "content": parts})
    return out


def _strip_nulls(value: Any) -> Any:
    """Arrow gives every part every key seen in the file (null where absent); drop those again."""
    if isinstance(value, Mapping):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    return value


def attach_column_image(messages: list[dict[str, Any]], row: Mapping[str, Any]) -> None:
    """The first image of an ``images``/``image`` column goes where Axolotl puts it (and is marked for resizing)."""
    key = next((k for k in ("images", "image") if row.get(k) is not None), None)
    if key is None:
        return
    value = row[key]
    if isinstance(value, list):
        if not value:
            return
        if len(value) > 1:
            log.warning("a row has %d images in its %s column; only the first is used (as in Axolotl): put "
                        "several images in the messages' content parts instead", len(value), key)
        value = value[0]
    source = _column_source(value)
    for message in messages:
        for part in message["content"]:
            if part["type"] == "image" and not any(k in part for k in SOURCE_KEYS):
                part.update(source, resize=True)
                return
    target = next((m for m in messages if m["role"] == "user"), messages[0])
    target["content"].append({"type": "image", **source, "resize": True})


def _column_source(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"image": value}
    if isinstance(value, Mapping) and value.get("bytes"):  # a datasets Image feature read undecoded
        return {"base64": base64.b64encode(value["bytes"]).decode()}
    if isinstance(value, Mapping) and value.get("path"):
        return {"image": value["path"]}
    if hasattr(value, "save"):  # a decoded PIL image
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return {"base64": base64.b64encode(buffer.getvalue()).decode()}
    raise RowError("images", f"holds a {type(value).__name__}, not an image path, URL or image")


# ---------------------------------------------------------------- media references


class MediaPolicy:
    """What a run may read: remote URLs only when allowed, images up to ``max_pixels``, audio if the processor
    takes it."""

    def __init__(self, *, allow_remote: bool, max_pixels: int, audio: bool) -> None:
        self.allow_remote = allow_remote
        self.max_pixels = max_pixels
        self.audio = audio

    @classmethod
    def of(cls, cfg: Any, processor: Any) -> MediaPolicy:
        from mudpuppy.launcher.config.schema.multimodal import DEFAULT_MAX_IMAGE_PIXELS

        return cls(allow_remote=bool(cfg.allow_remote_images),
                   max_pixels=int(cfg.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS),
                   audio=getattr(processor, "feature_extractor", None) is not None)


def _kind_of(value: str) -> str:
    """How transformers' ``load_image`` reads a string: URL, existing file, else base64."""
    if value.startswith(("http://", "https://")):
        return "url"
    if os.path.isfile(value):
        return "path"
    if value.startswith("data:"):
        return "base64"
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "path"  # e.g. images/cat.png: a path (that does not exist)
    return "base64" if len(value) >= 16 else "path"


def resolve_part(part: dict[str, Any], where: str, policy: MediaPolicy) -> None:
    """Check one media part in place: local paths made absolute and opened, base64 decoded, URLs allowed."""
    kind = part["type"]
    if kind in ("text",):
        return
    if kind == "audio":
        if not policy.audio:
            raise RowError(where, "is an audio part, but this model's processor takes no audio "
                                  "(processor_type loads one without a feature extractor)")
        for key in ("path", "audio"):
            if isinstance(part.get(key), str) and not part[key].startswith(("http://", "https://")):
                part[key] = _existing(part[key], where, "audio file")
        return
    if kind == "video":
        raise RowError(where, "is a video part; mudpuppy trains on image and audio parts only")
    if kind != "image":
        return
    present = [k for k in SOURCE_KEYS if part.get(k) is not None]
    if not present:
        raise RowError(where, "is an image part with none of image/path/url/base64 (and the row has no images "
                              "column to fill it)")
    key = present[0]
    value = part.pop(key)
    for other in present[1:]:
        part.pop(other, None)
    if not isinstance(value, str):
        raise RowError(where, f"image part's {key} must be a string, not {type(value).__name__}")
    kind_of = {"image": _kind_of(value), "url": "url", "path": "path", "base64": "base64"}[key]
    if kind_of == "url":
        if not policy.allow_remote:
            raise RowError(where, f"image URL {value} would be fetched at training time; set allow_remote_images: "
                                  "true to allow it, or download the image and give its path")
        part["url"] = value
    elif kind_of == "path":
        path = _existing(value, where, "image file")
        check_image(Path(path).read_bytes, where, path, policy.max_pixels)
        part["path"] = path
    else:
        raw = _b64(value, where)
        check_image(lambda: raw, where, "the base64 image", policy.max_pixels)
        part["base64"] = value


def _existing(value: str, where: str, what: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise RowError(where, f"{what} {value} does not exist (relative paths are read from {os.getcwd()})")
    return str(path.resolve())


def _b64(value: str, where: str) -> bytes:
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RowError(where, "image is not valid base64 (nor an existing file path)") from None


def check_image(read: Any, where: str, name: str, max_pixels: int) -> None:
    """Open the image header only (no decoding): it must be an image and at most ``max_pixels`` large."""
    from PIL import Image, UnidentifiedImageError

    guard = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only the header is read here; our own cap below says what is too large
    try:
        with Image.open(io.BytesIO(read())) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as exc:
        reason = "is not an image PIL can read" if isinstance(exc, UnidentifiedImageError) else f"cannot be read: {exc}"
        raise RowError(where, f"{name} {reason}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = guard
    if width * height > max_pixels:
        raise RowError(where, f"{name} is {width}x{height} = {width * height:,} pixels, over max_image_pixels "
                              f"{max_pixels:,}; shrink it or raise max_image_pixels")


def record(row: Mapping[str, Any], field_messages: tuple[str, ...], policy: MediaPolicy,
           render: Any = None) -> str:
    """One dataset row as the JSON the collator reads, every media reference checked and, with ``render``, the
    chat template applied once to its text (a template that refuses the row says so now, not mid-training)."""
    messages = normalize_messages(row, field_messages)
    attach_column_image(messages, row)
    for i, message in enumerate(messages):
        for k, part in enumerate(message["content"]):
            resolve_part(part, f"messages[{i}].content[{k}]", policy)
    if render is not None:
        render(messages)
    return json.dumps(messages, ensure_ascii=False)


def template_check(processor: Any, template: str | None) -> Any:
    """A function that renders a row's messages as text with the training template (no images are loaded)."""
    if not hasattr(processor, "apply_chat_template"):
        return None
    from jinja2 import TemplateError

    kwargs = {"chat_template": template} if template else {}

    def render(messages: list[dict[str, Any]]) -> None:
        try:
            processor.apply_chat_template([messages], tokenize=False, **kwargs)
        except TemplateError as exc:
            raise RowError("messages", f"the chat template refuses this conversation: {exc}") from None

    return render


# ---------------------------------------------------------------- datasets


def field_messages_of(cfg: Any) -> tuple[str, ...]:
    """Every dataset's ``field_messages`` (Axolotl's multimodal collator takes their union)."""
    names = [ds.field_messages for ds in (cfg.datasets or []) if getattr(ds, "field_messages", None)]
    return tuple(dict.fromkeys(names)) or ("messages",)


def build_split(cfg: Any, processor: Any, split: str, stats: Any) -> Any:
    import datasets

    from mudpuppy.runtime.data.loading import load_raw
    from mudpuppy.runtime.data.pipeline import merge

    configs = cfg.datasets if split == "train" else cfg.test_datasets
    if not configs:
        raise UserError(f"{'datasets' if split == 'train' else 'test_datasets'}: no entries")
    skip = bool(cfg.skip_invalid_rows)
    policy = MediaPolicy.of(cfg, processor)
    wanted = field_messages_of(cfg)
    render = None
    if hasattr(processor, "apply_chat_template"):
        from mudpuppy.runtime.model.multimodal import chat_template_text

        render = template_check(processor, chat_template_text(cfg, processor))
    parts = []
    for ds in configs:
        raw, skipped = load_raw(ds, split, skip_invalid=skip)
        stats.skipped_invalid += skipped
        stats.rows_in += len(raw) + skipped
        if "image" in raw.column_names or "images" in raw.column_names:
            raw = _undecoded_images(raw)
        rows, bad = [], 0
        for index, row in enumerate(raw):
            try:
                rows.append({ROW_COLUMN: record(row, wanted, policy, render), WHERE_COLUMN: f"{ds.path}: row {index}"})
            except RowError as err:
                if not skip:
                    raise UserError(f"{ds.path}: row {index}: {err}", hint="fix the row or set skip_invalid_rows: "
                                                                           "true") from None
                bad += 1
                log.warning("%s: row %d skipped: %s", ds.path, index, err)
        stats.skipped_invalid += bad
        stats.per_dataset.append({"path": ds.path, "type": "multimodal chat", "rows": len(raw), "skipped": bad})
        parts.append(datasets.Dataset.from_dict({ROW_COLUMN: [r[ROW_COLUMN] for r in rows],
                                                 WHERE_COLUMN: [r[WHERE_COLUMN] for r in rows]}))
    return merge(parts, cfg, columns=None)


def _undecoded_images(raw: Any) -> Any:
    """Image features as their original bytes (the collator decodes them), not PIL objects."""
    import datasets

    for key in ("image", "images"):
        feature = raw.features.get(key)
        if isinstance(feature, datasets.Image):
            raw = raw.cast_column(key, datasets.Image(decode=False))
        elif isinstance(feature, (datasets.Sequence, datasets.List)) and isinstance(
                getattr(feature, "feature", None), datasets.Image):
            raw = raw.cast_column(key, datasets.Sequence(datasets.Image(decode=False)))
    return raw


def build(cfg: Any, processor: Any) -> tuple[Any, Any, Any]:
    """(train, eval, stats) of message rows; ``val_set_size`` and dataset sharding as for text rows."""
    from mudpuppy.runtime.data.pipeline import Stats, finish_train

    started = time.perf_counter()
    stats = Stats()
    train = build_split(cfg, processor, "train", stats)
    stats.rows_tokenized = len(train)
    train, evaluation = finish_train(train, cfg)
    if cfg.test_datasets:
        evaluation = build_split(cfg, processor, "test", stats)
    if not len(train):
        raise UserError("datasets: no training rows left (every row was skipped as invalid)")
    stats.train_rows = len(train)
    stats.eval_rows = len(evaluation) if evaluation is not None else 0
    stats.seconds = time.perf_counter() - started
    return train, evaluation, stats
