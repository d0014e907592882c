"""The restricted checkpoint reader: torch.save files read without torch and without running
pickled code; hash checked first; names, shapes and dtypes checked before any weight is read."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
from conftest import shared_data

from vosfx.errors import ModelError
from vosfx.models.torchfile import CheckpointFile, check_layout, read_checkpoint, sha256_of


def _torch():
    return pytest.importorskip("torch")


def test_seeded_tiny_checkpoint_equals_torch_load(tmp_path):
    torch = _torch()
    from ckpt import make_checkpoint

    path, sha = make_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    ours = read_checkpoint(path, sha256=sha)
    ref = torch.load(path, map_location="cpu", weights_only=True)["model"]
    assert sorted(ours) == sorted(ref) and len(ours) == 471
    for name, tensor in ref.items():
        assert ours[name].dtype == np.float32 and ours[name].shape == tuple(tensor.shape)
        assert np.array_equal(ours[name], tensor.numpy()), name


def test_views_dtypes_and_offsets(tmp_path):
    torch = _torch()
    x = torch.randn(3, 4)
    tensors = {
        "t": x.t(),
        "bf16": x.bfloat16(),
        "half": x.half(),
        "tail": x[1:],
        "long": torch.arange(5),
        "bool": x > 0,
        "empty": torch.zeros(0, 3),
    }
    torch.save(tensors, tmp_path / "misc.pt")
    got = read_checkpoint(tmp_path / "misc.pt")
    for name, tensor in tensors.items():
        want = tensor.float().numpy() if name == "bf16" else tensor.numpy()
        assert got[name].shape == want.shape and np.array_equal(got[name], want), name
    with CheckpointFile(tmp_path / "misc.pt") as ckpt:
        assert ckpt.tensors["bf16"].dtype == "bfloat16" and ckpt.tensors["t"].strides == (1, 4)


def _zip_with_pickle(path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_code_in_the_pickle_never_runs(tmp_path):
    target = tmp_path / "pwned"
    _zip_with_pickle(tmp_path / "evil.pt", pickle.dumps({"model": {"w": _Evil(target)}}))
    with pytest.raises(ModelError, match=r"refused global (posix|os|nt)\.system"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not target.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({"model": {"w": 1.5}}),  # not a tensor
        pickle.dumps([1, 2]),
        b"\x80\x02garbage",
        pickle.dumps(eval),  # builtins.eval: a global
    ],
)
def test_not_a_state_dict_is_refused(tmp_path, payload):
    _zip_with_pickle(tmp_path / "bad.pt", payload)
    with pytest.raises(ModelError):
        read_checkpoint(tmp_path / "bad.pt")


def test_hash_is_checked_before_parsing(tmp_path):
    _zip_with_pickle(tmp_path / "bad.pt", b"not even a pickle")
    with pytest.raises(
        ModelError, match="sha256 mismatch: expected 0{64}, found " + sha256_of(tmp_path / "bad.pt")
    ):
        read_checkpoint(tmp_path / "bad.pt", sha256="0" * 64)


def test_truncated_and_non_zip_files(tmp_path):
    torch = _torch()
    torch.save({"model": {"w": torch.randn(64, 64)}}, tmp_path / "ok.pt")
    raw = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.pt").write_text("hello")
    for name in ("cut.pt", "text.pt"):
        with pytest.raises(ModelError) as err:
            read_checkpoint(tmp_path / name)
        assert str(err.value).startswith(
            f"{tmp_path / name}: expected a torch checkpoint (the zip archive torch.save writes), "
            "found a file that is not one ("
        ), err.value
    # a storage shorter than its header says: refused, not read past
    buf = io.BytesIO()
    with zipfile.ZipFile(tmp_path / "ok.pt") as src, zipfile.ZipFile(buf, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            dst.writestr(item, data[:100] if item.endswith("/data/0") else data)
    (tmp_path / "short.pt").write_bytes(buf.getvalue())
    with pytest.raises(ModelError, match="storage holds 100 bytes, expected 16384"):
        read_checkpoint(tmp_path / "short.pt")


def test_layout_check_names_missing_unexpected_shape_and_dtype(tmp_path):
    torch = _torch()
    torch.save(
        {
            "model": {
                "a": torch.zeros(2, 3),
                "b": torch.zeros(4, dtype=torch.float16),
                "extra": torch.zeros(1),
            }
        },
        tmp_path / "f.pt",
    )
    with CheckpointFile(tmp_path / "f.pt") as ckpt:
        with pytest.raises(
            ModelError,
            match=r"missing keys \(1\): c.*unexpected keys \(1\): "
            r"extra.*a: expected \(3, 2\), found \(2, 3\)",
        ):
            check_layout(
                ckpt.tensors,
                {"a": ((3, 2), "float32"), "b": ((4,), "float32"), "c": ((1,), "float32")},
                source="f.pt",
            )
        with pytest.raises(
            ModelError, match="dtype mismatches.*b: expected float32, found float16"
        ):
            check_layout(
                ckpt.tensors,
                {"a": ((2, 3), "float32"), "b": ((4,), "float32"), "extra": ((1,), "float32")},
                source="f.pt",
            )


def test_official_tiny_layout_is_what_the_shipped_template_expects():
    """The template's layout (from sam2's config) equals the tensor list read off the official
    sam2.1_hiera_tiny.pt's pickle header (names, shapes, FloatStorage)."""
    from vosfx.engine.template import TEMPLATES, layout

    manifest = json.loads(
        shared_data("models", "sam2.1_hiera_tiny.pt.state_dict_manifest.json").read_text()
    )["state_dict"]
    official = {
        k: (tuple(v["shape"]), {"FloatStorage": "float32"}[v["dtype"]]) for k, v in manifest.items()
    }
    assert layout(TEMPLATES / "sam2.1_hiera_t-1024") == official


