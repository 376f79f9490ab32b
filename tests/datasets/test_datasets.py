"""Manifests and layout adapters on small synthetic trees in every layout."""
import json
import os

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from tests.helpers import REPO, ct_phantom, write_nii
from volvqa.cli import main
from volvqa.datasets import assign_split, load_cases, load_manifest
from volvqa.errors import VolvqaInputError
from volvqa.io import load_labelmap, load_volume

SHAPE = (16, 16, 8)


def _seg(values=(1, 2)):
    s = np.zeros(SHAPE, np.uint8)
    s[2:7, 2:7, 2:6] = values[0]
    s[9:14, 9:14, 2:6] = values[1]
    return s


def _manifest(tmp_path, root, layout, **extra):
    m = {"name": f"t-{layout}", "layout": layout, "root": os.path.relpath(root, tmp_path),
         "splits": {"train": 0.5, "val": 0.25, "test": 0.25}, "seed": 3, **extra}
    p = tmp_path / f"{layout}.yaml"
    p.write_text(yaml.safe_dump(m))
    return p


def _load_all(manifest):
    out = []
    for c in load_cases(manifest):
        v = load_volume(c.ct)
        lm = load_labelmap(c.masks, c.label_spec, reference=v) if c.masks else None
        out.append((c, v, lm))
    return out


def test_abdomenatlas(tmp_path):
    root = tmp_path / "AbdomenAtlas"
    for i in range(3):
        d = root / f"BDMAP_{i:08d}"
        (d / "segmentations").mkdir(parents=True)
        write_nii(d / "ct.nii.gz", ct_phantom(SHAPE, seed=i))
        write_nii(d / "segmentations" / "liver.nii.gz", (_seg() == 1).astype(np.uint8))
        write_nii(d / "segmentations" / "gall_bladder.nii.gz", (_seg() == 2).astype(np.uint8))
    got = _load_all(_manifest(tmp_path, root, "abdomenatlas"))
    assert [c.case_id for c, _, _ in got] == [f"BDMAP_{i:08d}" for i in range(3)]
    assert set(got[0][2].labels.values()) == {"liver", "gallbladder"}  # alias mapped


def test_msd_by_label_names(tmp_path):
    root = tmp_path / "Task03_Liver"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(2):
        write_nii(root / "imagesTr" / f"liver_{i}.nii.gz", ct_phantom(SHAPE, seed=i))
        write_nii(root / "labelsTr" / f"liver_{i}.nii.gz", _seg())
    (root / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "training": [{"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"}
                     for i in range(2)]}))
    m = _manifest(tmp_path, root, "msd", labels={"liver": "liver", "cancer": "liver_lesion"})
    got = _load_all(m)
    assert [c.case_id for c, _, _ in got] == ["liver_0", "liver_1"]
    assert set(got[0][2].labels.values()) == {"liver", "liver_lesion"}


def test_kits_default_labels_split_kidneys(tmp_path):
    root = tmp_path / "kits23"
    d = root / "case_00000"
    d.mkdir(parents=True)
    write_nii(d / "imaging.nii.gz", ct_phantom(SHAPE))
    seg = _seg((1, 1))
    seg[3, 3, 3] = 2
    write_nii(d / "segmentation.nii.gz", seg)
    (c, v, lm), = _load_all(_manifest(tmp_path, root, "kits"))
    assert set(lm.labels.values()) == {"kidney_left", "kidney_right", "kidney_tumor"}


def test_totalsegmentator_dataset(tmp_path):
    root = tmp_path / "Totalsegmentator_dataset"
    d = root / "s0011"
    (d / "segmentations").mkdir(parents=True)
    write_nii(d / "ct.nii.gz", ct_phantom(SHAPE))
    write_nii(d / "segmentations" / "spleen.nii.gz", (_seg() == 1).astype(np.uint8))
    write_nii(d / "segmentations" / "kidney_cyst_left.nii.gz", (_seg() == 2).astype(np.uint8))
    (c, v, lm), = _load_all(_manifest(tmp_path, root, "totalsegmentator"))
    assert set(lm.labels.values()) == {"spleen", "kidney_cyst"}


