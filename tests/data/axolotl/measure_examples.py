"""Validate Axolotl's example configs with mudpuppy and sort every rejection by why.

    python tests/data/axolotl/measure_examples.py /path/to/axolotl            # a source tree or unpacked sdist
    python tests/data/axolotl/measure_examples.py /path/to/axolotl.git HEAD   # a bare git dir and a revision
    ... --write   # also rewrite tests/data/axolotl/examples_main.txt (file names and outcomes only)

Outcomes: ``ok``; ``axolotl-rejects`` (a value Axolotl's own schema refuses: its type for that key is ours, or
one of its validators' rules, which our message ends with "Axolotl refuses it too");
``typo`` (an unknown key with a did-you-mean, only under ``MUDPUPPY_STRICT_KEYS=1``: by default such a key is a
warning and dropped, as Axolotl drops it; those files validate and are listed as typos warned); ``unsupported``
(a name or feature Axolotl has and mudpuppy does not: the message says so). Anything else is ``other``, which
the tests forbid, as they forbid tracebacks. ``names`` counts files whose optimizer, lr_scheduler, rl,
chat_template and dataset types all resolve here, whatever else the file says. Used by
``tests/unit/config/test_axolotl_examples.py``.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mudpuppy.launcher.config import load_config, names
from mudpuppy.launcher.errors import ConfigError, UserError

LIST = Path(__file__).resolve().parent / "examples_main.txt"
UNSUPPORTED_MARKS = ("does not ship yet", "does not implement", "does not support", "not supported by mudpuppy",
                     "Axolotl's own optimizers", "is not implemented by mudpuppy")


@dataclass
class Result:
    outcomes: dict[str, str] = field(default_factory=dict)     # relative path -> outcome
    reasons: dict[str, str] = field(default_factory=dict)      # relative path -> first problem line
    names_resolve: set[str] = field(default_factory=set)
    typos_warned: dict[str, str] = field(default_factory=dict)  # validated, with an unknown-key warning

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)


def example_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "examples").rglob("*.y*ml")
                  if "cloud" not in p.relative_to(root).parts and _is_config(p))


def _is_config(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return True  # a broken file is still a config someone would try
    return isinstance(data, dict) and "base_model" in data


def classify(error: ConfigError) -> str:
    kinds = set()
    for line in error.lines():
        if "unknown key" in line and "did you mean" in line:
            kinds.add("typo")
        elif any(mark in line for mark in UNSUPPORTED_MARKS):
            kinds.add("unsupported")
        elif "Input should be" in line or "Axolotl refuses it too" in line:
            kinds.add("axolotl-rejects")
        else:
            kinds.add("other")
    for kind in ("other", "axolotl-rejects", "typo", "unsupported"):
        if kind in kinds:
            return kind
    return "other"


def names_resolve(path: Path) -> bool:
    """True when every optimizer/scheduler/rl/template/type name in the file resolves in mudpuppy."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    checks = [(data.get("optimizer"), names.check_optimizer), (data.get("lr_scheduler"), names.check_scheduler),
              (data.get("rl"), names.check_rl), (data.get("chat_template"), names.check_chat_template)]
    family = names.preference_family(data.get("rl"), bool(data.get("reward_model") or
                                                          data.get("process_reward_model")))
    for entry in [*(data.get("datasets") or []), *(data.get("test_datasets") or [])]:
        if not isinstance(entry, dict):
            continue
        checks.append((entry.get("chat_template"), names.check_chat_template))
        kind = entry.get("type")
        if isinstance(kind, str):
            checks.append((kind, (lambda n, f=family: names.check_preference_type(n, f)) if family
                           else names.check_sft_type))
    return all(check(str(value)) is None for value, check in checks if value is not None)


def measure(root: Path, files: list[str] | None = None) -> Result:
    result = Result()
    for rel in files if files is not None else example_files(root):
        path = root / rel
        if names_resolve(path):
            result.names_resolve.add(rel)
        try:
            loaded = load_config(path)
            result.outcomes[rel] = "ok"
            typos = [w for w in loaded.warnings if "unknown key" in w]
            if typos:
                result.typos_warned[rel] = typos[0]
        except ConfigError as exc:
            result.outcomes[rel] = classify(exc)
            result.reasons[rel] = exc.lines()[0]
        except UserError as exc:
            result.outcomes[rel] = "other"
            result.reasons[rel] = exc.one_line()
        except Exception:  # a traceback: always a bug
            result.outcomes[rel] = "traceback"
            result.reasons[rel] = traceback.format_exc(limit=-1).strip().splitlines()[-1]
    return result


def read_list() -> dict[str, str]:
    out = {}
    for line in LIST.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            rel, outcome = line.split("\t")
            out[rel] = outcome
    return out


def download_sdist(dest: Path, version: str | None = None) -> Path:
    """Axolotl's sdist from PyPI (it ships examples/), unpacked under ``dest``; returns the tree's root."""
    spec = f"axolotl=={version}" if version else "axolotl"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d",
                    str(dest), spec], check=True, timeout=600)
    (archive,) = dest.glob("axolotl-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/examples/" in m.name and m.isfile()]
        tar.extractall(dest, members=members, filter="data")
    return next(dest.glob("axolotl-*/"))


def _summary(result: Result, label: str) -> str:
    total = len(result.outcomes)
    counts = ", ".join(f"{k} {result.count(k)}" for k in ("ok", "axolotl-rejects", "typo", "unsupported", "other",
                                                          "traceback"))
    return (f"{label}: {total} files: {counts}; {100 * result.count('ok') / max(total, 1):.1f}% validate; "
            f"{len(result.typos_warned)} of those with an unknown-key warning; "
            f"names all resolve in {len(result.names_resolve)}")


def main(argv: list[str]) -> None:
    write = "--write" in argv
    args = [a for a in argv if a != "--write"]
    if not args:
        raise SystemExit(__doc__)
    location = Path(args[0])
    with tempfile.TemporaryDirectory() as tmp:
        label = str(location)
        if len(args) > 1:
            rev = subprocess.run(["git", "-C", str(location), "rev-parse", args[1]], check=True, capture_output=True,
                                 text=True).stdout.strip()
            archive = subprocess.run(["git", "-C", str(location), "archive", rev, "examples"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            location, label = Path(tmp), f"axolotl {rev}"
        result = measure(location)
    for rel, outcome in sorted(result.outcomes.items()):
        if outcome != "ok":
            print(f"{outcome:16} {rel}: {result.reasons[rel]}")
    for rel, line in sorted(result.typos_warned.items()):
        print(f"{'ok, typo warned':16} {rel}: {line}")
    print(_summary(result, label))
    if write:
        lines = [f"# Axolotl example configs measured by measure_examples.py ({label}); names and outcomes only",
                 *(f"{rel}\t{outcome}" for rel, outcome in sorted(result.outcomes.items()))]
        LIST.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
