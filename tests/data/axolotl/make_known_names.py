"""Regenerate ``launcher/config/axolotl_main.json`` (the names current Axolotl knows) from an Axolotl checkout.

    python tests/data/axolotl/make_known_names.py /path/to/axolotl            # a source tree
    python tests/data/axolotl/make_known_names.py /path/to/axolotl.git HEAD   # a bare git dir and a revision

Reads Axolotl's pydantic models with ``ast`` (nothing of Axolotl is imported, so no GPU stack is needed): the
fields of ``AxolotlConfigWCapabilities`` and everything it inherits, the dataset models, the nested ``trl:`` /
``vllm:`` / ``special_tokens:`` models, each ``axolotl.integrations`` plugin with the keys its args model adds,
and the name enums (rl, chat templates, custom optimizers). Defaults are recorded where they are literals so a
test can compare ours with Axolotl's. Never imported by the tests or the package.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[3] / "launcher" / "config" / "axolotl_main.json"
SCHEMAS = "src/axolotl/utils/schemas"
INTEGRATIONS = "src/axolotl/integrations"
STRATEGIES = "src/axolotl/prompt_strategies"
SOURCE = "src/axolotl"
EXAMPLES = "examples"
_CFG_READ = re.compile(r"""\bcfg(?:\.([a-z_][a-z0-9_]*)\b(?!\()"""
                       r"""|\.get\(\s*["']([a-z_][a-z0-9_]*)["']|\[["']([a-z_][a-z0-9_]*)["']\])""")
DATASET_MODELS = ("SFTDataset", "DPODataset", "KTODataset", "StepwiseSupervisedDataset", "SyntheticDataset",
                  "PretrainingDataset")
TYPE_MODELS = ("UserDefinedPrompterType", "UserDefinedDPOType", "UserDefinedKTOType")
NESTED = {"trl": ("TRLConfig",), "vllm": ("VllmConfig",), "special_tokens": ("SpecialTokensConfig",),
          "peft": ("PeftConfig",), "loftq_config": ("LoftQConfig",), "fsdp_config": ("FSDPConfig",),
          "ebft": ("EBFTConfig",)}
_NO_DEFAULT = object()


@dataclass
class Model:
    name: str
    bases: list[str]
    fields: dict[str, Any] = field(default_factory=dict)   # name -> literal default (or _NO_DEFAULT)
    aliases: set[str] = field(default_factory=set)


def _literal(node: ast.AST | None) -> Any:
    if node is None:
        return _NO_DEFAULT
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return _NO_DEFAULT
    try:
        json.dumps(value)
    except TypeError:
        return _NO_DEFAULT
    return value


def _field_default(value: ast.AST | None) -> tuple[Any, str | None]:
    """(default, alias) of ``x: T = <value>`` where value may be ``Field(...)``."""
    if isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", "")) == "Field":
        default: Any = _literal(value.args[0]) if value.args else _NO_DEFAULT
        alias = None
        for kw in value.keywords:
            if kw.arg == "default":
                default = _literal(kw.value)
            elif kw.arg == "alias":
                alias = _literal(kw.value)
        return default, alias if isinstance(alias, str) else None
    return (_literal(value) if value is not None else _NO_DEFAULT), None


def parse_models(path: Path) -> dict[str, Model]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, Model] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        model = Model(node.name, [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases])
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                name = stmt.target.id
                if name.startswith("_") or name == "model_config" or "ClassVar" in ast.unparse(stmt.annotation):
                    continue
                default, alias = _field_default(stmt.value)
                model.fields[name] = default
                if alias:
                    model.aliases.add(alias)
        out[node.name] = model
    return out


def enum_values(models_file: Path, name: str) -> list[str]:
    tree = ast.parse(models_file.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return [stmt.value.value for stmt in node.body if isinstance(stmt, ast.Assign)
                    and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)]
    raise SystemExit(f"enum {name} not found in {models_file}")


def all_fields(models: dict[str, Model], name: str, seen: set[str] | None = None) -> dict[str, Any]:
    seen = seen or set()
    if name in seen or name not in models:
        return {}
    seen.add(name)
    out: dict[str, Any] = {}
    for base in reversed(models[name].bases):
        out.update(all_fields(models, base, seen))
    out.update(models[name].fields)
    for alias in models[name].aliases:
        out.setdefault(alias, _NO_DEFAULT)
    return out


def plugins(root: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """plugin load path -> integration package; integration package -> keys its args model adds."""
    names: dict[str, str] = {}
    keys: dict[str, list[str]] = {}
    base = root / INTEGRATIONS
    for pkg in sorted(p for p in base.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        models: dict[str, Model] = {}
        for py in sorted(pkg.glob("*.py")):
            models.update(parse_models(py))
        init_text = (pkg / "__init__.py").read_text(encoding="utf-8")
        args_names: set[str] = set()
        for py in sorted(pkg.glob("*.py")):
            tree = ast.parse(py.read_text(encoding="utf-8"))
            for node in tree.body:
                if not (isinstance(node, ast.ClassDef) and any(getattr(b, "id", "") == "BasePlugin"
                                                               for b in node.bases)):
                    continue
                module = f"axolotl.integrations.{pkg.name}"
                if py.name != "__init__.py":
                    names[f"{module}.{py.stem}.{node.name}"] = pkg.name
                if py.name == "__init__.py" or node.name in init_text:
                    names[f"{module}.{node.name}"] = pkg.name
                for fn in node.body:
                    if isinstance(fn, ast.FunctionDef) and fn.name == "get_input_args":
                        for sub in ast.walk(fn):
                            if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and "." in sub.value:
                                args_names.add(sub.value.rsplit(".", 1)[1])
        found: set[str] = set()
        for args in args_names:
            found.update(all_fields(models, args))
        keys[pkg.name] = sorted(found)
    return names, keys


def strategy_names(root: Path) -> list[str]:
    """Axolotl's ``type:`` names: each prompt_strategies module, and module.function for its loaders."""
    out: set[str] = set()
    base = root / STRATEGIES
    for py in sorted(base.rglob("*.py")):
        rel = py.relative_to(base).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if not parts or parts[-1].startswith("_") or parts[-1] in ("base", "jinja_template_analyzer"):
            continue
        family = parts[0] if len(parts) > 1 and parts[0] in ("dpo", "kto", "orpo") else ""
        name = ".".join(parts[1:] if family else parts)
        prefix = f"{family}:" if family else ""
        out.add(prefix + name)
        tree = ast.parse(py.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                out.add(f"{prefix}{name}.{node.name}")
    return sorted(out)


def read_by_code(root: Path) -> set[str]:
    """Keys Axolotl's code reads off the config (``cfg.debug``) without a schema field; they load as extras."""
    out: set[str] = set()
    for py in (root / SOURCE).rglob("*.py"):
        for match in _CFG_READ.finditer(py.read_text(encoding="utf-8", errors="replace")):
            out.add(next(g for g in match.groups() if g))
    return out


def example_keys(root: Path) -> tuple[set[str], set[str]]:
    """Top-level and dataset-level keys Axolotl's own example configs write (it loads them all; extras are
    ignored by its pydantic models, so a key there is never a user's typo)."""
    import yaml

    top: set[str] = set()
    dataset: set[str] = set()
    for path in sorted((root / EXAMPLES).rglob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue
        if not isinstance(data, dict) or "base_model" not in data:
            continue
        top.update(k for k in data if isinstance(k, str))
        for key in ("datasets", "test_datasets"):
            for entry in data.get(key) or []:
                if isinstance(entry, dict):
                    dataset.update(k for k in entry if isinstance(k, str))
    return top, dataset


def _typo_of(key: str, known: set[str]) -> bool:
    """An example's key this close to a real one is a typo there (``context_parapllel_size``): not adopted."""
    return bool(difflib.get_close_matches(key, known, n=1, cutoff=0.8))


def generate(root: Path, revision: str) -> dict[str, Any]:
    schema_models: dict[str, Model] = {}
    for py in sorted((root / SCHEMAS).glob("*.py")):
        schema_models.update(parse_models(py))
    top = all_fields(schema_models, "AxolotlConfigWCapabilities")
    top.pop("capabilities", None)
    top.pop("env_capabilities", None)
    dataset: dict[str, Any] = {}
    for name in DATASET_MODELS:
        dataset.update(all_fields(schema_models, name))
    type_keys: set[str] = set()
    for name in TYPE_MODELS:
        type_keys.update(all_fields(schema_models, name))
    plugin_names, plugin_keys = plugins(root)
    enums = root / SCHEMAS / "enums.py"
    plugin_all = set().union(*map(set, plugin_keys.values()))
    ex_top, ex_dataset = example_keys(root)
    code = read_by_code(root)
    legacy = [k for k in sorted(ex_top - set(top) - plugin_all - code) if not _typo_of(k, set(top) | plugin_all | code)]
    return {
        "source": f"axolotl {revision}",
        "top_level": sorted(top),
        "read_by_code": sorted(code - set(top) - plugin_all),
        "in_examples": legacy,
        "dataset_in_examples": [k for k in sorted(ex_dataset - set(dataset)) if not _typo_of(k, set(dataset))],
        "defaults": {k: v for k, v in sorted(top.items()) if v is not _NO_DEFAULT},
        "dataset": sorted(dataset),
        "dataset_type_mapping": sorted(type_keys),
        "nested": {key: sorted(set().union(*(all_fields(schema_models, m) for m in models)))
                   for key, models in sorted(NESTED.items())},
        "plugins": plugin_names,
        "plugin_keys": plugin_keys,
        "rl": enum_values(enums, "RLType"),
        "chat_templates": enum_values(enums, "ChatTemplate"),
        "custom_optimizers": enum_values(enums, "CustomSupportedOptimizers"),
        "strategies": strategy_names(root),
    }


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    location = Path(argv[0])
    if len(argv) > 1:  # a git dir + revision: export the few folders we read
        with tempfile.TemporaryDirectory() as tmp:
            rev = subprocess.run(["git", "-C", str(location), "rev-parse", argv[1]], check=True,
                                 capture_output=True, text=True).stdout.strip()
            archive = subprocess.run(["git", "-C", str(location), "archive", rev, SOURCE, EXAMPLES],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            data = generate(Path(tmp), rev)
    else:
        data = generate(location, "checkout")
    OUT.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(data['top_level'])} top-level keys, {len(data['plugins'])} plugin names")


if __name__ == "__main__":
    main(sys.argv[1:])
