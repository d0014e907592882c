"""The ONNX path runs where ``import torch`` fails: a subprocess whose meta-path hook refuses
torch and sam2 loads a previously exported bundle, tracks 3 frames and gets the same logits as
the ONNX backend in this (torch-capable) process; without a bundle it says how to get one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

N_FRAMES = 3

# refuses torch (and everything that needs it) before vosfx is imported
NO_TORCH = textwrap.dedent("""
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "sam2", "torchvision"):
                raise ImportError(f"test: {name} is not installed here")
            return None

    sys.meta_path.insert(0, _NoTorch())
""")

SCRIPT = NO_TORCH + textwrap.dedent("""
    import json

    import numpy as np

    from tests.test_onnx_no_torch import frames_and_mask, run_tracker
    from vosfx.config import ModelConfig
    from vosfx.engine import load_engine
    from vosfx.engine.onnx_backend import OnnxBackend
    from vosfx.errors import BackendError

    try:
        import torch  # noqa: F401
        raise SystemExit("torch imported although the hook refuses it")
    except ImportError:
        pass
    backend = OnnxBackend(sys.argv[1], device="cpu", threads=1)
    logits = run_tracker(backend)
    try:
        # backend auto, no bundle at this size, no torch: the loader must explain
        load_engine(ModelConfig(backend="auto", checkpoint=sys.argv[2], image_size=128))
        hint = None
    except BackendError as err:
        hint = str(err)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sam2"))
    np.save(sys.argv[3], logits)
    print(json.dumps({"hint": hint, "heavy": heavy}))
""")


def frames_and_mask():
    """3 synthetic 96x160 frames (a bright disc drifting right on noise) and its first mask."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:96, :160]
    frames, masks = [], []
    for t in range(N_FRAMES):
        disc = (yy - 48) ** 2 + (xx - 60 - 6 * t) ** 2 < 20**2
        img = rng.integers(0, 80, (96, 160, 3), dtype=np.uint8)
        img[disc] = (230, 200, 60)
        frames.append(img)
        masks.append(disc)
    return frames, masks[0]


def run_tracker(backend) -> np.ndarray:
    """(N_FRAMES, O, s, s) low-res logits of the Tracker over :func:`frames_and_mask`."""
    from vosfx.engine.loader import SamEngine
    from vosfx.pipeline import track_arrays
    from vosfx.types import Prompt

    frames, mask = frames_and_mask()
    out = [
        res.logits
        for _f, res in track_arrays(
            SamEngine(backend, "test", None), frames, [Prompt(0, 1, mask=mask)]
        )
    ]
    return np.stack(out)


def test_onnx_backend_runs_without_torch(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from tests.onnx_bundle import exported
    from vosfx.engine.onnx_backend import OnnxBackend

    ckpt, _, bundle = exported()
    want = run_tracker(OnnxBackend(bundle, device="cpu", threads=1))
    out = tmp_path / "logits.npy"
    env = dict(
        os.environ,
        VOSFX_HOME=str(tmp_path / "cache"),
        PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle), str(ckpt), str(out)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    got = np.load(out)
    assert got.shape == want.shape == (N_FRAMES, 1, 64, 64)
    assert float(np.abs(got - want).max()) <= 1e-5
    # tracked frames carry logits spanning far more than the tolerance (random weights: ~0.6)
    assert float(want[1:].max() - want[1:].min()) > 1e-2
    # no bundle at that size and no torch: the message says how to get one
    # (the command to paste: the checkpoint as given and the size, not the file's name alone)
    assert "pip install 'vosfx[torch]'" in report["hint"]
    assert f"`vosfx models export {ckpt} --image-size 128`" in report["hint"], report["hint"]
