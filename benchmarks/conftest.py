import numpy as np
import pytest
from scipy import ndimage

from tests.helpers import REAL_CT, ct_phantom, write_nii

BIG_SHAPE = (512, 512, 300)


@pytest.fixture(scope="session")
def big_ct(tmp_path_factory):
    """A 512x512x300 int16 CT as .nii.gz: the shared real CT upsampled (nearest
    neighbour) with scanner-like noise, or a phantom when the data are absent."""
    import nibabel as nib
    d = tmp_path_factory.mktemp("bench")
    if (REAL_CT / "example_ct_sm.nii.gz").is_file():
        img = nib.load(REAL_CT / "example_ct_sm.nii.gz")
        small = np.asanyarray(img.dataobj)
        aff = img.affine.copy()
    else:
        small = ct_phantom((122, 101, 30))
        aff = np.diag([3.0, 3.0, 3.0, 1.0])
    zoom = [b / s for b, s in zip(BIG_SHAPE, small.shape, strict=False)]
    big = ndimage.zoom(small, zoom, order=0, grid_mode=True, mode="grid-constant")[:512, :512, :300]
    big = big + np.random.default_rng(0).normal(0, 12, size=big.shape).astype(np.int16)
    aff[:3, :3] = aff[:3, :3] / np.array(zoom)
    return write_nii(d / "big_ct.nii.gz", big.astype(np.int16), aff), small, aff
