import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from tests.helpers import REAL_CT


@pytest.fixture
def real_ct():
    if not (REAL_CT / "example_ct_sm.nii.gz").is_file():
        pytest.skip(f"shared real CT data not found at {REAL_CT}")
    return REAL_CT


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@dataclass(frozen=True)
class MiniBuild:
    """The session's one small benchmark (read-only: copy it to change it)."""

    root: Path
    manifest: Path
    out: Path
    stdout: str
    stderr: str

    def scratch(self, tmp: Path) -> Path:
        """A folder of one's own whose ``out`` and ``data`` are the shared build's (links), for outputs."""
        for name in ("out", "data"):
            if not (tmp / name).exists():
                (tmp / name).symlink_to(self.root / name, target_is_directory=True)
        return tmp


MINI_MANIFEST = ("name: mini\nlayout: synthetic\nroot: {root}\ngenerate: {{n: 8, seed: 3}}\n"
                 "splits: {{train: 0.5, val: 0.2, test: 0.3}}\nseed: 1\nlicense: \"CC0-1.0 (synthetic)\"\n")


@pytest.fixture(scope="session")
def mini_build(tmp_path_factory, worker_id) -> MiniBuild:
    """One benchmark of 8 synthetic phantoms built once per test session through the real CLI
    (``--workers 2 --include-flagged``) and shared by every xdist worker (a file lock decides who
    builds). Tests that need other build options build their own."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base
    root = shared / "mini_build"
    with FileLock(str(shared / "mini_build.lock")):
        log = root / "build_log.json"
        if not log.is_file():
            root.mkdir(exist_ok=True)
            m = root / "mini.yaml"
            m.write_text(MINI_MANIFEST.format(root=root / "data"))
            r = subprocess.run([sys.executable, "-m", "volvqa.cli", "build-qa", str(m), "--out", str(root / "out"),
                                "--workers", "2", "--include-flagged"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL)
            assert r.returncode == 0, r.stderr
            log.write_text(json.dumps({"stdout": r.stdout, "stderr": r.stderr}))
        rec = json.loads(log.read_text())
    return MiniBuild(root, root / "mini.yaml", root / "out", rec["stdout"], rec["stderr"])


#: Fixtures that run a build: a test using one is part of `make test`, not of `make test-fast`.
BUILD_FIXTURES = {"mini_build", "bench", "mini", "built", "with_media"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BUILD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
