"""Datasets built to escape: case ids, CSV tables, links and roots that point outside.

Each goes through the real ``volvqa build-qa`` process: exit status 2, one line
naming the problem, nothing written outside ``--out`` (nothing in it either),
and memory bounded."""
import os

import numpy as np
import pytest
import yaml

from tests.helpers import ct_phantom, files_under, run_cli_measured, write_nii

SHAPE = (24, 20, 12)
PEAK_MIB = 500   # the CLI with numpy, nibabel and pydicom loaded is about 100-200 MiB


def _seg():
    s = np.zeros(SHAPE, np.uint8)
    s[4:12, 4:12, 2:8] = 1
    return s


def _workspace(tmp_path):
    ws = tmp_path / "ws"
    root = ws / "data"
    (root / "scans").mkdir(parents=True)
    write_nii(root / "scans" / "a.nii.gz", ct_phantom(SHAPE))
    write_nii(root / "scans" / "a_seg.nii.gz", _seg())
    outside = tmp_path / "outside"
    outside.mkdir()
    write_nii(outside / "seg.nii.gz", _seg())
    (outside / "segmentations").mkdir()
    write_nii(outside / "segmentations" / "liver.nii.gz", _seg())
    return ws, root, outside


def _manifest(ws, layout, root="data", **extra):
    p = ws / "m.yaml"
    p.write_text(yaml.safe_dump({"name": "hostile", "layout": layout, "root": root, "labels": {1: "liver"}
                                 if layout == "csv" else "auto", **extra}))
    return p


def _traversal_case_id(ws, root, outside):
    (root / "cases.csv").write_text("case_id,ct,masks\n../../../escaped,scans/a.nii.gz,scans/a_seg.nii.gz\n")
    return _manifest(ws, "csv"), "invalid case id"


def _case_id_with_separator(ws, root, outside):
    (root / "cases.csv").write_text("case_id,ct,masks\nsub/dir,scans/a.nii.gz,scans/a_seg.nii.gz\n")
    return _manifest(ws, "csv"), "invalid case id"


def _csv_table_outside(ws, root, outside):
    (outside / "cases.csv").write_text("case_id,ct,masks\na,scans/a.nii.gz,scans/a_seg.nii.gz\n")
    return _manifest(ws, "csv", csv=os.path.relpath(outside / "cases.csv", ws)), "outside the manifest's folder"


def _mask_file_link_out(ws, root, outside):
    os.symlink(outside / "seg.nii.gz", root / "scans" / "link_seg.nii.gz")
    (root / "cases.csv").write_text("case_id,ct,masks\na,scans/a.nii.gz,scans/link_seg.nii.gz\n")
    return _manifest(ws, "csv"), "resolves outside the dataset root"


def _mask_folder_file_link_out(ws, root, outside):
    d = root / "BDMAP_00000001"
    (d / "segmentations").mkdir(parents=True)
    write_nii(d / "ct.nii.gz", ct_phantom(SHAPE))
    write_nii(d / "segmentations" / "spleen.nii.gz", _seg())
    os.symlink(outside / "segmentations" / "liver.nii.gz", d / "segmentations" / "liver.nii.gz")
    return _manifest(ws, "abdomenatlas"), "resolves outside the dataset root"


def _case_folder_link_out(ws, root, outside):
    write_nii(outside / "ct.nii.gz", ct_phantom(SHAPE))
    os.symlink(outside, root / "BDMAP_00000002")
    return _manifest(ws, "abdomenatlas"), "resolves outside the dataset root"


def _root_link_to_system_root(ws, root, outside):
    os.symlink("/", ws / "everything")
    return _manifest(ws, "abdomenatlas", root="everything"), "not a dataset folder"


HOSTILE = [_traversal_case_id, _case_id_with_separator, _csv_table_outside, _mask_file_link_out,
           _mask_folder_file_link_out, _case_folder_link_out, _root_link_to_system_root]


@pytest.mark.parametrize("make", HOSTILE, ids=[f.__name__.strip("_") for f in HOSTILE])
def test_build_refuses_paths_that_leave_the_dataset(tmp_path, make):
    ws, root, outside = _workspace(tmp_path)
    manifest, expected = make(ws, root, outside)
    before_ws, before_out, before_tmp = files_under(ws), files_under(outside), files_under(tmp_path.parent)
    r, peak_mib = run_cli_measured(["build-qa", manifest, "--out", ws / "out"], tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("volvqa: error: ") and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert files_under(ws) - before_ws <= {"out"} and not any((ws / "out").rglob("*"))
    assert files_under(outside) == before_out
    assert {p for p in files_under(tmp_path.parent) - before_tmp if not p.split("/")[-1].startswith(".peak")} \
        <= {f"{tmp_path.name}/ws/out"}
    assert peak_mib < PEAK_MIB
