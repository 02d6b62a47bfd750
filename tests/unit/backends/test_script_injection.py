"""Hostile config values never run as code, in any rendered script.

Each renderer's output is RUN (bash, or sh for Dockerfile RUN lines) with stub programs first on PATH: every stub
(srun, scontrol, python, docker, tar, ...) only appends its argv and environment to a log. Values full of shell
syntax (``$(...)``, backticks, quotes, ``;``, ``|``, globs) must reach the stubs as ONE literal argument or
environment value, and the canary file those values try to create must never appear. Values that would end a
line (newlines, other control characters) are refused by the schema, for every text key of ``launch:``; the
Dockerfile and the ``#SBATCH`` header are also parsed the way Docker (its own Go parser, via the ``dockerfile``
package) and sbatch (its tokenizer and its stop-at-the-first-command rule, from Slurm's ``src/sbatch/opt.c``)
read them.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mudpuppy.backends.local import LocalBackend
from mudpuppy.backends.modal_app import wheel_install_command
from mudpuppy.backends.ray import RayBackend, job_spec
from mudpuppy.backends.skypilot import render_task
from mudpuppy.backends.slurm import _directives, materialize
from mudpuppy.backends.ssh import SSHBackend
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.config import load_config_text
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.dockerfile import render_dockerfile
from mudpuppy.launcher.errors import ConfigError, UserError
from mudpuppy.launcher.scriptsafe import sbatch_word

pytestmark = pytest.mark.timeout(120)

STUBS = ("srun", "scontrol", "scancel", "python", "python3", "python3.11", "docker", "apptainer", "tar", "pip",
         "apt-get", "add-apt-repository", "torchrun")
STUB = """#!{python}
import json, os, sys
from pathlib import Path
argv = [os.path.basename(sys.argv[0])] + sys.argv[1:]
if argv[0] == "scontrol" and argv[1:3] == ["show", "hostnames"]:
    print("node1")
if argv[0] == "scontrol" and argv[1:3] == ["show", "job"]:
    print("JobId=1 JobState=RUNNING")
if "-m" in argv and argv[argv.index("-m") + 1:argv.index("-m") + 2] == ["venv"]:
    venv = Path(argv[argv.index("-m") + 2]); (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "python").exists() or (venv / "bin" / "python").symlink_to(sys.argv[0])
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps({{"argv": argv, "env": dict(os.environ)}}) + "\\n")
"""


class Sandbox:
    """A folder with stub programs, a canary path, and hostile values aimed at creating the canary."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        for name in STUBS:
            self.stub(self.bin / name)
        self.log = root / "stub.log"
        self.canary = Path("/tmp") / f"pwned-{uuid.uuid4().hex}"
        c = self.canary
        self.hostile = [
            f"$(touch {c})", f"`touch {c}`", f"x'; touch {c}; echo '", f'x"; touch {c}; echo "', f"a;touch {c}",
            f"a && touch {c} || touch {c}", f"a|touch {c}", f"${{IFS}}touch${{IFS}}{c}", "two words * ?", "back\\slash",
            "$HOME ~root", "#hash", "'", '"',
        ]

    def stub(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STUB.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path

    def run(self, script: str, *, shell: str = "bash", env: dict[str, str] | None = None, stdin: str = "",
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        base = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.root / "home"), "STUB_LOG": str(self.log)}
        (self.root / "home").mkdir(exist_ok=True)
        return subprocess.run([shell, "-c", script], input=stdin, capture_output=True, text=True, timeout=60,
                              env={**base, **(env or {})}, cwd=cwd or self.root, check=False)

    def calls(self, name: str) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        records = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r for r in records if r["argv"][0] == name]

    def assert_nothing_ran(self) -> None:
        assert not self.canary.exists(), "a hostile value ran as a command"
        assert not [p for p in self.root.rglob("*") if p.name.startswith("pwned")]


@pytest.fixture
def box(tmp_path: Path) -> Any:
    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.canary.unlink(missing_ok=True)


def hostile_env(box: Sandbox) -> dict[str, str]:
    return {f"H{i}": value for i, value in enumerate(box.hostile)}


BUNDLE = Bundle(path=Path("/l/abc.tar.gz"), digest="abc" * 20, config_text="", files={},
                image={"python": "3.11", "packages": ["torch==2.13.0", "transformers==5.24.0"],
                       "wheel": "wheels/m.whl", "base_image": "python:3.11-slim", "env": {}, "secrets": []})


