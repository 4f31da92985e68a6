"""Golden outputs: seeded tiny models (face and body, decoder and blend outputs) reproduce the values
stored in tests/data/golden_tiny.safetensors, so that a change in the maths cannot pass unnoticed.

When a change of the outputs is intended, regenerate the file and say so in the commit:

    python tests/golden.py --write

The models run in float64 (tests/golden.py says why): rounding differences between CPUs stay below
1e-12, far inside ATOL, while a change of one weight by 1e-3, of an op or of the inputs moves the
values by 1e-6 or more.
"""

import pytest
import torch
from safetensors.torch import load_file

from golden import CASES, GOLDEN, golden_values

ATOL = 1e-9


@pytest.fixture(scope="module")
def stored() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN)


@pytest.mark.parametrize("case", CASES)
def test_tiny_model_reproduces_its_stored_outputs(stored, case):
    fresh = golden_values(case)
    assert sorted(fresh) == sorted(key for key in stored if key.startswith(f"{case}/"))
    for key, value in fresh.items():
        torch.testing.assert_close(value, stored[key], atol=ATOL, rtol=0, msg=lambda text, key=key: f"{key}: {text}")
