"""Our GPU names -> Ray's accelerator labels (``accelerator_type:X`` resources).

Why a table: Ray labels a node with the model it reads from the driver (``A100``, ``A10G``, ``H100`` ...), never
with the memory suffixes people (and SkyPilot/Modal) write (``A100-80GB``, ``A10``). A resource that no node has
leaves the job pending forever, so a name is mapped here or refused before anything is submitted. Every value is a
constant of ``ray.util.accelerators`` (tests/unit/backends/test_ray_accelerators.py checks it against the installed
Ray). ``A100-80GB`` maps to ``A100``, the label Ray adds by itself: Ray's ``A100-80G``/``A100-40G`` labels are
only present where a cluster adds them by hand, so those are used only when written exactly like that.
"""

from __future__ import annotations

from mudpuppy.launcher.errors import UserError

# Ray's own names (values of ray.util.accelerators constants), accepted as written (case-insensitive).
RAY_NAMES = (
    "V100", "P100", "T4", "P4", "K80", "A10G", "L4", "L40S", "A100", "A100-40G", "A100-80G", "H100", "H200", "H20",
    "B200", "B300", "GB200", "GB300", "RTX-PRO-6000",
    "AMD-Instinct-MI100", "AMD-Instinct-MI210", "AMD-Instinct-MI250X", "AMD-Instinct-MI250X-MI250",
    "AMD-Instinct-MI300A", "AMD-Instinct-MI300X-OAM", "AMD-Instinct-MI300X-HF", "AMD-Instinct-MI308X",
    "AMD-Instinct-MI325X-OAM", "AMD-Instinct-MI350X-OAM", "AMD-Instinct-MI355X-OAM",
    "Intel-GPU-Max-1550", "Intel-GPU-Max-1100", "Intel-GAUDI",
)

# The spellings used elsewhere in mudpuppy (SkyPilot / Modal / nvidia-smi style) -> Ray's label.
ALIASES = {
    "A10": "A10G", "A10-24GB": "A10G",
    "A100-40GB": "A100", "A100-80GB": "A100", "A100-SXM4-80GB": "A100", "A100-PCIE-40GB": "A100",
    "H100-80GB": "H100", "H100-SXM": "H100", "H100-NVL": "H100", "H100!": "H100",
    "H200-141GB": "H200", "L40": "L40S", "V100-32GB": "V100", "V100-16GB": "V100",
    "RTX-PRO-6000-BLACKWELL": "RTX-PRO-6000", "RTXPRO6000": "RTX-PRO-6000",
    "MI100": "AMD-Instinct-MI100", "MI210": "AMD-Instinct-MI210", "MI250": "AMD-Instinct-MI250X-MI250",
    "MI250X": "AMD-Instinct-MI250X", "MI300A": "AMD-Instinct-MI300A", "MI300X": "AMD-Instinct-MI300X-OAM",
    "MI308X": "AMD-Instinct-MI308X", "MI325X": "AMD-Instinct-MI325X-OAM", "MI350X": "AMD-Instinct-MI350X-OAM",
    "MI355X": "AMD-Instinct-MI355X-OAM", "GAUDI": "Intel-GAUDI",
}

_LOOKUP = {**{name.upper(): name for name in RAY_NAMES}, **{k.upper(): v for k, v in ALIASES.items()}}


def ray_accelerator(kind: str) -> str:
    """Ray's label for ``kind`` (``A100-80GB`` -> ``A100``); an unknown name is one line listing the valid ones."""
    found = _LOOKUP.get(kind.strip().upper())
    if found is None:
        raise UserError(
            f"launch.gpus: Ray has no accelerator type {kind!r}",
            hint="use one of " + ", ".join(sorted(set(RAY_NAMES) | set(ALIASES))),
        )
    return found
