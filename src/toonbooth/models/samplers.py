"""AUTOMATIC1111 sampler and schedule-type names → diffusers schedulers.

Mapping facts from diffusers' scheduler overview ("A1111/k-diffusion" tables,
https://huggingface.co/docs/diffusers/api/schedulers/overview) and A1111's own sampler list
(`modules/sd_samplers_kdiffusion.py`, `sd_samplers_timesteps.py`, `sd_schedulers.py`, v1.9–1.10):

* Since A1111 1.9 the sampler ("DPM++ 2M") and the schedule type ("Karras") are separate; the schedule type
  "Automatic" (and, here, `schedule_type=None`) means the sampler's own default, e.g. Karras for DPM++ 2M,
  Exponential for DPM++ 2M SDE / 3M SDE, Uniform for Euler. So, as in A1111 ≥ 1.9, plain "DPM++ 2M" gets
  Karras sigmas; pass `schedule_type="Uniform"` for the pre-1.9 meaning of that name.
* Pre-1.9 combined names ("DPM++ 2M Karras", "LMS Karras", "DPM++ 2M SDE Exponential", `k_dpmpp_2m_ka`)
  are split into sampler + schedule type, as A1111 does.
* k-diffusion samplers sample on sigmas; "Uniform" (A1111's default schedule) is diffusers'
  `timestep_spacing="linspace"`; Karras / Exponential / Beta are `use_karras_sigmas` / `use_exponential_sigmas`
  / `use_beta_sigmas`; SGM Uniform and Simple are `timestep_spacing="trailing"`.
* DDIM / PLMS use A1111's timesteps `range(0, 1000, 1000 // steps) + 1` = diffusers `timestep_spacing="leading"`
  with `steps_offset=1`; DDIM without sample clipping and with `set_alpha_to_one=False` (the last step
  uses ᾱ of t=0, as A1111's DDIM). UniPC uses A1111's defaults: order 3, variant bh1, lower order final,
  ending at sigma_min like A1111's UniPC (t = 1/1000); diffusers' bh1 with a final sigma of 0 gives NaN.
  These three ignore schedule types in A1111; here an explicit non-Automatic one is refused.
* Known differences: diffusers' SDE solvers draw Gaussian noise per step, A1111's use a Brownian tree;
  "DPM++ 2S a" has no diffusers equivalent and runs as the deterministic `DPMSolverSinglestepScheduler`
  (order 2), listed with `exact=False`; DPM2 / 3M SDE do not drop the next-to-last sigma.
* "DPM++ SDE" needs `DPMSolverSDEScheduler`, which needs the `torchsde` package; LMS and the Beta
  schedule need `scipy`. When missing, `make_scheduler` raises `BackendUnavailableError` naming the package.
* Unsupported (listed with `supported=False`): DPM fast, DPM adaptive, Restart, DDIM CFG++, LCM; schedule
  types Polyexponential, KL Optimal, Align Your Steps.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from toonbooth.core.errors import BackendUnavailableError, InputError, ModelError

if TYPE_CHECKING:
    from diffusers import SchedulerMixin


class SamplerInfo(BaseModel):
    """One entry of A1111's `/sdapi/v1/samplers` (name, aliases, options) plus what runs it here."""

    name: str = Field(description="A1111 sampler name")
    aliases: list[str] = Field(default_factory=list, description="other accepted names")
    options: dict[str, str] = Field(default_factory=dict, description="A1111 sampler options")
    supported: bool = Field(description="whether make_scheduler can build it")
    exact: bool = Field(description="False when the diffusers scheduler only approximates A1111's sampler")
    diffusers_class: str | None = Field(default=None, description="diffusers scheduler class")
    requires: list[str] = Field(default_factory=list, description="extra Python packages it needs")
    note: str = Field(default="", description="differences from A1111 or why it is unsupported")