# ------------------------------------------------------------------------------------------------ the schema


def _text_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(path, kind) of every text-holding key of a launch section: 'str', 'list', 'dict-key', 'dict-value'."""
    out: list[tuple[tuple[str, ...], str]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        text = repr(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _text_paths(ann, (*prefix, name))
        elif text.startswith("list[str]"):
            out.append(((*prefix, name), "list"))
        elif text.startswith("dict[str"):
            out.append(((*prefix, name), "dict-key"))
            if "str]" in text or "Any]" in text:
                out.append(((*prefix, name), "dict-value"))
        elif "str" in text or "Literal" in text:
            out.append(((*prefix, name), "str"))
    return out


TEXT_PATHS = _text_paths(LaunchSection)


def test_every_text_key_of_launch_is_covered() -> None:
    names = {".".join(p) for p, _ in TEXT_PATHS}
    for key in ("slurm.partition", "slurm.account", "slurm.qos", "slurm.constraint", "slurm.time", "slurm.mem",
                "name", "slurm.workdir", "slurm.extra_directives", "image", "env", "ssh.hosts", "ssh.container_args",
                "ray.workdir", "skypilot.bucket", "modal.app_name", "entrypoint", "options"):
        assert key in names, key


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x1bb", "a\u2028b"])
@pytest.mark.parametrize(("path", "kind"), TEXT_PATHS, ids=[".".join(p) + ":" + k for p, k in TEXT_PATHS])
def test_control_characters_are_refused_everywhere(path: tuple[str, ...], kind: str, bad: str) -> None:
    value: Any = {"list": [bad], "dict-key": {bad.replace("a", "K"): "1"}, "dict-value": {"K": bad}}.get(kind, bad)
    if path == ("env",) and kind == "dict-key":
        value = {"K" + bad[1:]: "1"}
    data: dict[str, Any] = {}
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    with pytest.raises(ValidationError) as err:
        LaunchSection.model_validate(data)
    locs = [e["loc"] for e in err.value.errors()]
    assert any(tuple(str(p) for p in loc[: len(path)]) == path for loc in locs), locs


def test_config_errors_are_one_line_naming_the_key() -> None:
    text = ("base_model: m\nlearning_rate: 0.1\nlaunch:\n  backend: slurm\n  env:\n    'A=1; touch /tmp/x; B': '1'\n"
            "  slurm:\n    partition: \"gpu\\ntouch /tmp/x\"\n")
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "c.yml")
    lines = err.value.lines()
    assert any(line.startswith("c.yml:5: launch.env:") and "'A=1; touch /tmp/x; B' is not an environment variable"
               in line for line in lines), lines
    assert any(line.startswith("c.yml:8: launch.slurm.partition:") and "contains a newline" in line
               for line in lines), lines
    assert all("\n" not in line for line in lines)


@pytest.mark.parametrize("name", ["A=1; touch /tmp/x; B", "1A", "A-B", "A B", "$(id)", "", "Ä"])
def test_env_names_must_be_shell_identifiers(name: str) -> None:
    with pytest.raises(ValidationError, match="not an environment variable name"):
        LaunchSection.model_validate({"env": {name: "1"}})


# ------------------------------------------------------------------------------------------------ SLURM


def sbatch_arguments(script: str) -> tuple[list[str], int]:
    """The options sbatch takes from ``script``, and the index of the line where it stopped reading.

    Mirrors Slurm's ``_get_options_from_script`` / ``_get_argument``: lines starting ``#SBATCH`` are split into
    arguments (quotes group, a backslash escapes the next character even inside quotes, an unquoted ``#`` ends
    the line); any other line that is not blank or a comment ends the directive block.
    """
    args: list[str] = []
    lines = script.split("\n")
    for index, line in enumerate(lines):
        if not line.startswith("#SBATCH"):
            stripped = line.lstrip()
            if stripped and not stripped.startswith("#"):
                return args, index
            continue
        ptr, n = line[len("#SBATCH"):], 0
        while True:
            while n < len(ptr) and ptr[n].isspace():
                n += 1
            if n >= len(ptr):
                break
            word, quoted, quote, escape = "", False, "", False
            while n < len(ptr) and (quoted or not ptr[n].isspace()):
                ch = ptr[n]
                if escape:
                    escape = False
                elif ch == "\\":
                    escape, n = True, n + 1
                    continue
                elif quoted:
                    if ch == quote:
                        quoted, n = False, n + 1
                        continue
                elif ch in "\"'":
                    quoted, quote, n = True, ch, n + 1
                    continue
                elif ch == "#":
                    n = len(ptr)
                    break
                word += ch
                n += 1
            args.append(word)
    return args, len(lines)


def test_sbatch_word_reads_back_through_sbatch_tokenizer(box: Sandbox) -> None:
    for value in [*box.hostile, "a\\'b", "plain", "--comment=x y", "--x='quoted'"]:
        assert sbatch_arguments(f"#SBATCH {sbatch_word(value)}\ntrue\n")[0] == [value]
    with pytest.raises(UserError, match="newline"):
        sbatch_word("--partition=a\ntouch x")


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cc", "Zl", "Zp", "Cs")), min_size=1))
def test_sbatch_word_round_trips_any_text(value: str) -> None:
    """A fuzzer over sbatch_word against the port of sbatch's tokenizer: every script-safe text reads back."""
    assert sbatch_arguments(f"#SBATCH {sbatch_word(value)}\ntrue\n")[0] == [value]
    assert sbatch_arguments(f"#SBATCH {sbatch_word('--x=' + value)}\ntrue\n")[0] == ["--x=" + value]


