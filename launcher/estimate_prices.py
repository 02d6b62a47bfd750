"""$/hour for the run's GPUs on its backend: SkyPilot's catalog, a dated Modal table, nothing for the rest.

Each price carries where it came from and how old it is (``Price.source``, ``Price.as_of``), because cloud
prices move and a number without its date misleads. SLURM, SSH, local and Ray clusters are machines someone
already pays for: they get GPU-hours only.
"""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

# Modal's GPU rates in $/second, from https://modal.com/pricing as listed in May 2026 (cross-checked against a
# third-party copy "verified on May 7, 2026"); not fetched at run time. Modal runs functions on preemptible
# capacity by default; ``launch.modal.nonpreemptible: true`` is billed at 3x (Modal's pricing page, same date).
# Region selection adds a multiplier that is not applied here. GPU only: CPU and memory are billed on top.
MODAL_TABLE_DATE = "2026-05-07"
MODAL_SOURCE = "https://modal.com/pricing"
MODAL_PER_SECOND: dict[str, float] = {
    "B200": 0.001736,
    "H200": 0.001261,
    "H100": 0.001097,
    "A100-80GB": 0.000694,
    "A100": 0.000583,  # Modal's "A100" is the 40 GB card
    "A100-40GB": 0.000583,
    "L40S": 0.000542,
    "A10G": 0.000306,
    "L4": 0.000222,
    "T4": 0.000164,
}
MODAL_NONPREEMPTIBLE_FACTOR = 3.0

SCRIPT = Path(__file__).with_name("skypilot_prices.py")


@dataclass
class Price:
    """Price of one GPU for one hour, on-demand and spot (None where that kind is not sold)."""

    on_demand: float | None
    spot: float | None
    source: str
    as_of: str              # date of the figure (ISO)
    detail: str = ""        # instance type / cloud / region it belongs to


def for_launch(launch: Any) -> Price | None:
    """The price for ``launch.backend`` and ``launch.gpus``; None where the backend has no price list."""
    from mudpuppy.launcher.estimate import parse_gpus

    kind, count = parse_gpus(launch.gpus)
    if not kind:
        return None
    if launch.backend == "modal":
        return modal_price(kind)
    if launch.backend == "skypilot":
        return skypilot_price(kind, count, launch)
    return None


def modal_price(kind: str) -> Price | None:
    name = kind.rstrip("!+").upper()
    rate = MODAL_PER_SECOND.get(name)
    if rate is None:
        return None
    hourly = rate * 3600
    return Price(on_demand=hourly * MODAL_NONPREEMPTIBLE_FACTOR, spot=hourly,
                 source=f"Modal price table shipped with mudpuppy ({MODAL_SOURCE}); spot = Modal's default "
                 "preemptible rate, on-demand = nonpreemptible (3x)", as_of=MODAL_TABLE_DATE,
                 detail=f"{name} ${rate}/s")


def skypilot_price(kind: str, count: int, launch: Any) -> Price | None:
    """The cheapest offer for ``count`` x ``kind`` per node in SkyPilot's local catalog (per GPU-hour)."""
    from mudpuppy.backends.skypilot import sky_python

    python = sky_python(launch)
    payload = {"gpu": kind.rstrip("!+"), "count": count,
               "clouds": [launch.skypilot.cloud] if launch.skypilot.cloud else None,
               "region": launch.skypilot.region}
    # AWS_EC2_METADATA_DISABLED: without AWS credentials boto3 would probe the EC2 metadata address first
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": os.environ.get("AWS_EC2_METADATA_DISABLED", "true")}
    try:
        proc = subprocess.run([python, str(SCRIPT)], input=json.dumps(payload), capture_output=True, text=True,
                              timeout=300, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"SkyPilot's catalog could not be read: {exc}") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise UserError(f"SkyPilot's catalog could not be read: {tail[0][:200]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("error"):
        raise UserError(f"SkyPilot's catalog: {result['error']}")
    return cheapest(result, count)


def cheapest(result: dict[str, Any], count: int) -> Price | None:
    offers = [o for o in result.get("offers", []) if not o.get("error")]
    if not result.get("catalogs"):
        raise UserError("SkyPilot has no catalog on this machine yet",
                        hint="run `sky gpus list` once (it downloads the catalogs) to get prices")
    if not offers:
        return None
    on_demand = [o for o in offers if o.get("price")]
    spot = [o for o in offers if o.get("spot_price")]
    best = min(on_demand, key=lambda o: o["price"]) if on_demand else None
    best_spot = min(spot, key=lambda o: o["spot_price"]) if spot else None
    clouds = {o["cloud"].lower() for o in offers}
    used = [c for c in result["catalogs"] if c["cloud"] in clouds] or result["catalogs"]
    oldest = min(c["mtime"] for c in used)
    paths = ", ".join(c["path"] for c in used)
    detail = []
    if best:
        detail.append(f"on-demand {best['cloud']} {best['instance_type']} {best['region']}")
    if best_spot:
        detail.append(f"spot {best_spot['cloud']} {best_spot['instance_type']} {best_spot['region']}")
    return Price(on_demand=best["price"] / count if best else None,
                 spot=best_spot["spot_price"] / count if best_spot else None,
                 source=f"SkyPilot catalog ({paths}), cheapest offer", as_of=_date(oldest),
                 detail="; ".join(detail))


def _date(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def age_days(as_of: str, now: float | None = None) -> int:
    then = calendar.timegm(time.strptime(as_of, "%Y-%m-%d"))
    return max(0, int(((now or time.time()) - then) // 86400))