class ScheduleTypeInfo(BaseModel):
    """One entry of A1111's `/sdapi/v1/schedulers`, plus what runs it here."""

    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False
    supported: bool
    requires: list[str] = Field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class _Sampler:
    name: str
    aliases: tuple[str, ...]
    cls: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    default_schedule: str = "uniform"
    timestep_sampler: bool = False  # DDIM / PLMS / UniPC: no schedule types
    options: dict[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    exact: bool = True
    note: str = ""


_K = {"timestep_spacing": "linspace"}  # A1111 "Uniform": sigmas at evenly spaced t from 999 to 0
_TIMESTEP_A1111 = {"timestep_spacing": "leading", "steps_offset": 1}

_SAMPLERS: tuple[_Sampler, ...] = (
    _Sampler(
        "DPM++ 2M",
        ("k_dpmpp_2m", "dpmpp_2m", "DPMSolverMultistepScheduler"),
        "DPMSolverMultistepScheduler",
        {"solver_order": 2, "algorithm_type": "dpmsolver++", "solver_type": "midpoint"},
        "karras",
        options={"scheduler": "karras"},
    ),
    _Sampler(
        "DPM++ SDE",
        ("k_dpmpp_sde", "dpmpp_sde", "DPMSolverSDEScheduler"),
        "DPMSolverSDEScheduler",
        {},
        "karras",
        options={"scheduler": "karras", "second_order": "True", "brownian_noise": "True"},
        requires=("torchsde",),
    ),
    _Sampler(
        "DPM++ 2M SDE",
        ("k_dpmpp_2m_sde", "dpmpp_2m_sde"),
        "DPMSolverMultistepScheduler",
        {"solver_order": 2, "algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint"},
        "exponential",
        options={"scheduler": "exponential", "brownian_noise": "True"},
        note="Gaussian noise per step instead of A1111's Brownian tree",
    ),
    _Sampler(
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun"),
        "DPMSolverMultistepScheduler",
        {"solver_order": 2, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
        "exponential",
        options={"scheduler": "exponential", "brownian_noise": "True", "solver_type": "heun"},
        note="Gaussian noise per step instead of A1111's Brownian tree",
    ),
    _Sampler(
        "DPM++ 2S a",
        ("k_dpmpp_2s_a", "dpmpp_2s_ancestral", "DPMSolverSinglestepScheduler"),
        "DPMSolverSinglestepScheduler",
        {
            "solver_order": 2,
            "algorithm_type": "dpmsolver++",
            "solver_type": "midpoint",
            "lower_order_final": True,
        },
        "karras",
        options={"scheduler": "karras", "uses_ensd": "True", "second_order": "True"},
        exact=False,
        note="no diffusers equivalent; runs DPM-Solver++ 2nd-order singlestep without ancestral noise",
    ),
    _Sampler(
        "DPM++ 3M SDE",
        ("k_dpmpp_3m_sde", "dpmpp_3m_sde"),
        "DPMSolverMultistepScheduler",
        {"solver_order": 3, "algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint"},
        "exponential",
        options={"scheduler": "exponential", "discard_next_to_last_sigma": "True", "brownian_noise": "True"},
        note="Gaussian noise per step instead of a Brownian tree; next-to-last sigma kept",
    ),
    _Sampler(
        "Euler a",
        ("k_euler_a", "k_euler_ancestral", "euler_ancestral", "EulerAncestralDiscreteScheduler"),
        "EulerAncestralDiscreteScheduler",
        {},
        options={"uses_ensd": "True"},
    ),
    _Sampler("Euler", ("k_euler", "EulerDiscreteScheduler"), "EulerDiscreteScheduler"),
    _Sampler("LMS", ("k_lms", "LMSDiscreteScheduler"), "LMSDiscreteScheduler", requires=("scipy",)),
    _Sampler(
        "Heun",
        ("k_heun", "HeunDiscreteScheduler"),
        "HeunDiscreteScheduler",
        options={"second_order": "True"},
    ),
    _Sampler(
        "DPM2",
        ("k_dpm_2", "KDPM2DiscreteScheduler"),
        "KDPM2DiscreteScheduler",
        {},
        "karras",
        options={"scheduler": "karras", "discard_next_to_last_sigma": "True", "second_order": "True"},
        note="next-to-last sigma kept",
    ),
    _Sampler(
        "DPM2 a",
        ("k_dpm_2_a", "dpm_2_ancestral", "KDPM2AncestralDiscreteScheduler"),
        "KDPM2AncestralDiscreteScheduler",
        {},
        "karras",
        options={"scheduler": "karras", "discard_next_to_last_sigma": "True", "uses_ensd": "True"},
        note="next-to-last sigma kept",
    ),
    _Sampler("DPM fast", ("k_dpm_fast",), None, note="no diffusers equivalent"),
    _Sampler("DPM adaptive", ("k_dpm_ad", "dpm_adaptive"), None, note="no diffusers equivalent"),
    _Sampler("Restart", ("restart",), None, note="no diffusers equivalent"),
    _Sampler(
        "DDIM",
        ("ddim", "DDIMScheduler"),
        "DDIMScheduler",
        {**_TIMESTEP_A1111, "clip_sample": False, "set_alpha_to_one": False},
        timestep_sampler=True,
    ),
    _Sampler("DDIM CFG++", ("ddim_cfgpp",), None, timestep_sampler=True, note="no diffusers equivalent"),
    _Sampler(
        "PLMS",
        ("plms", "PNDMScheduler"),
        "PNDMScheduler",
        {**_TIMESTEP_A1111, "skip_prk_steps": True, "set_alpha_to_one": False},
        timestep_sampler=True,
    ),
    _Sampler(
        "UniPC",
        ("unipc", "uni_pc", "UniPCMultistepScheduler"),
        "UniPCMultistepScheduler",
        {
            **_K,
            "solver_order": 3,
            "solver_type": "bh1",
            "lower_order_final": True,
            "predict_x0": True,
            "final_sigmas_type": "sigma_min",
        },
        timestep_sampler=True,
    ),
    _Sampler("LCM", ("k_lcm", "lcm"), None, note="A1111's LCM sampler has no exact diffusers equivalent"),
)


@dataclass(frozen=True)
class _Schedule:
    name: str
    label: str
    aliases: tuple[str, ...] = ()
    kwargs: dict[str, Any] | None = None  # None = unsupported
    default_rho: float = -1
    need_inner_model: bool = False
    requires: tuple[str, ...] = ()
    note: str = ""


_SCHEDULES: tuple[_Schedule, ...] = (
    _Schedule("automatic", "Automatic", kwargs={}, note="the sampler's own default"),
    _Schedule("uniform", "Uniform", kwargs={}, need_inner_model=True),
    _Schedule("karras", "Karras", ("ka",), {"use_karras_sigmas": True}, default_rho=7.0),
    _Schedule("exponential", "Exponential", ("exp",), {"use_exponential_sigmas": True}),
    _Schedule("polyexponential", "Polyexponential", default_rho=1.0, note="no diffusers equivalent"),
    _Schedule(
        "sgm_uniform", "SGM Uniform", ("SGMUniform",), {"timestep_spacing": "trailing"}, need_inner_model=True
    ),
    _Schedule("kl_optimal", "KL Optimal", note="no diffusers equivalent"),
    _Schedule("align_your_steps", "Align Your Steps", note="no diffusers equivalent"),
    _Schedule("simple", "Simple", kwargs={"timestep_spacing": "trailing"}, need_inner_model=True),
    _Schedule("normal", "Normal", kwargs={}, need_inner_model=True, note="same timesteps as Uniform"),
    _Schedule("ddim", "DDIM", kwargs={"timestep_spacing": "leading"}, need_inner_model=True),
    _Schedule("beta", "Beta", kwargs={"use_beta_sigmas": True}, need_inner_model=True, requires=("scipy",)),
)

# Keys of a scheduler config that describe the trained model (kept); everything else is the sampler's.
_MODEL_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "rescale_betas_zero_snr",
    "steps_offset",
)
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")

# Pre-1.9 names that combine sampler + schedule; all resolve through suffix splitting.
LEGACY_SAMPLER_NAMES: tuple[str, ...] = (
    "LMS Karras",
    "DPM2 Karras",
    "DPM2 a Karras",
    "DPM++ 2S a Karras",
    "DPM++ 2M Karras",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Karras",
    "DPM++ 2M SDE Exponential",
    "DPM++ 2M SDE Heun Karras",
    "DPM++ 2M SDE Heun Exponential",
    "DPM++ 3M SDE Karras",
    "DPM++ 3M SDE Exponential",
)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("++", "pp"))