def test_sbatch_script_runs_hostile_values_as_data(box: Sandbox) -> None:
    workdir = str(box.root / "shared dir" / "$(touch pwned-workdir)")
    python = box.stub(box.root / "py bin" / "`touch pwned-py`" / "python")
    h = box.hostile
    launch = LaunchSection.model_validate({
        "backend": "slurm", "name": h[0], "env": hostile_env(box), "volume": h[2], "entrypoint": h[4],
        "slurm": {"workdir": workdir, "partition": h[1], "account": h[2], "qos": h[3], "constraint": h[4],
                  "time": h[5], "mem": h[6],
                  "extra_directives": [f"--comment={h[7]}", f"--reservation={h[11]}", f"--licenses={h[9]}"],
                  "python": str(python)},
    })
    script = materialize(launch, "20250101-000000-abcd", "b.tar.gz", "0" * 64)

    # the header as sbatch reads it: every directive intact, and nothing after it read as a directive
    args, stop = sbatch_arguments(script)
    run_dir = f"{workdir}/runs/20250101-000000-abcd"
    assert args == _directives(launch, "20250101-000000-abcd", workdir, run_dir)
    for expected in (f"--job-name={h[0]}-20250101-000000-abcd", f"--partition={h[1]}", f"--account={h[2]}",
                     f"--qos={h[3]}", f"--constraint={h[4]}", f"--time={h[5]}", f"--mem={h[6]}",
                     f"--comment={h[7]}", f"--reservation={h[11]}", f"--licenses={h[9]}", f"--chdir={run_dir}"):
        assert expected in args
    assert stop == script.split("\n").index("set -uo pipefail") and script.count("#SBATCH") == len(args)

    # the body under bash with stubbed srun/scontrol: one srun, every hostile value one literal argument/env value
    res = box.run(script, env={"SLURM_JOB_NODELIST": "node1", "SLURM_JOB_ID": "1", "SLURM_RESTART_COUNT": "0",
                               "SLURM_SUBMIT_DIR": str(box.root)})
    assert res.returncode == 0, res.stderr
    box.assert_nothing_ran()
    (srun,) = box.calls("srun")
    command = srun["argv"][4:]
    assert command[0] == str(python) and f"--module={h[4]}" in command and command[-1] == f"{workdir}/bundles/b.tar.gz"
    assert "--master-addr=node1" in command
    for key, value in hostile_env(box).items():
        assert srun["env"][key] == value
    assert srun["env"]["MUDPUPPY_VOLUME"] == h[2] and srun["env"]["MUDPUPPY_WORKDIR"] == run_dir


# ------------------------------------------------------------------------------------------------ SSH


