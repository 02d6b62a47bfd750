"""Bundles: everything a run needs, in one content-addressed tarball, and the reader the runtime uses.

Layout (names in ``launcher.contract``)::

    config.yml     the resolved config, local paths rewritten to ``files/...``; no ``launch:`` section
    image.json     the runtime image spec (``launcher.image``)
    files/         local models, data files, chat templates and DeepSpeed JSON the config referenced
    wheels/        a wheel of mudpuppy itself

The name is the sha256 of every member's path and content, so relaunching an unchanged config with unchanged
data reuses the same tarball (locally and, by name, on remote hosts). Secret values are never written: the
bundle carries secret *names* only (``image.json``) and backends resolve them at run time.

``open_bundle`` is the runtime's entry: pure stdlib, importable without pydantic or yaml.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mudpuppy.launcher.contract import (
    BUNDLE_CONFIG,
    BUNDLE_DATA_DIR,
    BUNDLE_IMAGE,
    BUNDLE_SUFFIX,
    BUNDLE_WHEEL_DIR,
    ENV_WORKDIR,
)
from mudpuppy.launcher.errors import UserError

if TYPE_CHECKING:
    from mudpuppy.launcher.config.schema import Config

DIGEST_CHARS = 16  # 64 bits of sha256 in file names: collisions are not a practical concern here


# ---------------------------------------------------------------- reading (runtime side, stdlib only)


def open_bundle(path: str | os.PathLike[str], workdir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Make a bundle usable in ``workdir`` and return ``(config_path, workdir)``.

    ``path`` is a bundle tarball or an already extracted bundle folder. A tarball is extracted once into a
    sibling folder of the same name (atomic rename, so concurrent ranks on one host agree). Relative paths in
    the config (``files/...`` inputs and the ``output_dir``) resolve against ``workdir``, which defaults to
    ``$MUDPUPPY_WORKDIR`` or the current directory; a ``files`` link to the bundle's data is made there so
    each run writes its outputs to its own folder while sharing the bundle. The runtime should ``chdir`` to
    the returned ``workdir`` before reading the config.
    """
    source = Path(path).expanduser().resolve()
    if source.is_dir():
        root = source
    elif source.is_file():
        root = _extract_once(source)
    else:
        raise FileNotFoundError(f"bundle {source} does not exist")
    config = root / BUNDLE_CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"{source} is not a mudpuppy bundle (no {BUNDLE_CONFIG})")
    work = Path(workdir or os.environ.get(ENV_WORKDIR) or os.getcwd()).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = root / BUNDLE_DATA_DIR
    if work != root and data.is_dir():
        _link(work / BUNDLE_DATA_DIR, data)
    return config, work


def _extract_once(tarball: Path) -> Path:
    name = tarball.name[: -len(BUNDLE_SUFFIX)] if tarball.name.endswith(BUNDLE_SUFFIX) else tarball.stem
    root = tarball.with_name(name)
    if (root / BUNDLE_CONFIG).is_file():
        return root
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=tarball.parent))
    try:
        with tarfile.open(tarball, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / BUNDLE_CONFIG).is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _link(link: Path, target: Path) -> None:
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a link to bundle data; run in an empty folder")
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


# ---------------------------------------------------------------- building (laptop side)


@dataclass(frozen=True)
class Bundle:
    """A built bundle: where its tarball is and what went into it (for plans and the registry)."""

    path: Path
    digest: str
    config_text: str
    image: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)  # path inside the bundle -> local source
    reused: bool = False

    @property
    def name(self) -> str:
        return self.path.name


# Config keys that may name local files or folders, with the folder they go to under files/.
_MODEL_KEYS = ("base_model", "base_model_config", "tokenizer_config")
_FILE_KEYS = ("deepspeed", "chat_template_jinja")
_DATASET_LISTS = ("datasets", "test_datasets", "pretraining_dataset")