_SAMPLER_BY_KEY: dict[str, _Sampler] = {}
for _s in _SAMPLERS:
    for _n in (_s.name, *_s.aliases):
        _SAMPLER_BY_KEY[_norm(_n)] = _s
_SCHEDULE_BY_KEY: dict[str, _Schedule] = {}
for _sc in _SCHEDULES:
    for _n in (_sc.name, _sc.label, *_sc.aliases):
        _SCHEDULE_BY_KEY[_norm(_n)] = _sc


def list_samplers() -> list[SamplerInfo]:
    """All A1111 sampler names in A1111's order, `/sdapi/v1/samplers` shape plus support details."""
    return [
        SamplerInfo(
            name=s.name,
            aliases=list(s.aliases),
            options=dict(s.options),
            supported=s.cls is not None,
            exact=s.cls is not None and s.exact,
            diffusers_class=s.cls,
            requires=list(s.requires),
            note=s.note,
        )
        for s in _SAMPLERS
    ]


def list_schedule_types() -> list[ScheduleTypeInfo]:
    """A1111 ≥ 1.9 schedule types, `/sdapi/v1/schedulers` shape plus support details."""
    return [
        ScheduleTypeInfo(
            name=s.name,
            label=s.label,
            aliases=list(s.aliases) or None,
            default_rho=s.default_rho,
            need_inner_model=s.need_inner_model,
            supported=s.kwargs is not None,
            requires=list(s.requires),
            note=s.note,
        )
        for s in _SCHEDULES
    ]