@pytest.mark.parametrize("image", [None, "docker", "apptainer"])
def test_ssh_host_script_runs_hostile_values_as_data(box: Sandbox, image: str | None) -> None:
    h = box.hostile
    python = box.stub(box.root / "py bin" / "$(touch pwned-py)" / "python")
    launch: dict[str, Any] = {
        "backend": "ssh", "env": hostile_env(box), "entrypoint": h[1], "volume": h[3],
        "ssh": {"hosts": ["u@gpu1"], "workdir": str(box.root / "w $(touch pwned-w)"), "python": str(python),
                "container_args": [h[0], h[2]], "container_python": h[6]},
    }
    if image:
        launch.update(image=h[5])
        launch["ssh"]["container"] = image
    plan = SSHBackend(LaunchSection.model_validate(launch)).plan(BUNDLE, "run1")
    res = box.run(plan.extra["host_scripts"]["u@gpu1"], stdin='{"TOKEN": "x"}')
    assert res.returncode == 0, res.stderr
    box.assert_nothing_ran()
    (call,) = box.calls("python")
    argv = call["argv"]
    assert argv[1:4] == ["-m", "mudpuppy.backends.supervisor", "spawn"]
    words = argv[argv.index("--") + 1:]
    if image == "docker":
        assert words[0] == "docker" and h[0] in words and h[2] in words and h[5] in words
        assert words[words.index(h[5]) + 1] == h[6]
    elif image == "apptainer":
        assert words[:2] == ["apptainer", "exec"] and words[words.index(h[5]) + 1] == h[6]
    else:
        assert words[0] == str(python)
    assert f"--module={h[1]}" in words
    for key, value in hostile_env(box).items():
        assert call["env"][key] == value
    assert call["env"]["MUDPUPPY_VOLUME"] == h[3]


# ------------------------------------------------------------------------------------------------ local


def test_local_plan_script_runs_hostile_values_as_data(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(box.root / "state $(touch pwned-state)"))
    python = box.stub(box.root / "py bin" / "$(touch pwned-py)" / "python")
    launch = LaunchSection.model_validate({"env": hostile_env(box), "entrypoint": box.hostile[0],
                                           "local": {"python": str(python)}})
    plan = LocalBackend(launch).plan(BUNDLE, "run1")
    Path(plan.workdir).mkdir(parents=True)
    res = box.run(plan.script)
    assert res.returncode == 0, res.stderr
    box.assert_nothing_ran()
    (call,) = box.calls("python")
    assert call["argv"][1:] == plan.extra["command"][1:] and f"--module={box.hostile[0]}" in call["argv"]
    for key, value in hostile_env(box).items():
        assert call["env"][key] == value


# ------------------------------------------------------------------------------------------------ SkyPilot


def test_skypilot_setup_and_run_treat_hostile_values_as_data(box: Sandbox) -> None:
    h = box.hostile
    launch = LaunchSection.model_validate({"backend": "skypilot", "env": hostile_env(box), "entrypoint": h[0],
                                           "nodes": 2, "skypilot": {"master_port": 29511}})
    image = {**BUNDLE.image, "packages": ["torch==2.13.0", "x$(touch pwned-pkg)"]}
    task = render_task(launch, "run1", None, bundle_name="b.tar.gz", bundle_path="/l/b.tar.gz", image=image,
                       bundle_digest="d" * 64)
    env = {**task["envs"], "SKYPILOT_NODE_IPS": "10.0.0.1\n10.0.0.2", "SKYPILOT_NODE_RANK": "1",
           "SKYPILOT_NUM_NODES": "2"}  # SkyPilot sets these (and task.envs) in the job's environment
    setup = box.run(task["setup"], env=env)
    assert setup.returncode == 0, setup.stderr
    run = box.run(task["run"], env=env)
    assert run.returncode == 0, run.stderr
    box.assert_nothing_ran()
    pip = [c for c in box.calls("python") if "pip" in c["argv"] and "install" in c["argv"]]
    assert any("x$(touch pwned-pkg)" in c["argv"] for c in pip)
    (node,) = [c for c in box.calls("python") if "mudpuppy.launcher.node_entry" in c["argv"]]
    assert f"--module={h[0]}" in node["argv"] and "--master-addr=10.0.0.1" in node["argv"]
    assert "--node-rank=env:SKYPILOT_NODE_RANK" in node["argv"]


# ------------------------------------------------------------------------------------------------ Ray


def test_ray_entrypoint_passes_the_spec_as_one_literal_argument(box: Sandbox) -> None:
    h = box.hostile
    launch = LaunchSection.model_validate({
        "backend": "ray", "entrypoint": h[0], "secrets": ["TOKEN"],
        "ray": {"address": "http://h:8265", "workdir": f"/tmp/{h[1]}", "storage_path": h[2],
                "resources_per_worker": {h[3]: 1}},
    })
    request = RayBackend(launch).plan(_ray_bundle(box.root), "run1").extra["request"]
    res = box.run(request["entrypoint"])
    assert res.returncode == 0, res.stderr
    box.assert_nothing_ran()
    (call,) = box.calls("python")
    assert call["argv"][1:5] == ["-m", "mudpuppy.launcher.ray_entry", "--secrets-file", ".mudpuppy-secrets.json"]
    assert call["argv"][5] == "--spec" and json.loads(call["argv"][6]) == job_spec(launch, "run1")
    assert json.loads(call["argv"][6])["workdir"] == f"/tmp/{h[1]}"


