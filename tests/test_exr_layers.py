"""exr-layers: one EXR per frame with a named half channel per object, a choice of
compression, and optionally the source's linear RGB in the same file; read back with the
OpenEXR library."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from vosfx.config import OutputConfig
from vosfx.io.writers import open_writer
from vosfx.io.writers.images import bt709_to_linear
from vosfx.types import Frame, Matte, VideoInfo

OpenEXR = pytest.importorskip("OpenEXR")
H, W = 24, 40
HALF = 2.0**-11  # half float: 11 significant bits, values <= 1


def _clip(n: int = 3):
    y, x = np.mgrid[:H, :W]
    out = []
    for i in range(n):
        rgb = np.stack([x * 6 % 256, y * 9 % 256, (x + y + 30 * i) % 256], -1).astype(np.uint8)
        a1 = np.clip((x - 5 - 2 * i) / 20.0, 0, 1).astype(np.float32)
        a2 = ((y > 12) * 0.75).astype(np.float32)
        out.append(
            (Frame(i + 10, rgb, i, Fraction(1, 25)), Matte(i + 10, (1, 3), np.stack([a1, a2])))
        )
    return out


def _render(path, config: OutputConfig, clip):
    info = VideoInfo(
        path="synthetic",
        width=W,
        height=H,
        num_frames=len(clip),
        fps=Fraction(25),
        time_base=Fraction(1, 25),
    )
    with open_writer("exr-layers", path, info, obj_ids=(1, 3), config=config) as writer:
        for frame, matte in clip:
            writer.write(frame, matte)
    return sorted(path.iterdir())


def _read(path) -> tuple[str, dict[str, np.ndarray]]:
    with OpenEXR.File(str(path)) as f:
        comp = str(f.header()["compression"])
        chans = {}
        for name, ch in f.channels().items():
            px = ch.pixels
            if px.ndim == 3:  # RGB / RGBA grouped by the reader
                for i, c in enumerate(name if len(name) == px.shape[2] else "RGBA"[: px.shape[2]]):
                    chans[c] = px[..., i]
            else:
                chans[name] = px
    return comp, chans


@pytest.mark.parametrize("compression", ["zip", "piz", "dwaa", "none"])
def test_one_named_channel_per_object(tmp_path, compression):
    clip = _clip()
    files = _render(tmp_path / "shot_layers", OutputConfig(exr_compression=compression), clip)
    assert [p.name for p in files] == [f"shot_layers.{i:05d}.exr" for i in (10, 11, 12)]
    for path, (_, matte) in zip(files, clip):
        comp, chans = _read(path)
        assert comp.endswith(
            f"{compression.upper() if compression != 'none' else 'NO'}_COMPRESSION"
        ), comp
        assert sorted(chans) == ["obj1.A", "obj3.A"]
        for k, obj in enumerate((1, 3)):
            got = chans[f"obj{obj}.A"]
            assert got.dtype == np.float16 and got.shape == (H, W)
            # alpha channels stay lossless under DWAA (it is lossy only for colour channels)
            np.testing.assert_allclose(got.astype(np.float32), matte.alpha[k], atol=HALF)


def test_source_rgb_in_the_same_file(tmp_path):
    clip = _clip(1)
    (path,) = _render(tmp_path / "rgb", OutputConfig(exr_rgb=True, exr_compression="piz"), clip)
    _, chans = _read(path)
    assert {"R", "G", "B", "A", "obj1.A", "obj3.A"} <= set(chans)
    frame, matte = clip[0]
    linear = bt709_to_linear(frame.image.astype(np.float32) / 255)
    for i, c in enumerate("RGB"):  # premultiplied by the merged alpha: OpenEXR's RGBA
        np.testing.assert_allclose(
            chans[c].astype(np.float32), linear[..., i] * matte.merged, rtol=2e-3, atol=1e-4
        )
    np.testing.assert_allclose(chans["A"].astype(np.float32), matte.merged, atol=HALF)


def test_bt709_linearisation_known_values():
    v = np.array([0.0, 0.081 * 0.999, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(
        bt709_to_linear(v),
        [0.0, 0.081 * 0.999 / 4.5, ((0.5 + 0.099) / 1.099) ** (1 / 0.45), 1.0],
        rtol=1e-6,
    )


def test_cli_flags_reach_the_writer(tmp_path, monkeypatch):
    from fakes import FakeEngine
    from media import make_clip

    import vosfx.engine
    from vosfx.cli import cli

    monkeypatch.setattr(vosfx.engine, "load_engine", lambda model, **kw: FakeEngine())
    monkeypatch.setenv("VOSFX_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VOSFX_CONFIG_DIR", str(tmp_path / "config"))
    make_clip(tmp_path / "clip.mp4", n=2, width=W, height=H, faststart=True)
    r = CliRunner().invoke(
        cli,
        [
            "matte",
            str(tmp_path / "clip.mp4"),
            "--point",
            "10,10",
            "-f",
            "exr-layers",
            "--exr-compression",
            "dwaa",
            "--exr-rgb",
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert r.exit_code == 0, (r.output, r.exception)
    files = sorted((tmp_path / "out").glob("*.exr"))
    assert len(files) == 2
    comp, chans = _read(files[0])
    assert comp.endswith("DWAA_COMPRESSION") and {"R", "G", "B", "A", "obj1.A"} <= set(chans)
