"""The one way into a run: ``python -m mudpuppy.runtime CFG_OR_BUNDLE`` and ``mudpuppy train CFG`` both call
``run_location``, which returns a ``launcher.contract`` exit code (0 done, 2 user error, 75 preempted+saved).

A location is a config file, a bundle folder (one holding ``config.yml``) or a bundle tarball; bundles are opened
with ``launcher.bundle.open_bundle`` and the process moves into the run's work folder so relative paths resolve.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mudpuppy.launcher.contract import BUNDLE_CONFIG, EXIT_USER_ERROR, anchored_output
from mudpuppy.launcher.errors import ConfigError, UserError


def resolve_location(location: str) -> Path:
    """The config path for ``location``; bundles are opened (and the cwd moved) first."""
    path = Path(location).expanduser()
    if not path.exists():
        raise UserError(f"{location}: no such config file or bundle")
    is_bundle = (path.is_dir() and (path / BUNDLE_CONFIG).is_file()) or (
        path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar"))
    )
    if not is_bundle:
        if path.is_dir():
            raise UserError(f"{location}: a folder must contain {BUNDLE_CONFIG} to be run")
        return path
    from mudpuppy.launcher.bundle import open_bundle

    config_path, workdir = open_bundle(path)
    os.chdir(workdir)
    return Path(config_path)


def run_location(location: str, overrides: dict[str, Any] | None = None, *, warn: Any = None) -> int:
    from mudpuppy.runtime.train.signals import PreemptionWatcher

    # installed before the heavy imports, so a preemption notice during start-up is never fatal
    with PreemptionWatcher() as watcher:
        return _run_location(location, overrides or {}, warn, watcher)


def _run_location(location: str, overrides: dict[str, Any], warn: Any, watcher: Any) -> int:
    from mudpuppy.launcher.config import load_config
    from mudpuppy.runtime.env import read_env
    from mudpuppy.runtime.train.run import run_training

    config_path = resolve_location(location)
    loaded = load_config(config_path, overrides)
    for line in loaded.warnings:
        (warn or _warn)(line)
    env = read_env()
    if env.distributed:
        for key, value in env.torch_variables().items():
            os.environ.setdefault(key, value)
    return run_training(anchor_outputs(loaded.config), env=env, watcher=watcher)


ANCHORED_KEYS = ("output_dir", "dataset_prepared_path")


def anchor_outputs(config: Any) -> Any:
    """Resolve a relative ``output_dir`` / ``dataset_prepared_path`` against ``$MUDPUPPY_OUTPUT_BASE`` when a backend
    set it (the folder the user launched from), so ``launch`` writes where ``mudpuppy train`` would; data paths
    stay relative to the run folder, where the bundle's files are linked."""
    update = {}
    for key in ANCHORED_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, str) and anchored_output(value) != value:
            update[key] = anchored_output(value)
    return config.model_copy(update=update) if update else config


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m mudpuppy.runtime CONFIG_OR_BUNDLE [--key value ...]", file=sys.stderr)
        return EXIT_USER_ERROR if not args else 0
    try:
        from mudpuppy.launcher.config import parse_override_args

        return run_location(args[0], parse_override_args(args[1:]))
    except ConfigError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except UserError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)
