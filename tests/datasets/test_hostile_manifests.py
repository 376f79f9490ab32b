"""Manifests and label maps built to exhaust: alias bombs, huge label ids, floods of unmapped labels."""
import numpy as np
import pytest

from tests.helpers import ct_phantom, files_under, run_cli_measured, write_nii
from volvqa.datasets.manifest import load_manifest
from volvqa.errors import VolvqaInputError
from volvqa.safe_yaml import MAX_NODES, load_yaml

SHAPE = (24, 20, 12)


def billion_laughs(levels: int = 9) -> str:
    """A ~200-byte YAML whose aliases expand to 9**levels scalars."""
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, cur in zip(names, names[1:], strict=False):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["seed", "splits", "layout", "key"])
def test_alias_bomb_manifest_is_refused_fast_in_one_line(tmp_path, where):
    bomb = billion_laughs()
    body = {"seed": "layout: kits\nroot: .\nseed: *l9\n",
            "splits": "layout: kits\nroot: .\nsplits: {train: *l9}\n",
            "layout": "layout: *l9\nroot: .\n",
            "key": "layout: kits\nroot: .\n? *l9\n: 1\n"}[where]
    m = tmp_path / "bomb.yaml"
    m.write_text("x-anchors:\n" + "".join("  " + ln + "\n" for ln in bomb.splitlines()) + body)
    before = files_under(tmp_path)
    for args in (["build-qa", m, "--out", tmp_path / "out"], ["datasets", "check", m]):
        r, peak_mib = run_cli_measured(args, tmp_path, timeout=60)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(m) in lines[0] and "alias bomb" in lines[0], r.stderr
        assert len(lines[0]) < 300
        assert peak_mib < 500
        assert files_under(tmp_path) == before


def test_yaml_with_ordinary_aliases_still_loads():
    assert load_yaml("base: &b {train: 0.5, val: 0.5}\nsplits: *b\nmore: {<<: *b, test: 0}\n", "x") == {
        "base": {"train": 0.5, "val": 0.5}, "splits": {"train": 0.5, "val": 0.5},
        "more": {"train": 0.5, "val": 0.5, "test": 0}}
    with pytest.raises(VolvqaInputError, match="refers to itself"):
        load_yaml("a: &a [1, *a]\n", "x")
    with pytest.raises(VolvqaInputError, match=f"more than {MAX_NODES}"):
        load_yaml(billion_laughs(6), "x")   # 9**6 = 531,441 scalars


def test_long_quoted_input_is_cut_in_messages(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("layout: kits\nroot: .\nseed: '" + "x" * 5000 + "'\n")
    with pytest.raises(VolvqaInputError) as e:
        load_manifest(m)
    assert len(str(e.value)) < 250 and "'seed' must be an integer" in str(e.value)


def _kits(tmp_path, seg: np.ndarray, dtype=None):
    root = tmp_path / "k"
    d = root / "case_00001"
    d.mkdir(parents=True)
    write_nii(d / "imaging.nii.gz", ct_phantom(SHAPE))
    write_nii(d / "segmentation.nii.gz", seg, dtype=dtype)
    m = tmp_path / "kits.yaml"
    m.write_text(f"layout: kits\nroot: {root}\nlabels: {{1: kidney}}\n")
    return m


@pytest.mark.parametrize("top, dtype, expected", [(2**31 - 1, np.int32, "larger than 65535"),
                                                  (2**32 + 5, np.float64, "larger than 65535")])
def test_check_does_not_allocate_by_the_largest_label_id(tmp_path, top, dtype, expected):
    seg = np.zeros(SHAPE)
    seg[2:6, 2:6, 2:6] = 1
    seg[10, 10, 5] = top
    m = _kits(tmp_path, seg, dtype)
    r, peak_mib = run_cli_measured(["datasets", "check", m], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "unreadable files: 1" in r.stdout and expected in r.stdout
    assert peak_mib < 500   # counting by id would ask for 16 GiB (2**31 int64 counts)
    # A batch build isolates the case, names it and goes on (with nothing left to build).
    r, peak_mib = run_cli_measured(["build-qa", m, "--out", tmp_path / "out"], tmp_path)
    failed = [ln for ln in r.stderr.splitlines() if "failed" in ln]
    assert len(failed) == 1 and "case_00001" in failed[0] and expected in failed[0], r.stderr
    assert "Traceback" not in r.stderr and peak_mib < 500


def test_float_label_beyond_uint32_is_refused_not_wrapped():
    from volvqa.io.validate import check_label_values
    a = np.zeros((2, 2, 2))
    a[0, 0, 0] = 2**32 + 5
    with pytest.raises(VolvqaInputError, match="label id 4294967301 is larger than 65535"):
        check_label_values("seg.nii.gz", a)


def test_unmapped_labels_are_listed_with_a_cap(tmp_path):
    seg = np.arange(np.prod(SHAPE)).reshape(SHAPE) % 600
    m = _kits(tmp_path, seg, np.uint16)
    r, _ = run_cli_measured(["datasets", "check", m], tmp_path)
    assert r.returncode == 2
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("case_00001:"))
    assert line.count(",") == 19 and line.endswith("(+578 more)"), line


@pytest.mark.parametrize("meta, expected", [
    ({"labels": {"0": "background"}, "training": [{"image": 5}]}, "needs an 'image' path"),
    ({"labels": {"0": "background"}, "training": [{"image": "./imagesTr/a.nii.gz", "label": ["x"]}]},
     "'label' must be a path"),
    ({"labels": {"one": "liver"}, "training": []}, "keys must be integer ids"),
    ({"labels": ["liver"], "training": []}, "'labels' must map"),
    ({"labels": {}, "training": {"image": "a"}}, "'training' must be a list"),
    ([1, 2, 3], "must be a JSON object"),
])
def test_malformed_msd_dataset_json_is_bad_input(tmp_path, meta, expected):
    import json
    root = tmp_path / "Task03_Liver"
    (root / "imagesTr").mkdir(parents=True)
    write_nii(root / "imagesTr" / "a.nii.gz", ct_phantom(SHAPE))
    (root / "dataset.json").write_text(json.dumps(meta))
    m = tmp_path / "msd.yaml"
    m.write_text(f"layout: msd\nroot: {root}\n")
    r, _ = run_cli_measured(["build-qa", m, "--out", tmp_path / "out"], tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "dataset.json" in lines[0] and expected in lines[0], r.stderr
    assert "internal error" not in r.stderr and not any((tmp_path / "out").rglob("*"))


def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    m = tmp_path / "m.yaml"
    m.write_text('layout: csv\nroot: d\ncsv: "d/cases\\nINJECTED: fake.csv"\n')
    r, _ = run_cli_measured(["build-qa", m, "--out", tmp_path / "out"], tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "cases\\nINJECTED" in lines[0], r.stderr