def test_csv_layout_and_check(tmp_path):
    root = tmp_path / "mydata"
    (root / "scans").mkdir(parents=True)
    write_nii(root / "scans" / "a.nii.gz", ct_phantom(SHAPE))
    write_nii(root / "scans" / "a_seg.nii.gz", _seg())
    (root / "spec.yaml").write_text(yaml.safe_dump({1: "liver", 2: "spleen"}))
    (root / "cases.csv").write_text("case_id,ct,masks,labels\n"
                                    "a,scans/a.nii.gz,scans/a_seg.nii.gz,spec.yaml\n"
                                    "b,scans/b.nii.gz,,\n")
    m = _manifest(tmp_path, root, "csv")
    cases = load_cases(m)
    assert [c.case_id for c in cases] == ["a", "b"]
    v = load_volume(cases[0].ct)
    lm = load_labelmap(cases[0].masks, cases[0].label_spec, reference=v)
    assert set(lm.labels.values()) == {"liver", "spleen"}
    res = CliRunner().invoke(main, ["datasets", "check", str(m)])
    assert res.exit_code == 2
    assert "cases: 2" in res.stdout and "missing files: 1" in res.stdout
    assert str(root / "scans" / "b.nii.gz") in res.stdout


def test_check_reports_unmapped_labels(tmp_path):
    root = tmp_path / "k"
    d = root / "case_00001"
    d.mkdir(parents=True)
    write_nii(d / "imaging.nii.gz", ct_phantom(SHAPE))
    write_nii(d / "segmentation.nii.gz", _seg((1, 9)))
    res = CliRunner().invoke(main, ["datasets", "check", str(_manifest(tmp_path, root, "kits"))])
    assert res.exit_code == 2
    assert "case_00001: 9" in res.stdout


@pytest.mark.parametrize("bad", ["../outside/a.nii.gz", "/etc/passwd", "scans/../../x.nii.gz", "link/a.nii.gz"])
def test_escaping_paths_are_refused(tmp_path, bad):
    root = tmp_path / "data"
    (root / "scans").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    write_nii(outside / "a.nii.gz", ct_phantom(SHAPE))
    os.symlink(outside, root / "link")
    (root / "cases.csv").write_text(f"case_id,ct,masks\nx,{bad},\n")
    m = _manifest(tmp_path, root, "csv")
    with pytest.raises(VolvqaInputError, match="absolute|leaves the dataset root|outside the dataset root"):
        load_cases(m)
    res = CliRunner().invoke(main, ["datasets", "check", str(m)])
    assert res.exit_code == 2 and str(m) in res.stderr


def test_msd_escaping_path_refused(tmp_path):
    root = tmp_path / "Task"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background"},
                                                   "training": [{"image": "../../etc/x.nii.gz"}]}))
    with pytest.raises(VolvqaInputError, match="leaves the dataset root"):
        load_cases(_manifest(tmp_path, root, "msd"))


def test_root_from_environment(tmp_path, monkeypatch):
    root = tmp_path / "elsewhere"
    d = root / "case_00000"
    d.mkdir(parents=True)
    write_nii(d / "imaging.nii.gz", ct_phantom(SHAPE))
    p = _manifest(tmp_path, tmp_path / "not_here", "kits", root_env="MY_KITS_ROOT")
    monkeypatch.setenv("MY_KITS_ROOT", str(root))
    assert [c.case_id for c in load_cases(p)] == ["case_00000"]


def test_bad_manifests(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("layout: nowhere\nroot: .\n")
    with pytest.raises(VolvqaInputError, match="unknown layout"):
        load_manifest(p)
    p.write_text("layout: kits\nroot: .\nsplits: {train: 0.5, test: 0.2}\n")
    with pytest.raises(VolvqaInputError, match="sum to 1"):
        load_manifest(p)
    p.write_text("layout: kits\nroot: .\nlabels: {1: not_an_organ}\n")
    with pytest.raises(VolvqaInputError, match="canonical"):
        load_manifest(p)


def test_splits_deterministic_and_by_ratio():
    ratios = {"train": 0.7, "val": 0.1, "test": 0.2}
    ids = [f"case_{i:05d}" for i in range(4000)]
    a = [assign_split(i, 7, ratios) for i in ids]
    assert a == [assign_split(i, 7, ratios) for i in ids]
    for name, r in ratios.items():
        assert abs(a.count(name) / len(ids) - r) < 0.03
    assert a != [assign_split(i, 8, ratios) for i in ids]


def test_shipped_real_ct_manifest(real_ct, monkeypatch):
    monkeypatch.setenv("VOLVQA_REAL_CT", str(real_ct))
    m = REPO / "data_manifests" / "real-ct-example.yaml"
    got = _load_all(m)
    assert [c.case_id for c, _, _ in got] == ["example_ct_dicom", "example_ct_sm"]
    for _c, v, lm in got:
        assert lm.array.shape == v.shape and "liver" in lm.labels.values()


@pytest.mark.parametrize("name", ["abdomenatlas", "msd-task03-liver", "kits23", "totalsegmentator",
                                  "real-ct-example"])
def test_shipped_manifests_parse(name):
    m = load_manifest(REPO / "data_manifests" / f"{name}.yaml")
    assert abs(sum(m.splits.values()) - 1) < 1e-9 and m.layout
