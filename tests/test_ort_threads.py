"""The ONNX backend's stage sessions let their idle pool threads sleep (engine/ort_runtime).

Each stage is its own ONNX Runtime session with its own intra-op pool. With ONNX Runtime's
default, a pool spins for tens of milliseconds after each run, taking a core from the next
stage. The check runs in a fresh interpreter, so no other thread of the pytest process adds
CPU time to what it measures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("onnxruntime")

_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from vosfx.engine.ort_runtime import session_options

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "a"], ["b"])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [512, 512])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [512, 512])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    a = np.ones((512, 512), np.float32)

    def burnt(opts):
        # CPU time the process spends in the 100 ms after each of 5 runs (the best of them)
        s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        s.run(None, {"a": a})
        out = []
        for _ in range(5):
            s.run(None, {"a": a})
            c = time.process_time()
            time.sleep(0.1)
            out.append(1e3 * (time.process_time() - c))
        return min(out)

    ours = session_options(ort, threads=2)
    spinning = ort.SessionOptions()  # ONNX Runtime's default, for contrast
    spinning.intra_op_num_threads = 2
    print(json.dumps({"ours": burnt(ours), "default": burnt(spinning)}))
    """
)


def test_stage_sessions_do_not_spin_after_a_run():
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    # ONNX Runtime's default pool spins ~40 ms of the 100 (2 cores, AMD Zen 3); ours sleeps.
    # The default's row shows the measurement can see spinning at all.
    assert got["default"] > 10.0, got
    assert got["ours"] < 5.0, got
