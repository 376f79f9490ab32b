"""A separately installed package adds an answerer and a segmenter through the
``volvqa.models`` / ``volvqa.segmenters`` entry point groups, with no change to
volvqa: it is built and installed with pip (into a folder of its own), and the
real command line finds both."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

PLUGIN = '''
import numpy as np

from volvqa.models.base import Prediction
from volvqa.records import LabelMap


class Threshold:
    """Segmenter kind ``threshold:<HU>``: every voxel above HU is liver."""

    @staticmethod
    def make(spec, device="auto"):
        return ThresholdSegmenter(float(spec.split(":", 1)[1]))

    @staticmethod
    def annotates(spec):
        return {"liver"}


class ThresholdSegmenter:
    def __init__(self, hu):
        self.hu = hu

    def segment(self, volume):
        arr = (np.asarray(volume.array) > self.hu).astype(np.uint8)
        return LabelMap(arr, {1: "liver"}, volume.affine, annotates=frozenset({"liver"}))


class BrightCount:
    """Answerer ``brightcount[:HU]``: the number of voxels above HU (default 0)."""

    def __init__(self, hu):
        self.name, self.hu = "brightcount", hu

    def answer(self, volume, item):
        n = int((np.asarray(volume.array) > self.hu).sum())
        return Prediction(item["qid"], str(n), str(n), self.name, 0.0)


def make_model(arg, request):
    return BrightCount(float(arg) if arg else 0.0)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "volvqa-demo-plugin"
version = "0.1"

[project.entry-points."volvqa.models"]
brightcount = "volvqa_demo_plugin:make_model"

[project.entry-points."volvqa.segmenters"]
threshold = "volvqa_demo_plugin:Threshold"
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    src = tmp_path_factory.mktemp("plugin_src")
    (src / "volvqa_demo_plugin").mkdir()
    (src / "volvqa_demo_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (src / "pyproject.toml").write_text(PYPROJECT)
    site = tmp_path_factory.mktemp("plugin_site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert any(p.name.endswith(".dist-info") for p in site.iterdir())
    return site


@pytest.fixture()
def cube_ct(tmp_path):
    """A 20x20x20 CT at 1.5 x 1.5 x 2 mm with a 10x10x10-voxel block at 60 HU in air."""
    arr = np.full((20, 20, 20), -1000, np.int16)
    arr[4:14, 5:15, 5:15] = 60
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    p = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(arr, aff), p)
    return p


def volvqa(site, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "volvqa.cli", *args], capture_output=True, text=True, env=env)


def test_an_installed_answerer_runs_by_its_name(installed, cube_ct):
    r = volvqa(installed, "answer", "--volume", str(cube_ct), "--question", "How many bright voxels?",
               "--model", "brightcount:-500", "--allow-non-ct")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(1000)


def test_an_installed_segmenter_serves_segment_and_grounded_answers(installed, cube_ct, tmp_path):
    out = tmp_path / "seg"
    out.mkdir()
    r = volvqa(installed, "segment", str(cube_ct), "--backend", "threshold:0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    seg = np.asarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj)
    assert int((seg > 0).sum()) == 1000
    r = volvqa(installed, "answer", "--volume", str(cube_ct), "--question", "What is the volume of the liver in ml?",
               "--segmenter", "threshold:0", "--qc", "off", "--json", "--allow-non-ct")
    assert r.returncode == 0, r.stderr
    pred = json.loads(r.stdout)
    assert float(pred["answer"].split()[0]) == pytest.approx(1000 * 1.5 * 1.5 * 2.0 / 1000, abs=0.01)


def test_without_the_package_the_name_is_unknown(cube_ct, tmp_path):
    r = volvqa(tmp_path, "answer", "--volume", str(cube_ct), "--question", "q", "--model", "brightcount",
               "--allow-non-ct")
    assert r.returncode == 2 and "--model brightcount: unknown model" in r.stderr, r.stderr
