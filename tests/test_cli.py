"""The CLI: the README's main job (classic without weights), --help everywhere, clear errors."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from toonbooth.cli.main import app

runner = CliRunner()


def invoke(args, tmp_path, **kw):
    env = {"TOONBOOTH_HOME": str(tmp_path / "home")}
    return runner.invoke(app, args, env=env, **kw)


@pytest.mark.parametrize(
    "cmd", [[], ["avatar"], ["run"], ["models"], ["models", "list"], ["models", "add"], ["models", "pull"],
            ["models", "make-tiny"], ["version"]]
)
def test_help_on_every_command(cmd, tmp_path):
    res = invoke([*cmd, "--help"], tmp_path)
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_avatar_classic_without_weights(tmp_path, sample_photo_path):
    out = tmp_path / "me.png"
    res = invoke(["avatar", str(sample_photo_path), "--out", str(out), "--quiet"], tmp_path)
    assert res.exit_code == 0, res.output
    assert "backend: classic" in res.output
    assert "toonbooth models pull memoji" in res.output
    assert f"wrote {out}" in res.output
    img = Image.open(out)
    assert img.size[0] > 0 and img.format == "PNG"


def test_avatar_bad_photo_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    res = invoke(["avatar", str(bad), "--quiet"], tmp_path)
    assert res.exit_code == 2
    assert "`photo`" in res.output


def test_avatar_bad_option_names_the_field(tmp_path, sample_photo_path):
    res = invoke(["avatar", str(sample_photo_path), "--strength", "1.7", "--quiet"], tmp_path)
    assert res.exit_code == 2
    assert "strength" in res.output and "1.7" in res.output


def test_avatar_neural_without_weights_fails_clearly(tmp_path, sample_photo_path):
    res = invoke(["avatar", str(sample_photo_path), "--backend", "neural", "--quiet"], tmp_path)
    assert res.exit_code == 2
    assert "models pull memoji" in res.output
