"""C sources compiled on first use (vosfx/native.py): built once into the cache under a name
hashed from the source, compiler and flags, loaded from there after; a new build removes the
older ones; no compiler or a broken source says why and leaves nothing half-written."""

from __future__ import annotations

import os

import pytest

from vosfx import native

SOURCE = "int vosfx_answer(int x) { return 2 * x + VALUE; }\n"


@pytest.fixture
def compiler():
    if native.compiler() is None:
        pytest.skip("no C compiler here")


def test_a_source_is_built_once_into_the_folder(tmp_path, compiler):
    source = tmp_path / "answer.c"
    source.write_text(SOURCE)
    folder = tmp_path / "kernels"
    assert native.build(source, folder, ("-DVALUE=1",)).vosfx_answer(20) == 41
    (built,) = folder.glob("answer-*.so")
    stamp = built.stat().st_mtime_ns
    native.build(source, folder, ("-DVALUE=1",))
    assert built.stat().st_mtime_ns == stamp  # loaded, not built again
    assert [p.name for p in folder.iterdir()] == [built.name]  # no temporary file left


def test_a_build_under_another_name_stays_beside_the_first(tmp_path, compiler):
    """Two builds of one source with other flags, each under its own name (the int16 attention
    kernel and its AMX-emulating build for tests), are both kept and each loads its own."""
    source = tmp_path / "answer.c"
    source.write_text(SOURCE)
    folder = tmp_path / "kernels"
    assert native.build(source, folder, ("-DVALUE=1",)).vosfx_answer(20) == 41
    twin = native.build(source, folder, ("-DVALUE=2",), name="answer_twin")
    assert twin.vosfx_answer(20) == 42
    assert native.build(source, folder, ("-DVALUE=1",)).vosfx_answer(20) == 41
    assert len(list(folder.glob("answer-*.so"))) == len(list(folder.glob("answer_twin-*.so"))) == 1


def test_new_flags_or_source_build_anew_and_remove_the_older_builds(tmp_path, compiler):
    source = tmp_path / "answer.c"
    source.write_text(SOURCE)
    folder = tmp_path / "kernels"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a build")
    (folder / "other-0123456789abcdef.so").write_bytes(b"another source's build")
    native.build(source, folder, ("-DVALUE=1",))
    (first,) = folder.glob("answer-*.so")
    assert native.build(source, folder, ("-DVALUE=2",)).vosfx_answer(20) == 42
    (second,) = folder.glob("answer-*.so")
    assert second != first
    source.write_text(SOURCE.replace("2 * x", "3 * x"))
    assert native.build(source, folder, ("-DVALUE=2",)).vosfx_answer(20) == 62
    (third,) = folder.glob("answer-*.so")
    assert third not in (first, second)
    assert (folder / "notes.txt").exists() and (folder / "other-0123456789abcdef.so").exists()


def test_without_a_compiler_or_with_a_broken_source_it_says_why(tmp_path, monkeypatch):
    source = tmp_path / "broken.c"
    source.write_text("int vosfx_answer(void) { return }\n")
    folder = tmp_path / "kernels"
    with monkeypatch.context() as m:
        m.setenv("CC", "no-such-compiler")
        m.setenv("PATH", str(tmp_path / "empty"))
        with pytest.raises(
            native.Unavailable, match=r"^no C compiler found \(\$CC, cc, gcc, clang\)$"
        ):
            native.build(source, folder)
    cc = native.compiler()
    if cc is None:
        pytest.skip("no C compiler here")
    with pytest.raises(native.Unavailable) as caught:
        native.build(source, folder)
    assert str(caught.value).startswith(f"{cc} could not compile broken.c: ")
    assert not list(folder.glob("*"))  # nothing half-written left


def test_an_unwritable_folder_says_so(tmp_path, compiler):
    source = tmp_path / "answer.c"
    source.write_text(SOURCE)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder would be")
    with pytest.raises(native.Unavailable, match="cannot write to"):
        native.build(source, blocker / "kernels", ("-DVALUE=1",))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_library_others_can_write_is_not_loaded(tmp_path, compiler):
    # a shared cache folder (or a build in it) writable by other users could hold their code
    source = tmp_path / "answer.c"
    source.write_text(SOURCE)
    folder = tmp_path / "kernels"
    native.build(source, folder, ("-DVALUE=1",))
    (built,) = folder.glob("answer-*.so")
    assert built.stat().st_mode & 0o777 == 0o755 and folder.stat().st_mode & 0o777 == 0o700
    built.chmod(0o777)
    with pytest.raises(
        native.Unavailable, match=r"answer-.*\.so is writable by other users: a library"
    ):
        native.build(source, folder, ("-DVALUE=1",))
    built.chmod(0o755)
    folder.chmod(0o777)
    with pytest.raises(native.Unavailable, match="kernels is writable by other users"):
        native.build(source, folder, ("-DVALUE=1",))
    folder.chmod(0o755)
    assert native.build(source, folder, ("-DVALUE=1",)).vosfx_answer(1) == 3
