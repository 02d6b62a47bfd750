"""SkyPilot calls for ``backends.skypilot``, run by the interpreter of SkyPilot's own environment.

Usage: ``SKY_PYTHON skypilot_driver.py COMMAND < payload.json``; the last stdout line is a JSON result
(``{"error": ..., "hint": ...}`` on a problem the user can fix). Only the standard library and ``sky`` are
imported, so this file works in an environment without mudpuppy (SkyPilot's ``click<8.2`` pin keeps it out of
the training environment). Commands:

validate  {"tasks": [task, ...]} -> each parsed with ``sky.Task.from_yaml_config`` and dumped back
launch    {"task", "managed", "cluster", "idle_minutes_to_autostop", "down_on_failure", "secrets": [names]}
          -> {"request_id"} as soon as SkyPilot accepts it, then {"job_id"}
status / logs   {"managed", "cluster", "job_id"}
cancel   {"managed", "cluster", "job_id", "down"}: ``down`` also tears an unmanaged cluster down
down     {"cluster"}: tear a cluster down (``mudpuppy gc``); one that no longer exists is reported as gone

Launch checks, before anything is created: the task parses, the requested cloud is enabled (``sky check``
has credentials for it), and every secret is set. Secret values come from this process's environment and are
attached to the in-memory ``Task`` only.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Any


class Problem(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _task(config: dict[str, Any], secrets: dict[str, str] | None = None) -> Any:
    """Parse one task. Secret values go in as ``secrets_overrides``: a bare ``NAME: null`` left in the task is a
    *managed-secret reference* in SkyPilot 0.14 (``update_secrets`` afterwards does not clear it, and execution then
    fails with "No value available for secret(s)"), while an override becomes an inline value. The task's
    ``_user_specified_yaml`` (what SkyPilot shows and stores) is taken before the overrides, so it keeps no value."""
    import sky

    try:
        return sky.Task.from_yaml_config(copy.deepcopy(config),  # it pops keys from the dict it is given
                                         secrets_overrides=sorted(secrets.items()) if secrets else None)
    except Exception as exc:  # SkyPilot raises ValueError / jsonschema errors with a readable first line
        raise Problem(f"SkyPilot rejected the task: {str(exc).splitlines()[0]}") from None


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    """Parse each task (YAML text through ``Task.from_yaml_str``, dicts through ``from_yaml_config``) and dump it."""
    import sky

    out = []
    for config in payload["tasks"]:
        if isinstance(config, str):
            try:
                task = sky.Task.from_yaml_str(config)
            except Exception as exc:
                raise Problem(f"SkyPilot rejected the task: {str(exc).splitlines()[0]}") from None
        else:
            task = _task(config)
        dumped = _public(task.to_yaml_config())
        again = _public(_task(dumped).to_yaml_config())
        stable = _canonical(again) == _canonical(dumped)
        out.append({"dumped": dumped, "stable": stable, "num_nodes": task.num_nodes,
                    "resources": [str(r) for r in task.resources]})
    return {"tasks": out}


def _canonical(config: dict[str, Any]) -> str:
    """``resources.any_of`` is a set inside SkyPilot, dumped in no fixed order: compare it sorted."""
    resources = dict(config.get("resources") or {})
    if isinstance(resources.get("any_of"), list):
        resources["any_of"] = sorted(resources["any_of"], key=lambda r: json.dumps(r, sort_keys=True))
    return json.dumps({**config, "resources": resources}, sort_keys=True)


def _public(config: dict[str, Any]) -> dict[str, Any]:
    """The task's YAML keys without SkyPilot's bookkeeping (``_user_specified_yaml`` holds the original text)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _check_cloud(task: Any) -> None:
    import sky

    wanted = {str(r.cloud).lower() for r in task.resources if r.cloud is not None}
    from sky.client import sdk

    enabled = [str(c).lower() for c in sky.get(sdk.enabled_clouds())]
    if not enabled:
        raise Problem("no cloud has credentials set up", hint="run `sky check` and follow what it says")
    missing = sorted(wanted - set(enabled))
    if missing:
        raise Problem(f"cloud {missing[0]} has no credentials here (enabled: {', '.join(sorted(enabled))})",
                      hint=f"run `sky check {missing[0]}`")


def launch(payload: dict[str, Any]) -> dict[str, Any]:
    import sky
    import sky.jobs

    missing = [name for name in payload.get("secrets", []) if name not in os.environ]
    if missing:
        raise Problem(f"secret {missing[0]} is not set in your environment", hint="export it, then relaunch")
    task = _task(payload["task"], {name: os.environ[name] for name in payload.get("secrets", [])})
    _check_cloud(task)
    if payload["managed"]:
        request = sky.jobs.launch(task, name=task.name)
    else:
        request = sky.launch(
            task, cluster_name=payload["cluster"], idle_minutes_to_autostop=payload.get("idle_minutes_to_autostop"),
            down=payload.get("idle_minutes_to_autostop") is not None,
        )
    # the launch goes on in SkyPilot's API server if we are stopped while it provisions: say how to find it first
    print(json.dumps({"request_id": str(request)}), flush=True)
    try:
        job_id = _job_id(sky.stream_and_get(request))
    except Exception as exc:  # provisioning or setup failed: a cluster made for this run goes, not a named one
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if not payload["managed"] and payload.get("down_on_failure"):
            sky.get(sky.down(payload["cluster"]))
            raise Problem(f"launch failed and cluster {payload['cluster']} was torn down: {first}") from None
        raise Problem(f"launch failed: {first}", hint="see `sky status` and `sky logs`") from None
    if job_id is None:
        raise Problem("SkyPilot returned no job id")
    return {"job_id": int(job_id)}