def build_bundle(config: Config, store: Path, *, wheel: Path | None = None,
                 confine_to: Path | None = None) -> Bundle:
    """Write (or reuse) the bundle of ``config`` under ``store``; local paths resolve against the cwd.

    ``confine_to`` (set for configs fetched from a URL, see ``local_root_for``) refuses local files outside
    that folder: a config someone else wrote must not ship ``~/.aws/credentials`` to a cluster.
    """
    import yaml

    from mudpuppy.launcher import bundle_media, modules
    from mudpuppy.launcher.image import image_spec

    data = config.model_dump(mode="json", exclude_unset=True)
    data.pop("launch", None)
    copies = _Copies(confine_to)
    for key in _MODEL_KEYS:
        if isinstance(data.get(key), str):
            data[key] = copies.add(data[key], f"{key}", key)
    for key in _FILE_KEYS:
        value = data.get(key)
        if isinstance(value, str) and "{" not in value and "\n" not in value:
            data[key] = copies.add(value, key, key)
    for list_key in _DATASET_LISTS:
        for index, entry in enumerate(data.get(list_key) or []):
            if not isinstance(entry, dict):
                continue
            prefix = f"{list_key}/{index}"
            label = f"{list_key}[{index}]"
            folder = None
            if isinstance(entry.get("path"), str):
                local = Path(entry["path"]).expanduser()
                entry["path"] = copies.add(entry["path"], prefix, f"{label}.path")
                folder = local if local.is_dir() else None
            files = entry.get("data_files")
            if folder is not None and isinstance(files, (str, list)):
                entry["data_files"] = _folder_data_files(copies, folder, entry["path"], files, label)
            elif isinstance(files, str):
                entry["data_files"] = copies.add(files, prefix, f"{label}.data_files")
            elif isinstance(files, list):
                entry["data_files"] = [copies.add(p, prefix, f"{label}.data_files[{i}]") if isinstance(p, str) else p
                                       for i, p in enumerate(files)]
            if isinstance(entry.get("chat_template_jinja"), str) and "{" not in entry["chat_template_jinja"]:
                entry["chat_template_jinja"] = copies.add(entry["chat_template_jinja"], prefix,
                                                          f"{label}.chat_template_jinja")

    rewritten = bundle_media.carry_media(data, copies.files, copies.add)  # images multimodal rows point at

    for dotted in modules.config_module_paths(data):  # user strategy/transform/reward modules, importable there
        for rel, origin in modules.local_sources(dotted):
            copies.files.setdefault(f"{BUNDLE_DATA_DIR}/{modules.BUNDLE_PYTHON}/{rel}", str(origin.resolve()))

    config_text = "# Written by mudpuppy launch; paths under files/ are inside this bundle.\n" + yaml.safe_dump(
        data, sort_keys=True, allow_unicode=True
    )
    members: dict[str, bytes | Path] = {BUNDLE_CONFIG: config_text.encode()}
    wheel_name = None
    if wheel is not None:
        wheel_name = f"{BUNDLE_WHEEL_DIR}/{wheel.name}"
        members[wheel_name] = wheel
    image = image_spec(config, wheel=wheel_name)
    members[BUNDLE_IMAGE] = (_json(image) + "\n").encode()
    for inside, source in copies.files.items():
        members[inside] = rewritten.get(inside, Path(source))

    digest = _digest(members)
    store.mkdir(parents=True, exist_ok=True)
    target = store / f"{digest[:DIGEST_CHARS]}{BUNDLE_SUFFIX}"
    reused = target.is_file()
    if not reused:
        _write_tar(members, target)
    return Bundle(
        path=target,
        digest=digest,
        config_text=config_text,
        image=image,
        files=dict(copies.files),
        reused=reused,
    )


def local_root_for(config_location: str | os.PathLike[str]) -> Path | None:
    """The folder a config may take local files from: the working folder for a config fetched from a URL,
    anywhere (None) for a local config, as in Axolotl, which takes absolute paths."""
    return Path.cwd() if str(config_location).startswith(("https://", "http://")) else None


def _folder_data_files(copies: _Copies, folder: Path, inside: str, files: str | list[Any], label: str) -> Any:
    """``data_files`` of a ``path`` folder. The runtime reads them as Axolotl does, relative to where it runs
    (the bundle's folder there), falling back to inside the dataset folder; resolved here the same way. Entries
    inside the folder point into its bundled copy (no second copy); any outside it are copied on their own
    (``_Copies`` keeps two files that share a name apart)."""
    root = folder.resolve()
    out = []
    for index, value in enumerate([files] if isinstance(files, str) else files):
        if not isinstance(value, str):
            out.append(value)
            continue
        key = f"{label}.data_files" + ("" if isinstance(files, str) else f"[{index}]")
        given = Path(value).expanduser()
        if not given.is_absolute() and not given.exists() and (folder / given).exists():
            given = folder / given
        if not given.exists():
            out.append(value)  # the runtime will say it is missing, as a local run would
            continue
        source = given.resolve()
        copies.check(source, key, value)
        if source.is_relative_to(root):
            out.append(f"{inside}/{source.relative_to(root).as_posix()}")
        else:
            out.append(copies.add(str(source), f"{label.replace('[', '/').rstrip(']')}/data_files", key))
    return out[0] if isinstance(files, str) else out


