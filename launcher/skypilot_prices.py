"""GPU prices from SkyPilot's own catalog, run by the interpreter of SkyPilot's environment.

Usage: ``SKY_PYTHON skypilot_prices.py < {"gpu": "H100", "count": 8, "clouds": null, "region": null}``; prints
one JSON line ``{"offers": [...], "catalogs": [...]}`` (or ``{"error": ...}``). Only the standard library and
``sky`` are imported (SkyPilot's ``click<8.2`` pin keeps it out of the training environment, as with
``backends/skypilot_driver.py``).

Offline by design: only clouds whose catalog file is already on disk are asked (SkyPilot downloads a missing
catalog on first read, which this must not trigger); ``sky.catalog.list_accelerators`` then answers from those
files, the same function behind ``sky gpus list``. Each catalog's modification time is read before the query
(SkyPilot may refresh a stale one in place), so the report says how old the prices are.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Any


def _catalog_files(clouds: list[str] | None) -> dict[str, str]:
    from sky.catalog import common

    root = os.path.dirname(common.get_catalog_path("x/vms.csv").rstrip("/"))
    root = os.path.dirname(root)
    names = clouds or (sorted(os.listdir(root)) if os.path.isdir(root) else [])
    found = {}
    for name in names:
        path = common.get_catalog_path(f"{name.lower()}/vms.csv")
        if os.path.isfile(path):
            found[name.lower()] = path
    return found


def prices(payload: dict[str, Any]) -> dict[str, Any]:
    from sky import catalog

    files = _catalog_files(payload.get("clouds"))
    catalogs = [{"cloud": cloud, "path": path, "mtime": os.path.getmtime(path)} for cloud, path in files.items()]
    offers: list[dict[str, Any]] = []
    for cloud in files:
        try:
            found = catalog.list_accelerators(
                gpus_only=True, name_filter=f"^{re.escape(payload['gpu'])}$", region_filter=payload.get("region"),
                quantity_filter=payload["count"], clouds=cloud, case_sensitive=False)
        except Exception as exc:  # one unreadable catalog must not hide the others
            offers.append({"cloud": cloud, "error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})
            continue
        for infos in found.values():
            for info in infos:
                offers.append({
                    "cloud": info.cloud, "instance_type": info.instance_type, "gpu": info.accelerator_name,
                    "count": info.accelerator_count, "region": info.region,
                    "price": _number(info.price), "spot_price": _number(info.spot_price),
                })
    return {"offers": offers, "catalogs": catalogs}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or number <= 0 else number


def main() -> int:
    try:
        result = prices(json.loads(sys.stdin.read()))
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