def _job_id(result: Any) -> int | None:
    """``(job_id, handle)`` from a launch, ``([job_id], handle)`` from a managed launch."""
    job_id = result[0] if isinstance(result, tuple | list) else result
    job_id = job_id[0] if isinstance(job_id, list) and job_id else job_id
    return None if job_id is None or job_id == [] else int(job_id)


def _resolve(payload: dict[str, Any]) -> tuple[int | None, dict[str, Any] | None]:
    """The job id; for a launch we stopped waiting for (handle id ``req-REQUEST``), ask SkyPilot's API server
    how that request ended. Returns (job id, None) or (None, a status answer while it is unresolved)."""
    request = payload.get("request_id")
    if not request:
        return int(payload["job_id"]), None
    import sky

    records = sky.api_status([request])
    state = _name(getattr(records[0], "status", None)) if records else None
    state = (state or "").upper()
    if state in ("PENDING", "RUNNING"):
        return None, {"status": "STARTING", "reason": f"SkyPilot is still launching (request {request})"}
    if state != "SUCCEEDED":
        return None, {"status": "FAILED_PRECHECKS" if not records else "FAILED",
                      "reason": f"SkyPilot launch request {request} {state.lower() or 'is unknown'}"}
    return _job_id(sky.get(request)), None


def status(payload: dict[str, Any]) -> dict[str, Any]:
    import sky
    import sky.jobs

    resolved, answer = _resolve(payload)
    if resolved is None:
        return answer or {"status": None, "reason": "SkyPilot returned no job id"}
    job_id = resolved
    if payload["managed"]:
        records = sky.get(sky.jobs.queue(refresh=False, skip_finished=False, job_ids=[job_id]))
        if isinstance(records, tuple):
            records = records[0]
        for record in records:
            data = record if isinstance(record, dict) else getattr(record, "__dict__", {})
            if int(data.get("job_id", -1)) == job_id:
                return {"status": _name(data.get("status")), "reason": data.get("failure_reason"),
                        "recovery_count": data.get("recovery_count")}
        return {"status": None, "reason": "SkyPilot no longer lists the job"}
    statuses = sky.get(sky.job_status(payload["cluster"], [job_id]))
    value = statuses.get(job_id) if isinstance(statuses, dict) else None
    return {"status": _name(value) if value is not None else None,
            "reason": None if value is not None else "cluster or job not found"}


def logs(payload: dict[str, Any]) -> dict[str, Any]:
    import sky
    import sky.jobs

    resolved, answer = _resolve(payload)
    if resolved is None:
        print((answer or {}).get("reason", "no job yet"), flush=True)
        return {}
    job_id, follow = resolved, bool(payload.get("follow"))
    if payload["managed"]:
        sky.jobs.tail_logs(job_id=job_id, follow=follow, output_stream=sys.stdout)
    else:
        sky.tail_logs(payload["cluster"], job_id, follow, output_stream=sys.stdout)
    sys.stdout.flush()
    return {}


def cancel(payload: dict[str, Any]) -> dict[str, Any]:
    import sky
    import sky.jobs

    resolved, _answer = _resolve(payload)
    if resolved is None and payload.get("request_id"):
        sky.get(sky.api_cancel(payload["request_id"]))  # stop a launch that is still provisioning
    job_id = resolved
    if payload["managed"]:  # the jobs controller tears the job's cluster down itself
        if job_id is None:
            return {"cancelled": None}
        sky.get(sky.jobs.cancel(job_ids=[job_id]))
        return {"cancelled": job_id}
    if job_id is not None:
        sky.get(sky.cancel(payload["cluster"], job_ids=[job_id]))
    if payload.get("down", True):
        sky.get(sky.down(payload["cluster"]))
    return {"cancelled": job_id, "down": bool(payload.get("down", True))}


def down(payload: dict[str, Any]) -> dict[str, Any]:
    import sky
    import sky.exceptions

    try:
        sky.get(sky.down(payload["cluster"]))
    except sky.exceptions.ClusterDoesNotExist:
        return {"down": payload["cluster"], "gone": True}
    return {"down": payload["cluster"], "gone": False}


def _name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value)).rsplit(".", 1)[-1]


COMMANDS = {"validate": validate, "launch": launch, "status": status, "logs": logs, "cancel": cancel, "down": down}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(json.dumps({"error": f"usage: skypilot_driver.py {{{','.join(COMMANDS)}}} < payload.json"}))
        return 2
    payload = json.loads(sys.stdin.read() or "{}")
    try:
        result = COMMANDS[argv[0]](payload)
    except Problem as exc:
        print(json.dumps({"error": str(exc), "hint": exc.hint}))
        return 3
    except ImportError as exc:
        print(json.dumps({"error": f"SkyPilot is not importable here ({exc})",
                          "hint": "point MUDPUPPY_SKYPILOT_PYTHON at the python of SkyPilot's environment"}))
        return 3
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
