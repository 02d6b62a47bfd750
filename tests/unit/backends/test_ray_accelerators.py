"""The GPU-name table of the ray backend, checked against the installed Ray's own accelerator constants."""

from __future__ import annotations

import pytest

from mudpuppy.backends.ray_accelerators import ALIASES, RAY_NAMES, ray_accelerator
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(60)


def ray_constants() -> set[str]:
    accelerators = pytest.importorskip("ray.util.accelerators.accelerators")
    return {value for name, value in vars(accelerators).items() if name[:1].isupper() and isinstance(value, str)}


def test_every_value_is_a_real_ray_label() -> None:
    constants = ray_constants()
    assert set(RAY_NAMES) <= constants, set(RAY_NAMES) - constants
    assert set(ALIASES.values()) <= constants, set(ALIASES.values()) - constants


def test_every_ray_gpu_label_is_accepted_as_written() -> None:
    """A new NVIDIA/AMD label in Ray makes this fail until the table knows it."""
    gpus = {v for v in ray_constants() if not v.startswith(("TPU", "M1", "M2", "M3", "Apple", "aws", "Ascend", "MXC",
                                                            "FURIOSA", "MOBILINT", "AMD-Radeon"))}
    assert {v for v in gpus if ray_accelerator(v) != v} == set()


def test_our_spellings_map_to_ray_labels() -> None:
    assert ray_accelerator("A100-80GB") == "A100" and ray_accelerator("a10") == "A10G"
    assert ray_accelerator("A100-80G") == "A100-80G" and ray_accelerator("h100") == "H100"
    assert ray_accelerator("MI300X") == "AMD-Instinct-MI300X-OAM"


def test_unknown_name_is_one_line_listing_valid_ones() -> None:
    with pytest.raises(UserError) as err:
        ray_accelerator("A100-81GB")
    line = err.value.one_line()
    assert "\n" not in line and line.startswith("launch.gpus: Ray has no accelerator type 'A100-81GB'")
    assert "A10G" in line and "A100-80G" in line and "H100" in line
