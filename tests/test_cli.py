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
    "cmd",
    [
        [], ["avatar"], ["anime"], ["talk"], ["run"], ["version"], ["serve"],
        ["upscale"],
        ["models"], ["models", "list"], ["models", "add"], ["models", "pull"], ["models", "make-tiny"],
        ["users"], ["users", "add"], ["users", "token"], ["users", "list"], ["users", "revoke"],
        ["train"], ["train", "lora"], ["train", "dreambooth"], ["train", "ti"], ["train", "list"],
        ["train", "delete"], ["train", "presets"],
        ["repose"], ["pose"], ["pose", "detect"], ["models", "convert"],
        ["makeup"], ["models", "make-tiny-makeup"],
        ["toon"], ["train", "toon"], ["models", "make-tiny-toon"],
        ["background"],
    ],
)  # fmt: skip
def test_help_on_every_command(cmd, tmp_path):
    res = invoke([*cmd, "--help"], tmp_path, terminal_width=80)
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output
    assert "…" not in res.output, "option names and values must never be cut at 80 columns"
    assert all(len(line) <= 80 for line in res.output.splitlines()), "help wraps to the terminal"


def _command_paths(group, prefix=()):
    """Every command path of the typer app (groups walked recursively; typer may vendor its own click)."""
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(getattr(cmd, "commands", None), dict):
            yield from _command_paths(cmd, (*prefix, name))


def test_help_list_covers_every_command():
    import typer.main

    listed = {tuple(c) for mark in test_help_on_every_command.pytestmark for c in mark.args[1]}
    existing = set(_command_paths(typer.main.get_command(app)))
    assert ("train", "lora") in existing and ("users", "revoke") in existing  # subcommands are walked
    assert existing - listed == set(), "add these commands to test_help_on_every_command"


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


def test_run_job_file_errors_name_the_field(tmp_path):
    res = invoke(["run", str(tmp_path / "nope.json"), "--quiet"], tmp_path)
    assert res.exit_code == 2 and "`job`" in res.output and "nope.json" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "avatar",')
    res = invoke(["run", str(bad), "--quiet"], tmp_path)
    assert res.exit_code == 2 and "`job`" in res.output and "not valid JSON" in res.output
    missing = tmp_path / "missing.json"
    missing.write_text('{"kind": "avatar", "image": "no/such/photo.png"}')
    res = invoke(["run", str(missing), "--quiet"], tmp_path)
    assert res.exit_code == 2 and "`image`: no such file: no/such/photo.png" in res.output


def test_run_reads_local_paths_in_image_lists(tmp_path, sample_photo_path):
    """`images` (a list field) takes local paths too: the spec parses and the job gets as far as the base."""
    import json

    job = tmp_path / "train.json"
    spec = {
        "kind": "train_lora",
        "style_name": "qa",
        "base": "no-such-base",
        "images": [str(sample_photo_path)],
    }
    job.write_text(json.dumps(spec))
    res = invoke(["run", str(job), "--quiet"], tmp_path)
    assert res.exit_code == 2
    assert "no-such-base" in res.output and "images" not in res.output


def test_models_list_shows_refused_files(tmp_path):
    models = tmp_path / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    (models / "Stable-diffusion" / "old.ckpt").write_bytes(b"not a pickle, refused by name")
    res = invoke(["--models-dir", str(models), "models", "list"], tmp_path)
    assert res.exit_code == 0, res.output
    assert "refused" in res.output and "old.ckpt" in res.output and ".safetensors" in res.output
    res = invoke(["models", "list", "--kind", "nope"], tmp_path)
    assert res.exit_code == 2 and "`kind`" in res.output and "'nope'" in res.output


def test_bad_settings_and_device_are_clear_errors(tmp_path):
    env = {"TOONBOOTH_HOME": str(tmp_path / "home"), "TOONBOOTH_MAX_SIDE": "abc"}
    res = runner.invoke(app, ["version"], env=env)
    assert res.exit_code == 2 and "`TOONBOOTH_MAX_SIDE`" in res.output and "'abc'" in res.output
    res = invoke(["--device", "gpu0", "version"], tmp_path)
    assert res.exit_code == 2 and "`device`" in res.output and "'gpu0'" in res.output
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    res = invoke(["models", "make-tiny", str(not_a_dir)], tmp_path)
    assert res.exit_code == 2 and "`directory`" in res.output


@pytest.mark.parametrize("kind", ["lora", "dreambooth", "ti"])
def test_train_commands_build_a_valid_spec(kind, tmp_path, sample_photo_path):
    """Each `train` command's options make a spec that parses: the run gets as far as looking up the base."""
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.png").write_bytes(sample_photo_path.read_bytes())
    args = ["train", kind, "--images", str(images), "--base", "no-such-base", "--name", "qa", "--quiet"]
    res = invoke(args + (["--no-prior"] if kind == "dreambooth" else []), tmp_path)
    assert res.exit_code == 2
    assert "no-such-base" in res.output, res.output


