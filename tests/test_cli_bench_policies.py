"""`vosfx bench --memory a,b,c`: every memory policy of the table in one comparison table."""

from __future__ import annotations

import csv
import io

from click.testing import CliRunner

from tests.fakes import FakeEngine
from tests.test_cli_eval import _static_dataset
from vosfx.cli import cli
from vosfx.policies import MEMORY_POLICIES


def test_comma_separated_policies_give_one_table(tmp_path, monkeypatch):
    import vosfx.cli.eval as cli_eval

    _static_dataset(tmp_path / "ds", n=4)
    monkeypatch.setattr(cli_eval, "open_engine", lambda cfg: FakeEngine(model_id=cfg.name))
    names = ",".join(MEMORY_POLICIES)  # sam2, rcms, rcms+shots, samurai, dam4sam, ...
    res = CliRunner().invoke(
        cli,
        [
            "bench",
            str(tmp_path / "ds"),
            "--memory",
            names,
            "--metrics",
            "mosev2",
            "--format",
            "csv",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["config"].split("/")[1] for r in rows] == list(MEMORY_POLICIES)
    for col in ("J", "F", "J&F", "J&Ḟ", "J&Ḟ_d", "J&Ḟ_r", "fps", "peak_rss_mib"):
        assert col in rows[0], col
    bad = CliRunner().invoke(cli, ["bench", str(tmp_path / "ds"), "--memory", "sam2,sam3long"])
    assert bad.exit_code == 2 and "--memory" in bad.output and "sam3long" in bad.output, bad.output


def test_policies_share_one_engine(tmp_path, monkeypatch):
    """`--memory sam2,sam2long`: both policies run on the one engine of the configured runtime
    (SAM2Long's key scaling is in the ONNX graphs since bundle format 3)."""
    import vosfx.cli.eval as cli_eval

    _static_dataset(tmp_path / "ds", n=3)
    opened = []

    def open_engine(cfg):
        opened.append(cfg.backend)
        return FakeEngine(model_id=cfg.name)

    monkeypatch.setattr(cli_eval, "open_engine", open_engine)
    res = CliRunner().invoke(
        cli, ["bench", str(tmp_path / "ds"), "--memory", "sam2,sam2long", "--format", "csv"]
    )
    assert res.exit_code == 0, res.output
    assert opened == ["auto"]
    configs = [r["config"] for r in csv.DictReader(io.StringIO(res.stdout))]
    assert configs == ["sam2.1-tiny/sam2/auto", "sam2.1-tiny/sam2long/auto"]


def test_a_checkpoint_file_names_its_rows(tmp_path, monkeypatch):
    """With --checkpoint the file is the model: the rows carry its name, not --model's (a
    random-weight file scored as "sam2.1-tiny" would read as the published model's)."""
    import vosfx.cli.eval as cli_eval

    _static_dataset(tmp_path / "ds", n=3)
    (tmp_path / "my_tune.pt").write_bytes(b"the fake engine never reads it")
    monkeypatch.setattr(cli_eval, "open_engine", lambda cfg: FakeEngine(model_id=cfg.name))
    args = ["bench", str(tmp_path / "ds"), "--memory", "sam2", "--format", "csv"]
    res = CliRunner().invoke(cli, [*args, "--checkpoint", str(tmp_path / "my_tune.pt")])
    assert res.exit_code == 0, res.output
    (row,) = csv.DictReader(io.StringIO(res.stdout))
    assert row["config"].startswith("my_tune.pt/sam2/"), row["config"]
