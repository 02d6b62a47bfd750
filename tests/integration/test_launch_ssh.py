"""The ssh backend against a real sshd on 127.0.0.1 (tests/infra): run, logs, status, upload-once, cancel,
and the bad inputs (unreachable host, wrong key, unknown host key) as one-line errors recorded in the registry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import FAKE, mp, one_line_error
from mudpuppy.tests.infra.services import Sshd, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SECRET = "hf_ssh_secret_9z8y7x6w"
CFG = "examples/tiny-alpaca.yml"
REPO_PYTHON = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")


def ssh_args(sshd: Sshd, project: Path, *, host: str | None = None, key: Path | None = None,
             known: Path | None = None) -> list[str]:
    import sys

    return [
        "--backend", "ssh",
        "--launch.ssh.hosts", f"[{host or sshd.host}]",
        "--launch.ssh.key_file", str(key or sshd.key_file),
        "--launch.ssh.known_hosts", str(known or sshd.known_hosts),
        "--launch.ssh.python", sys.executable if Path(sys.executable).exists() else REPO_PYTHON,
        "--launch.ssh.workdir", str(project / "remote"),
        "--launch.ssh.connect_timeout", "5",
        "--launch.entrypoint", FAKE,
    ]


def _status(run: str) -> dict:
    return json.loads(mp("status", run, "--json", timeout=60).stdout)


def _row(run: str) -> dict:
    rows = [json.loads(line) for line in mp("runs", "--json").stdout.splitlines()]
    return next(r for r in rows if r["id"] == run or r["name"] == run)


def test_ssh_run_logs_status_upload_once_and_cancel(sshd: Sshd, project: Path) -> None:
    args = ssh_args(sshd, project)
    proc = mp("launch", CFG, *args, "--name", "viassh", "--launch.secrets", "[HF_TOKEN]", env={"HF_TOKEN": SECRET})
    assert proc.returncode == 0, proc.stderr
    assert "fake runtime: done" in proc.stdout and "secret True" in proc.stdout
    status = _status("viassh")
    assert status["status"] == "succeeded" and status["handle"].startswith("ssh://")
    node0 = project / "remote" / "runs" / status["id"] / "node0"
    assert (node0 / "outputs/tiny-alpaca/final.txt").is_file()
    assert status["output"].endswith(f"{node0}/outputs/tiny-alpaca")
    assert "fake runtime: step 5/5" in mp("logs", "viassh").stdout
    bundles = list((project / "remote" / "bundles").glob("*.tar.gz"))
    assert len(bundles) == 1
    mtime = bundles[0].stat().st_mtime_ns
    for path in (project / "remote").rglob("*"):
        if path.is_file() and not path.name.endswith(".tar.gz"):
            assert SECRET.encode() not in path.read_bytes(), path

    long = mp("launch", CFG, *args, "--detach", "--launch.env.FAKE_STEPS", "1000", "--launch.env.FAKE_STEP_S", "0.2")
    assert long.returncode == 0, long.stderr
    run = long.stdout.strip()
    assert bundles[0].stat().st_mtime_ns == mtime  # same bundle: not uploaded again
    log = project / "remote" / "runs" / run / "node0" / "output.log"
    wait_for(lambda: log.exists() and "step 1/" in log.read_text(), 30, 0.2, "the job to start")
    assert _status(run)["status"] == "running"
    assert mp("cancel", run, timeout=90).returncode == 0
    wait_for(lambda: _status(run)["status"] == "cancelled", 30, 0.5, "cancelled state")
    state = json.loads((log.parent / "state.json").read_text())
    assert not Path(f"/proc/{state['child_pid']}").exists()


def test_ssh_bad_inputs_are_one_line_and_recorded(sshd: Sshd, project: Path) -> None:
    closed = free_port()
    err = one_line_error(mp("launch", CFG, *ssh_args(sshd, project, host=f"{sshd.user}@127.0.0.1:{closed}"),
                            "--name", "unreachable"))
    assert f"cannot reach {sshd.user}@127.0.0.1:{closed}" in err
    row = _row("unreachable")
    assert row["status"] == "failed" and "cannot reach" in row["reason"]

    wrong = project / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True, timeout=30)
    err = one_line_error(mp("launch", CFG, *ssh_args(sshd, project, key=wrong), "--name", "wrongkey"))
    assert "authentication" in err and "failed" in err
    assert "authentication" in _row("wrongkey")["reason"]

    empty = project / "empty_known_hosts"
    empty.write_text("")
    err = one_line_error(mp("launch", CFG, *ssh_args(sshd, project, known=empty), "--name", "hostkey"))
    assert "host key" in err and "trust_on_first_use" in err
    assert _row("hostkey")["status"] == "failed"

    tofu = project / "tofu_known_hosts"
    proc = mp("launch", CFG, *ssh_args(sshd, project, known=tofu), "--launch.ssh.trust_on_first_use", "true",
              "--launch.env.FAKE_STEPS", "1")
    assert proc.returncode == 0, proc.stderr
    assert "ssh-ed25519" in tofu.read_text()  # recorded for next time


def test_two_hosts_rendezvous_at_the_first(sshd: Sshd, project: Path) -> None:
    """Two 'hosts' (two names for the same sshd): one supervisor each, torchrun ranks 0 and 1."""
    second = f"{sshd.user}@localhost:{sshd.port}"
    args = ssh_args(sshd, project)
    args[args.index("--launch.ssh.hosts") + 1] = f"[{sshd.host}, {second}]"
    proc = mp("launch", CFG, *args, "--nodes", "2", "--name", "twohosts", "--launch.ssh.master_port", "29561",
              "--launch.env.FAKE_STEPS", "3")
    assert proc.returncode == 0, proc.stderr
    status = _status("twohosts")
    assert status["status"] == "succeeded" and status["handle"].count(",") == 1
    runs = project / "remote" / "runs" / status["id"]
    assert "rank 0/2" in (runs / "node0" / "output.log").read_text()
    assert "rank 1/2" in (runs / "node1" / "output.log").read_text()
    assert (runs / "node0" / "outputs/tiny-alpaca/final.txt").read_text() == "steps=3 world=2\n"


def test_alias_hosts_rendezvous_at_an_address_the_hosts_resolve(sshd: Sshd, project: Path) -> None:
    """Hosts named by ~/.ssh/config aliases (which only this machine knows): torchrun on the hosts must get the
    first host's address as the hosts see it, not the alias."""
    home = project / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host mp-node-a\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"Host mp-node-b\n  HostName localhost\n  Port {sshd.port}\n  User {sshd.user}\n")
    args = ssh_args(sshd, project)
    args[args.index("--launch.ssh.hosts") + 1] = "[mp-node-a, mp-node-b]"
    proc = mp("launch", CFG, *args, "--nodes", "2", "--name", "aliases", "--launch.ssh.master_port", "29562",
              "--launch.env.FAKE_STEPS", "2", env={"HOME": str(home)}, timeout=240)
    assert proc.returncode == 0, proc.stderr
    runs = project / "remote" / "runs" / _status("aliases")["id"]
    for node in ("node0", "node1"):
        text = (runs / node / "output.log").read_text()
        assert " --master-addr=127.0.0.1 " in text, text  # the supervisor's log of the command it started
    assert (runs / "node0" / "outputs/tiny-alpaca/final.txt").read_text() == "steps=2 world=2\n"


