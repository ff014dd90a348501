"""A1111 sampler / schedule-type names -> diffusers schedulers (toonbooth.models.samplers)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from toonbooth.core.errors import BackendUnavailableError, InputError, ModelError
from toonbooth.models.samplers import (
    LEGACY_SAMPLER_NAMES,
    list_samplers,
    list_schedule_types,
    make_scheduler,
    resolve_sampler,
)

# The scheduler_config.json of SDXL base (EulerDiscreteScheduler), with keys that must NOT leak through.
SDXL_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

HAS = {pkg: importlib.util.find_spec(pkg) is not None for pkg in ("scipy", "torchsde")}
SUPPORTED = [s for s in list_samplers() if s.supported]


def _needs_missing(name: str, schedule_type: str | None = None) -> list[str]:
    sampler, schedule = resolve_sampler(name, schedule_type)
    info = next(s for s in list_samplers() if s.name == sampler)
    sched = next(s for s in list_schedule_types() if s.label == schedule)
    return [p for p in (*info.requires, *sched.requires) if not HAS[p]]


def _karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _train_sigmas() -> np.ndarray:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    ac = np.cumprod(1 - betas)
    return ((1 - ac) / ac) ** 0.5


@pytest.mark.parametrize("name", [s.name for s in SUPPORTED] + list(LEGACY_SAMPLER_NAMES))
def test_every_name_builds_and_sets_timesteps(name):
    missing = _needs_missing(name)
    if missing:
        with pytest.raises(BackendUnavailableError, match=f"'{missing[0]}'"):
            make_scheduler(name, SDXL_CONFIG)
        return
    sched = make_scheduler(name, SDXL_CONFIG)
    sched.set_timesteps(10)
    assert len(sched.timesteps) >= 10
    assert sched.config.num_train_timesteps == 1000
    assert sched.config.beta_schedule == "scaled_linear"


def test_missing_packages_are_named_not_substituted():
    if HAS["torchsde"]:
        assert type(make_scheduler("DPM++ SDE", SDXL_CONFIG)).__name__ == "DPMSolverSDEScheduler"
    else:
        with pytest.raises(BackendUnavailableError, match="DPM\\+\\+ SDE.*torchsde"):
            make_scheduler("DPM++ SDE Karras", SDXL_CONFIG)
    if not HAS["scipy"]:
        with pytest.raises(BackendUnavailableError, match="LMS.*scipy"):
            make_scheduler("LMS", SDXL_CONFIG)
        with pytest.raises(BackendUnavailableError, match="Beta.*scipy"):
            make_scheduler("Euler", SDXL_CONFIG, schedule_type="Beta")


@pytest.mark.parametrize(
    ("name", "schedule_type", "cls", "expect"),
    [
        ("DPM++ 2M", None, "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "solver_order": 2}),
        ("DPM++ 2M", "Uniform", "DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
        ("DPM++ 2M Karras", None, "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
        ("DPM++ 2M SDE", None, "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
        ("DPM++ 2M SDE Karras", None, "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
        ("DPM++ 2M SDE", None, "DPMSolverMultistepScheduler", {"use_exponential_sigmas": True}),
        ("DPM++ 3M SDE", None, "DPMSolverMultistepScheduler", {"solver_order": 3}),
        ("DPM++ 2M SDE Heun", None, "DPMSolverMultistepScheduler", {"solver_type": "heun"}),
        ("Euler a", None, "EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace"}),
        (
            "Euler",
            None,
            "EulerDiscreteScheduler",
            {"use_karras_sigmas": False, "timestep_spacing": "linspace"},
        ),
        ("Euler", "Karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
        ("Euler", "SGM Uniform", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
        ("Heun", None, "HeunDiscreteScheduler", {"use_karras_sigmas": False}),
        ("DPM2", "Uniform", "KDPM2DiscreteScheduler", {"use_karras_sigmas": False}),
        ("DPM2 Karras", None, "KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
        ("DPM2 a Karras", None, "KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
        ("DPM++ 2S a Karras", None, "DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
        (
            "DDIM",
            None,
            "DDIMScheduler",
            {"timestep_spacing": "leading", "clip_sample": False, "steps_offset": 1},
        ),
        ("PLMS", None, "PNDMScheduler", {"skip_prk_steps": True}),
        ("UniPC", None, "UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh1"}),
    ],
)
def test_mapping_follows_diffusers_table(name, schedule_type, cls, expect):
    sched = make_scheduler(name, SDXL_CONFIG, schedule_type=schedule_type)
    assert type(sched).__name__ == cls
    for key, value in expect.items():
        assert sched.config[key] == value, key


@pytest.mark.parametrize(("name", "schedule_type"), [("DPM++ 2M Karras", None), ("Euler", "Karras")])
def test_karras_variants_have_karras_sigmas(name, schedule_type):
    sched = make_scheduler(name, SDXL_CONFIG, schedule_type=schedule_type)
    sched.set_timesteps(10)
    train = _train_sigmas()
    expected = _karras(10, train[0], train[-1])
    got = sched.sigmas.numpy()[:10]
    np.testing.assert_allclose(got, expected, rtol=1e-3)
    assert float(sched.sigmas[-1]) == 0.0


def test_uniform_and_ddim_timesteps_are_a1111s():
    euler = make_scheduler("Euler", SDXL_CONFIG)
    euler.set_timesteps(10)
    np.testing.assert_allclose(euler.timesteps.numpy(), np.linspace(999, 0, 10), atol=1e-3)
    ddim = make_scheduler("DDIM", SDXL_CONFIG)
    ddim.set_timesteps(10)
    # A1111: range(0, 1000, 1000 // steps) + 1, high to low
    assert ddim.timesteps.tolist() == list(range(901, 0, -100))


def test_base_config_sampler_keys_do_not_leak():
    karras_cfg = {**SDXL_CONFIG, "use_karras_sigmas": True, "timestep_spacing": "trailing"}
    sched = make_scheduler("Euler", karras_cfg, schedule_type="Uniform")
    assert sched.config.use_karras_sigmas is False
    assert sched.config.timestep_spacing == "linspace"
    vpred = make_scheduler("DPM++ 2M", {**SDXL_CONFIG, "prediction_type": "v_prediction"})
    assert vpred.config.prediction_type == "v_prediction"


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("dpmpp_2m", ("DPM++ 2M", "Karras")),
        ("k_euler_a", ("Euler a", "Uniform")),
        ("k_euler_ancestral", ("Euler a", "Uniform")),
        ("euler a", ("Euler a", "Uniform")),
        ("EULER_A", ("Euler a", "Uniform")),
        ("k_dpmpp_2m_ka", ("DPM++ 2M", "Karras")),
        ("k_dpmpp_2m_sde_exp", ("DPM++ 2M SDE", "Exponential")),
        ("dpm++ 2m karras", ("DPM++ 2M", "Karras")),
        ("DPMSolverMultistepScheduler", ("DPM++ 2M", "Karras")),
        ("EulerAncestralDiscreteScheduler", ("Euler a", "Uniform")),
        ("uni_pc", ("UniPC", "Automatic")),
        ("ddim", ("DDIM", "Automatic")),
        ("lms karras", ("LMS", "Karras")),
    ],
)
def test_aliases_resolve(alias, canonical):
    assert resolve_sampler(alias) == canonical


@pytest.mark.parametrize("name", ["DPM++ 2M", "DPM++ 2M Karras", "DDIM", "Euler a", "UniPC", "DPM2 a Karras"])
def test_resolved_names_round_trip(name):
    sampler, schedule = resolve_sampler(name)
    assert resolve_sampler(sampler, schedule) == (sampler, schedule)
    direct, resolved = make_scheduler(name, SDXL_CONFIG), make_scheduler(sampler, SDXL_CONFIG, schedule)
    assert type(direct) is type(resolved) and dict(direct.config) == dict(resolved.config)


def test_schedule_type_names_and_conflicts():
    assert resolve_sampler("DPM++ 2M", "automatic") == ("DPM++ 2M", "Karras")
    assert resolve_sampler("DPM++ 2M", "sgm_uniform") == ("DPM++ 2M", "SGM Uniform")
    assert resolve_sampler("DPM++ 2M Karras", "Karras") == ("DPM++ 2M", "Karras")
    with pytest.raises(InputError, match="conflicts"):
        resolve_sampler("DPM++ 2M Karras", "Exponential")
    with pytest.raises(InputError, match="unknown schedule type 'Weird'; known: Automatic, Uniform, Karras"):
        resolve_sampler("Euler", "Weird")
    with pytest.raises(InputError, match="DDIM' takes no schedule type"):
        make_scheduler("DDIM", SDXL_CONFIG, schedule_type="Karras")
    with pytest.raises(InputError, match="not available for sampler 'Euler a'.*use_karras_sigmas"):
        make_scheduler("Euler a", SDXL_CONFIG, schedule_type="Karras")
    with pytest.raises(InputError, match="Align Your Steps' is not supported"):
        make_scheduler("Euler", SDXL_CONFIG, schedule_type="Align Your Steps")


def test_unknown_and_unsupported_names():
    with pytest.raises(InputError) as err:
        make_scheduler("Turbo Magic", SDXL_CONFIG)
    assert err.value.field == "sampler"
    assert "unknown sampler 'Turbo Magic'; known: DPM++ 2M, DPM++ SDE" in str(err.value)
    assert "Euler a" in str(err.value) and "UniPC" in str(err.value)
    for name in ("DPM fast", "DPM adaptive", "k_dpm_fast"):
        with pytest.raises(InputError, match="is not supported"):
            make_scheduler(name, SDXL_CONFIG)
    with pytest.raises(ModelError, match="FlowMatch"):
        make_scheduler("Euler", {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0})


def test_lists_have_a1111_api_shape():
    samplers = {s.name: s for s in list_samplers()}
    assert list(samplers)[:2] == ["DPM++ 2M", "DPM++ SDE"]
    assert samplers["DPM++ 2M"].model_dump(include={"name", "aliases", "options"}) == {
        "name": "DPM++ 2M",
        "aliases": ["k_dpmpp_2m", "dpmpp_2m", "DPMSolverMultistepScheduler"],
        "options": {"scheduler": "karras"},
    }
    assert samplers["DPM fast"].supported is False
    assert samplers["DPM adaptive"].supported is False
    assert samplers["DPM++ 2S a"].exact is False and samplers["Euler a"].exact is True
    assert samplers["DPM++ SDE"].requires == ["torchsde"]
    schedules = {s.label: s for s in list_schedule_types()}
    assert schedules["Karras"].name == "karras" and schedules["Karras"].default_rho == 7.0
    assert schedules["SGM Uniform"].aliases == ["SGMUniform"]
    assert schedules["KL Optimal"].supported is False


@pytest.fixture(scope="module")
def tiny_sd15():
    from toonbooth.models.tiny import build_tiny_sd15, make_pipeline

    pipe = make_pipeline(build_tiny_sd15(seed=0), "sd15")
    pipe.set_progress_bar_config(disable=True)
    base = dict(pipe.scheduler.config)

    def run(name: str) -> np.ndarray:
        pipe.scheduler = make_scheduler(name, base)
        return pipe(
            "a cat",
            num_inference_steps=2,
            height=64,
            width=64,
            guidance_scale=5.0,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images

    return run, run("Euler")


@pytest.mark.parametrize("name", ["DDIM", "Euler a", "DPM++ 2M Karras", "UniPC", "DPM++ 2M SDE"])
def test_tiny_sd15_pipeline_runs_two_steps(tiny_sd15, name):
    run, euler_image = tiny_sd15
    image = run(name)
    assert image.shape == (1, 64, 64, 3)
    assert np.isfinite(image).all()
    # a different sampler gives a different image from the same seed
    assert np.abs(image - euler_image).max() > 1e-4
    if name == "DPM++ 2M SDE":  # stochastic sampler: the seed still fixes the result
        np.testing.assert_array_equal(run(name), image)