def _u(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _tensor_with_build(target: bytes, state: bytes) -> bytes:
    """{"model": {"w": float32 tensor (4,)}} whose pickle then BUILDs ``state`` (a dict's
    pickle opcodes) into the tensor (``target`` b"t") or its storage type (b"s")."""
    storage_type = b"ctorch\nFloatStorage\n"
    if target == b"s":
        storage_type += b"}" + state + b"b"
    p = b"\x80\x02}" + _u("model") + b"}" + _u("w") + b"ctorch._utils\n_rebuild_tensor_v2\n("
    p += b"(" + _u("storage") + storage_type + _u("0") + _u("cpu") + b"K\x04tQ"
    p += b"K\x00(K\x04t(K\x01ttR"
    if target == b"t":
        p += b"}" + state + b"b"
    return p + b"ss."


@pytest.mark.parametrize(
    "target, state",
    [
        # strides rewritten after the tensor header was checked: reads memory before the storage
        (b"t", _u("strides") + b"(J" + (-1000).to_bytes(4, "little", signed=True) + b"ts"),
        (b"t", _u("offset") + b"J" + (-64).to_bytes(4, "little", signed=True) + b"s"),
        # the module's own FloatStorage singleton renamed: every later file would misread
        (b"s", _u("name") + _u("BoolStorage") + b"s"),
    ],
)
def test_pickle_build_cannot_rewrite_a_checked_tensor(tmp_path, target, state):
    from vosfx.models import torchfile

    path = tmp_path / "build.pt"
    _zip_with_pickle(path, _tensor_with_build(target, state))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("archive/data/0", np.arange(4, dtype="<f4").tobytes())
    try:
        with pytest.raises(ModelError, match="not a weights-only checkpoint"):
            read_checkpoint(path, expected={"w": ((4,), "float32")})
    finally:
        assert torchfile._ALLOWED[("torch", "FloatStorage")].name == "FloatStorage"


def _recompressed(src, dst, *, deflate_data=False, deflate_pickle=False):
    """The torch file ``src`` rewritten with some entries deflated (torch stores them all)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            deflate = (deflate_data and "/data/" in info.filename) or (
                deflate_pickle and info.filename.endswith("data.pkl")
            )
            zout.writestr(info, data, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)


def test_a_compressed_storage_is_refused_before_it_is_inflated(tmp_path):
    torch = _torch()
    src = tmp_path / "ok.pt"
    torch.save({"model": {"w": torch.zeros(1 << 16)}}, src)
    np.testing.assert_array_equal(read_checkpoint(src)["w"], np.zeros(1 << 16, np.float32))
    bomb = tmp_path / "bomb.pt"  # 256 KiB of zeros deflate to a few hundred bytes
    _recompressed(src, bomb, deflate_data=True)
    assert bomb.stat().st_size < 8 << 10
    with pytest.raises(ModelError, match="compressed, which torch never writes"):
        read_checkpoint(bomb)


def test_an_oversized_pickle_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    torch = _torch()
    import vosfx.models.torchfile as tf

    src = tmp_path / "ok.pt"
    torch.save({"model": {f"w{i}": torch.zeros(1) for i in range(200)}}, src)
    packed = tmp_path / "packed.pt"
    _recompressed(src, packed, deflate_pickle=True)
    assert len(read_checkpoint(packed)) == 200  # a deflated data.pkl itself is fine
    monkeypatch.setattr(tf, "_MAX_PICKLE_BYTES", 1024)
    with pytest.raises(ModelError, match="data.pkl is over"):
        read_checkpoint(packed)