def test_proxyjump_hops_get_the_same_host_key_check(sshd: Sshd, project: Path) -> None:
    """A ProxyJump through the real sshd to itself: the hop's key is checked like the target's (fabric would
    accept an unknown hop key), a known one lets the jump through."""
    home = project / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host mp-target\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n  ProxyJump mp-hop\n"
        f"  IdentityFile {sshd.key_file}\n"
        f"Host mp-hop\n  HostName localhost\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile {sshd.key_file}\n")
    target_only = project / "target_only_known_hosts"  # the target's key, not the hop's
    target_only.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(sshd.host_pub.split()[:2])}\n")
    args = ssh_args(sshd, project, host="mp-target", known=target_only)
    err = one_line_error(mp("launch", CFG, *args, "--name", "jumpunknown", env={"HOME": str(home)}))
    assert f"host key of {sshd.user}@localhost:{sshd.port} is not in {target_only}" in err, err
    assert _row("jumpunknown")["status"] == "failed"
    assert "localhost" not in target_only.read_text()  # nothing learnt silently

    proc = mp("launch", CFG, *ssh_args(sshd, project, host="mp-target"), "--launch.env.FAKE_STEPS", "1",
              env={"HOME": str(home)})
    assert proc.returncode == 0 and "fake runtime: done" in proc.stdout, proc.stderr