def _ray_bundle(root: Path) -> Bundle:
    (root / "b.tar.gz").write_bytes(b"")  # the plan reads its size (bundles over Ray's limit go through storage)
    return Bundle(path=root / "b.tar.gz", digest="e" * 64, config_text="", files={}, image=BUNDLE.image)


# ------------------------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_keeps_hostile_env_values_inside_one_env_instruction(box: Sandbox) -> None:
    dockerfile = pytest.importorskip("dockerfile")
    image = {**BUNDLE.image, "env": hostile_env(box), "secrets": ["TOKEN"], "wheel": "wheels/m.whl"}
    text = render_dockerfile(image, source="my config $(touch x).yml", torch_index="https://x/$(touch y)")
    commands = dockerfile.parse_string(text)
    assert [c.cmd for c in commands] == ["FROM", "ENV", "RUN", "ENV", "RUN", "RUN", "RUN", "COPY", "RUN", "ENV",
                                         "WORKDIR", "ENTRYPOINT"]
    user_env = commands[-3]
    pairs = dict(zip(user_env.value[::2], user_env.value[1::2], strict=True))
    assert set(pairs) == set(hostile_env(box))
    # Docker removes the quotes of ENV words like a POSIX shell (single quotes: no expansion at all)
    for key, word in pairs.items():
        res = box.run(f"printf %s {word}", shell="sh")
        assert res.stdout == hostile_env(box)[key], key
    # and each RUN line, run by sh -c as `docker build` does, only calls the (stubbed) programs
    for command in commands:
        if command.cmd == "RUN":
            box.run(command.value[0], shell="sh")
    box.assert_nothing_ran()
    index_calls = [c for c in box.calls("python") if "--index-url" in c["argv"]]
    assert index_calls and index_calls[0]["argv"][index_calls[0]["argv"].index("--index-url") + 1] == \
        "https://x/$(touch y)"


@pytest.mark.parametrize("where", ["base_image", "env", "source", "torch_index"])
def test_dockerfile_refuses_line_breaks(where: str) -> None:
    image = {**BUNDLE.image}
    kwargs: dict[str, Any] = {"source": "c.yml"}
    if where == "base_image":
        image["base_image"] = "python:3.11\nRUN touch /tmp/x"
    elif where == "env":
        image["env"] = {"A": "1\nRUN touch /tmp/x"}
    elif where == "source":
        kwargs["source"] = "c\nRUN touch /tmp/x.yml"
    else:
        kwargs["torch_index"] = "https://x\nRUN touch /tmp/x"
    with pytest.raises(UserError, match="newline"):
        render_dockerfile(image, **kwargs)


# ------------------------------------------------------------------------------------------------ Modal


def test_modal_wheel_step_treats_names_as_data(box: Sandbox) -> None:
    h = box.hostile
    res = box.run(wheel_install_command(f"/mudpuppy/wheels/{h[1]}.whl"), env={"PATH": f"{box.bin}:/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    box.assert_nothing_ran()
    (pip,) = box.calls("python")
    assert pip["argv"][-1] == f"/mudpuppy/wheels/{h[1]}.whl"


def test_modal_image_refuses_line_breaks_in_env() -> None:
    pytest.importorskip("modal")
    from mudpuppy.backends.modal_app import build_image

    spec = {"image": {**BUNDLE.image, "env": {"A": "1\nRUN touch /tmp/x"}}, "remote_bundle": "/b.tar.gz",
            "bundle_path": __file__}
    with pytest.raises(UserError, match="newline"):
        build_image(spec)


def test_stub_sandbox_detects_injection(box: Sandbox) -> None:
    """The harness itself can fail: an unquoted hostile value does create the canary."""
    box.run(f"echo {box.hostile[0]}")
    assert box.canary.exists()
    with pytest.raises(AssertionError):
        box.assert_nothing_ran()
    box.canary.unlink()
    assert shlex.quote(box.hostile[0]) != box.hostile[0] and os.sep in str(box.canary)
