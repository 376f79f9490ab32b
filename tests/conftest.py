import numpy as np
import pytest

from tests.helpers import REAL_CT


@pytest.fixture
def real_ct():
    if not (REAL_CT / "example_ct_sm.nii.gz").is_file():
        pytest.skip(f"shared real CT data not found at {REAL_CT}")
    return REAL_CT


@pytest.fixture
def rng():
    return np.random.default_rng(0)