def test_job_runs_in_a_login_shell(project: Path) -> None:
    """module/conda setups live in login files: a variable exported by the user's ~/.bash_profile reaches the job."""
    from mudpuppy.tests.infra.services import start_sshd

    home = project / "remote-home"
    home.mkdir()
    (home / ".bash_profile").write_text("export FAKE_STEPS=3\n")  # the fake job's step count, default 5
    host = start_sshd(set_env={"HOME": str(home)})  # the session's HOME: its login files, not the machine's
    try:
        proc = mp("launch", CFG, *ssh_args(host, project))
        assert proc.returncode == 0, proc.stderr
        assert "fake runtime: step 3/3" in proc.stdout and "step 5/5" not in proc.stdout, proc.stdout
    finally:
        host.stop()


def _fake_tools(folder: Path) -> Path:
    """``docker`` and ``apptainer`` wrappers around tests/infra/fake_container.py; calls logged to calls.jsonl."""
    import sys

    folder.mkdir()
    for tool in ("docker", "apptainer"):
        wrapper = folder / tool
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m mudpuppy.tests.infra.fake_container "
                           f"{folder / 'calls.jsonl'} {tool} \"$@\"\n")
        wrapper.chmod(0o755)
    return folder / "calls.jsonl"


def test_image_runs_through_the_container_tool_with_secrets_by_name(project: Path) -> None:
    """launch.image on an ssh host: the job runs through `docker run` (then `apptainer exec`) found on the host's
    PATH; secrets reach the job by name, never on the tool's argv; a preemption restarts inside the image and
    `mudpuppy status` shows the attempts."""
    import sys

    from mudpuppy.tests.infra.services import start_sshd

    calls = _fake_tools(project / "fakebin")
    home = project / "remote-home"
    home.mkdir()  # the job runs in a login shell (/etc/profile resets PATH): the host's login files add the tools
    (home / ".bash_profile").write_text(f"export PATH={calls.parent}:$PATH\n")
    host = start_sshd(set_env={"HOME": str(home)})
    try:
        args = ssh_args(host, project)
        args += ["--launch.image", "ghcr.io/acme/train:1", "--launch.ssh.container_python", sys.executable]
        proc = mp("launch", CFG, *args, "--name", "indocker", "--detach", "--launch.secrets", "[HF_TOKEN]",
                  "--launch.env.FAKE_STEPS", "30", "--launch.env.FAKE_STEP_S", "0.1", env={"HF_TOKEN": SECRET})
        assert proc.returncode == 0, proc.stderr
        run = proc.stdout.strip()
        node0 = project / "remote" / "runs" / run / "node0"
        log = node0 / "output.log"
        wait_for(lambda: log.exists() and "step 3/" in log.read_text(), 60, 0.2, "the job to run in the image")
        import os
        import signal

        os.kill(int((node0 / "supervisor.pid").read_text()), signal.SIGUSR1)  # a preemption notice
        wait_for(lambda: _status(run)["status"] in ("succeeded", "failed"), 90, 0.5, "the run to finish")
        text = mp("status", run, timeout=60).stdout
        logs = mp("logs", run).stdout
        assert _status(run)["status"] == "succeeded", logs
        assert "attempts: 2" in text and "restarts: 1" in text, text
        assert "secret True" in logs and "resumed from step" in logs and "attempt 1 node" in logs, logs
        recorded = [json.loads(line) for line in calls.read_text().splitlines()]
        assert [c["tool"] for c in recorded] == ["docker", "docker"]  # one container per attempt
        argv = recorded[0]["argv"]
        assert argv[:2] == ["run", "--rm"] and "ghcr.io/acme/train:1" in argv and "--network=host" in argv
        assert "--env=HF_TOKEN" in argv and "--env=MUDPUPPY_ATTEMPT" in argv
        assert f"--volume={project / 'remote'}:{project / 'remote'}" in argv
        assert f"--user={os.getuid()}:{os.getgid()}" in argv
        assert (node0 / "outputs/tiny-alpaca/final.txt").read_text() == "steps=30 world=1\n"

        proc = mp("launch", CFG, *args, "--name", "inapptainer", "--launch.ssh.container", "apptainer",
                  "--launch.secrets", "[HF_TOKEN]", "--launch.env.FAKE_STEPS", "2", env={"HF_TOKEN": SECRET})
        assert proc.returncode == 0, proc.stderr
        assert "fake runtime: done" in proc.stdout and "secret True" in proc.stdout
        recorded = [json.loads(line) for line in calls.read_text().splitlines()]
        assert recorded[-1]["tool"] == "apptainer" and recorded[-1]["argv"][0] == "exec"
        assert SECRET not in calls.read_text()  # no secret value on any container command line
    finally:
        host.stop()