def _unknown_sampler(name: str) -> InputError:
    known = ", ".join(s.name for s in _SAMPLERS if s.cls is not None)
    return InputError("sampler", f"unknown sampler '{name}'; known: {known}", name)


def resolve_sampler(name: str, schedule_type: str | None = None) -> tuple[str, str]:
    """Canonical (sampler name, schedule type label) for `name` / `schedule_type`, as A1111 ≥ 1.9 splits
    them; "Automatic" is resolved to the sampler's default. Raises `InputError` for unknown names."""
    if not isinstance(name, str) or not name.strip():
        raise InputError("sampler", f"must be a non-empty sampler name, got {name!r}", name)
    key = _norm(name)
    sampler = _SAMPLER_BY_KEY.get(key)
    suffix_schedule: _Schedule | None = None
    if sampler is None:
        for sk in sorted(_SCHEDULE_BY_KEY, key=len, reverse=True):
            if key.endswith(sk) and key[: -len(sk)] in _SAMPLER_BY_KEY:
                sampler = _SAMPLER_BY_KEY[key[: -len(sk)]]
                suffix_schedule = _SCHEDULE_BY_KEY[sk]
                break
    if sampler is None:
        raise _unknown_sampler(name)

    explicit: _Schedule | None = None
    if schedule_type is not None:
        explicit = _SCHEDULE_BY_KEY.get(_norm(schedule_type))
        if explicit is None:
            known = ", ".join(s.label for s in _SCHEDULES if s.kwargs is not None)
            raise InputError(
                "schedule_type", f"unknown schedule type '{schedule_type}'; known: {known}", schedule_type
            )
    if explicit is not None and explicit.name == "automatic":
        explicit = None
    if suffix_schedule is not None and explicit is not None and explicit.name != suffix_schedule.name:
        raise InputError(
            "schedule_type",
            f"'{schedule_type}' conflicts with sampler name '{name}' (which implies {suffix_schedule.label})",
            schedule_type,
        )
    chosen = explicit or suffix_schedule
    if sampler.timestep_sampler and chosen is not None:
        raise InputError(
            "schedule_type",
            f"sampler '{sampler.name}' takes no schedule type (A1111 ignores it); got '{chosen.label}', "
            "use Automatic",
            schedule_type if schedule_type is not None else name,
        )
    if sampler.timestep_sampler:
        return sampler.name, "Automatic"
    if chosen is None:
        chosen = _SCHEDULE_BY_KEY[_norm(sampler.default_schedule)]
    return sampler.name, chosen.label


