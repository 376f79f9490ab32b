"""Temporary files are unique, live in the output's folder, and are gone after a failure."""
import threading

import numpy as np
import pytest

from volvqa.io.atomic import link_or_copy_atomic


def test_link_or_copy_uses_a_name_of_its_own_and_cleans_up(tmp_path, monkeypatch):
    src = [tmp_path / f"src{i}.bin" for i in range(8)]
    for i, p in enumerate(src):
        p.write_bytes(bytes([i]) * 1000)
    dest = tmp_path / "out" / "ct.nii.gz"
    dest.parent.mkdir()
    # Eight writers of one destination at once: each rename is whole, none trips over another's temp.
    errors = []

    def put(p):
        try:
            for _ in range(20):
                link_or_copy_atomic(p, dest)
        except Exception as e:  # noqa: BLE001 - the test collects them
            errors.append(e)
    threads = [threading.Thread(target=put, args=(p,)) for p in src]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert dest.read_bytes() in {p.read_bytes() for p in src}
    assert [p.name for p in dest.parent.iterdir()] == ["ct.nii.gz"]
    # A failing copy (another file system, then the copy fails) leaves nothing behind.
    import os
    import shutil
    monkeypatch.setattr(os, "link", lambda a, b: (_ for _ in ()).throw(OSError("cross-device")))

    def broken_copy(a, b):
        open(b, "wb").write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        link_or_copy_atomic(src[0], tmp_path / "out" / "other.nii.gz")
    assert [p.name for p in dest.parent.iterdir()] == ["ct.nii.gz"]


def test_video_failure_leaves_no_temporary_file(tmp_path, monkeypatch):
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v2 as imageio

    from volvqa.render.inputs import write_mp4
    frames = [np.full((16, 16), i * 10, np.uint8) for i in range(4)]
    out = tmp_path / "videos" / "a.mp4"
    out.parent.mkdir()
    real = imageio.get_writer

    class Failing:
        def __init__(self, *a, **k):
            self.w = real(*a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.w.close()

        def append_data(self, a):
            self.w.append_data(a)   # ffmpeg has started writing the file
            raise RuntimeError("encoder died")
    monkeypatch.setattr(imageio, "get_writer", Failing)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_mp4(out, frames)
    assert list(out.parent.iterdir()) == []
    monkeypatch.setattr(imageio, "get_writer", real)
    write_mp4(out, frames)
    assert [p.name for p in out.parent.iterdir()] == ["a.mp4"] and out.stat().st_size > 0