def test_cuda_device_without_cuda_is_a_clear_error():
    import torch

    from toonbooth.core.errors import BackendUnavailableError
    from toonbooth.core.settings import Settings
    from toonbooth.models.loader import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendUnavailableError, match="`device`: 'cuda'.*no CUDA"):
        resolve_device(Settings(device="cuda"))
    assert resolve_device(Settings(device="cpu")).type == "cpu"


def test_option_help_is_derived_from_the_spec_fields():
    """Options that mirror a spec field show its description, choices, bounds and default (from the spec)."""
    from toonbooth.cli.common import field_help, spec_option
    from toonbooth.core.specs import AnimeSpec, AvatarSpec, TrainLoraSpec

    fields = AnimeSpec.model_fields
    assert field_help(fields["strength"]) == "Denoising strength of the restyle (0 to 1; default 0.6)."
    assert field_help(fields["steps"], "Sampling steps") == "Sampling steps (1 to 150; default 25)."
    gender = field_help(AvatarSpec.model_fields["gender"])
    assert gender.endswith("(male | female | unspecified; default unspecified).")
    lr = TrainLoraSpec.model_fields["learning_rate"]
    assert field_help(lr, "Learning rate") == "Learning rate (> 0 and <= 1; default 0.0001)."
    assert field_help(lr, "Learning rate", show_default=False) == "Learning rate (> 0 and <= 1)."
    # a description ending in ")" gets no second parenthesis; long defaults (the prompt) are not shown
    assert field_help(TrainLoraSpec.model_fields["snr_gamma"]).endswith("5 is usual), > 0 and <= 100.")
    assert field_help(AvatarSpec.model_fields["sampler"]).endswith("Karras, ...), default DDIM.")
    assert "default" not in field_help(fields["prompt"])
    with pytest.raises(KeyError, match="AnimeSpec has no field 'nope'"):
        spec_option(AnimeSpec, "nope")
    import typer.main

    params = {p.name: p for p in typer.main.get_command(app).commands["anime"].params}
    assert params["strength"].help == field_help(fields["strength"]) and params["strength"].default is None
    assert params["cfg"].help == "CFG scale (0 to 30; default 7)."


def test_outputs_are_never_overwritten_silently(tmp_path, sample_photo_path):
    out = tmp_path / "me.png"
    first = invoke(["avatar", str(sample_photo_path), "--out", str(out), "--quiet"], tmp_path)
    again = invoke(["avatar", str(sample_photo_path), "--out", str(out), "--quiet"], tmp_path)
    assert first.exit_code == again.exit_code == 0
    assert f"wrote {tmp_path / 'me-2.png'}" in again.output and (tmp_path / "me-2.png").is_file()
    before = out.stat().st_mtime_ns
    forced = invoke(["avatar", str(sample_photo_path), "--out", str(out), "--quiet", "--force"], tmp_path)
    assert forced.exit_code == 0 and f"wrote {out} " in forced.output and out.stat().st_mtime_ns >= before
    assert not (tmp_path / "me-3.png").exists()
    wrong = invoke(["avatar", str(sample_photo_path), "--out", str(tmp_path / "me.mp4"), "--quiet"], tmp_path)
    assert wrong.exit_code == 2 and "`--out`" in wrong.output and ".png" in wrong.output


def test_anime_warning_is_printed_once(tmp_path, sample_photo_path):
    res = invoke(["anime", str(sample_photo_path), "--backend", "classic", "--out-dir", str(tmp_path / "o"),
                  "--quiet"], tmp_path)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.output.count("no click given") == 1


def test_missing_fields_are_said_to_be_required(tmp_path):
    job = tmp_path / "job.json"
    job.write_text('{"kind": "generate", "prompt": "a"}')
    res = invoke(["run", str(job)], tmp_path)
    assert res.exit_code == 2 and "`checkpoint`: is required" in res.output and "got a dict" not in res.output


def test_run_takes_local_paths_in_every_media_field(tmp_path, sample_photo_path):
    """`toonbooth run job.json`: local files in any ImageRef / AudioRef field (found by the spec's media
    markers, not a list of names) are checked by their decoder and stored; a bad recording names its field."""
    import json

    voice = tmp_path / "voice.wav"
    voice.write_bytes((sample_photo_path.parent / "sample_voice.wav").read_bytes())
    job = tmp_path / "talk.json"
    job.write_text(json.dumps({"kind": "talk", "face": str(sample_photo_path), "voice": str(voice),
                               "backend": "classic", "size": 128, "sticker_seconds": 1.0}))  # fmt: skip
    res = invoke(["run", str(job), "--out-dir", str(tmp_path / "o")], tmp_path)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "video.mp4").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "talk", "face": str(sample_photo_path), "voice": str(sample_photo_path)}))
    res = invoke(["run", str(bad)], tmp_path)
    assert res.exit_code == 2 and "`voice`" in res.output