def _require(packages: tuple[str, ...], what: str) -> None:
    for pkg in packages:
        if importlib.util.find_spec(pkg) is None:
            raise BackendUnavailableError(
                f"{what} needs the Python package '{pkg}', which is not installed (pip install {pkg})"
            )


def make_scheduler(
    name: str, base_config: dict[str, Any], schedule_type: str | None = None
) -> SchedulerMixin:
    """Build the diffusers scheduler that runs A1111 sampler `name` (with A1111 ≥ 1.9 `schedule_type`,
    default Automatic) for the model whose scheduler config is `base_config` (e.g. `pipe.scheduler.config`).

    Only the model-defining keys of `base_config` (betas, training steps, prediction type, zero-SNR,
    steps offset) are kept; everything else is set for the sampler.
    """
    import diffusers

    # 1. Check inputs
    if not hasattr(base_config, "get"):
        raise InputError("base_config", f"must be a scheduler config dict, got {type(base_config).__name__}")
    class_name = str(base_config.get("_class_name", ""))
    if "FlowMatch" in class_name:
        raise ModelError(
            f"A1111 sampler names apply to DDPM-trained models (SD1.x/2.x/SDXL), not a {class_name} model"
        )
    sampler_name, schedule_label = resolve_sampler(name, schedule_type)
    sampler = _SAMPLER_BY_KEY[_norm(sampler_name)]
    schedule = _SCHEDULE_BY_KEY[_norm(schedule_label)]
    if sampler.cls is None:
        raise InputError("sampler", f"sampler '{sampler.name}' is not supported: {sampler.note}", name)
    if schedule.kwargs is None:
        raise InputError(
            "schedule_type",
            f"schedule type '{schedule.label}' is not supported: {schedule.note}",
            schedule_type,
        )
    _require(sampler.requires, f"sampler '{sampler.name}'")
    _require(schedule.requires, f"schedule type '{schedule.label}'")

    # 2. Collect constructor arguments: model keys, then the sampler's, then the schedule's
    cls = getattr(diffusers, sampler.cls)
    params = set(inspect.signature(cls.__init__).parameters)
    kwargs: dict[str, Any] = {k: base_config[k] for k in _MODEL_KEYS if k in base_config and k in params}
    for flag in _SIGMA_FLAGS:
        if flag in params:
            kwargs[flag] = False
    if not sampler.timestep_sampler and "timestep_spacing" in params:
        kwargs["timestep_spacing"] = "linspace"
    kwargs.update(sampler.kwargs)
    missing = [k for k in schedule.kwargs if k not in params]
    if missing:
        raise InputError(
            "schedule_type",
            f"schedule type '{schedule.label}' is not available for sampler '{sampler.name}' "
            f"(diffusers {sampler.cls} has no {', '.join(missing)})",
            schedule_type if schedule_type is not None else name,
        )
    kwargs.update(schedule.kwargs)

    # 3. Build
    return cls(**kwargs)