class _Copies:
    """Local paths found in the config -> their place under files/, each source copied once, never two
    sources at one place."""

    def __init__(self, confine_to: Path | None = None) -> None:
        self.files: dict[str, str] = {}
        self._by_source: dict[Path, str] = {}
        self._taken: set[str] = set()
        self._root = confine_to.resolve() if confine_to is not None else None

    def add(self, value: str, slot: str, key: str) -> str:
        if "://" in value:
            return value
        source = Path(value).expanduser()
        if not source.exists():
            return value  # a hub id or a remote path: left for the runtime
        source = source.resolve()
        self.check(source, key, value)
        if source in self._by_source:
            return self._by_source[source]
        inside = self._free(f"{BUNDLE_DATA_DIR}/{slot}", source.name)
        self.add_under(source, inside, key)
        return inside

    def add_under(self, source: Path, inside: str, key: str) -> None:
        self._by_source.setdefault(source, inside)
        self._taken.add(inside)
        if source.is_dir():
            for item in sorted(source.rglob("*")):
                rel = item.relative_to(source)
                if item.is_file() and not any(part.startswith(".") for part in rel.parts):
                    self.check(item.resolve(), key, str(item))
                    self.files[f"{inside}/{rel.as_posix()}"] = str(item)
        else:
            self.files[inside] = str(source)

    def check(self, source: Path, key: str, value: str) -> None:
        """Only regular files and folders (hashing a FIFO or /dev/zero never ends), and only inside the
        allowed root when there is one."""
        if not (source.is_file() or source.is_dir()):
            raise UserError(f"{key}: {value} is not a regular file or folder (a device, FIFO or socket); "
                            "it cannot be bundled", hint="point it at a data file or folder")
        if self._root is not None and not source.is_relative_to(self._root):
            raise UserError(f"{key}: {value} is outside the working folder {self._root}; a config loaded from a "
                            "URL may only bundle local files under the folder you launch from",
                            hint="copy the file into this folder, or launch a local copy of the config")

    def _free(self, base: str, name: str) -> str:
        inside = f"{base}/{name}"
        number = 1
        while inside in self._taken:
            inside = f"{base}/{number}/{name}"
            number += 1
        return inside


def _digest(members: dict[str, bytes | Path]) -> str:
    """Names, contents and (when not the usual 0644) permission bits: a chmod makes a new bundle."""
    outer = hashlib.sha256()
    for name in sorted(members):
        mode = _mode(members[name])
        extra = b"" if mode == _DEFAULT_MODE else f"\0{mode:o}".encode()
        outer.update(name.encode() + b"\0" + _sha256(members[name]).encode() + extra + b"\n")
    return outer.hexdigest()


_DEFAULT_MODE = 0o644


def _mode(content: bytes | Path) -> int:
    """A copied file keeps its permission bits (a 0600 data file stays unreadable to others once unpacked on
    a shared filesystem), minus group/other write; generated members are 0644."""
    if isinstance(content, bytes):
        return _DEFAULT_MODE
    return (content.stat().st_mode & 0o755) | 0o600


def _sha256(content: bytes | Path) -> str:
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    h = hashlib.sha256()
    with open(content, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_tar(members: dict[str, bytes | Path], target: Path) -> None:
    """Deterministic tar (sorted names, zero times and owners), written to a temp name and renamed.

    The tarball is readable by its owner only (0600) while written, and stays so when any member is not
    world-readable: a 0644 tarball would hand out what the member's own mode keeps private."""
    import gzip

    modes = {name: _mode(content) for name, content in members.items()}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(
            fileobj=gz, mode="w", format=tarfile.PAX_FORMAT
        ) as tar:
            for name in sorted(members):
                content = members[name]
                info = tarfile.TarInfo(name)
                info.mode = modes[name]
                if isinstance(content, bytes):
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
                else:
                    info.size = content.stat().st_size
                    with open(content, "rb") as fh:
                        tar.addfile(info, fh)
        if all(mode & 0o004 for mode in modes.values()):
            os.chmod(tmp, _DEFAULT_MODE)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True)
