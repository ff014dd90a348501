"""Convert NVIDIA StyleGAN2 network pickles to toonbooth's rosinality-layout safetensors, without running
any code from the pickle.

Sources (facts only; no code copied):
- NVlabs/stylegan2-ada-pytorch (https://github.com/NVlabs/stylegan2-ada-pytorch): a `.pkl` is
  `pickle.dump({'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'})`; every network class is wrapped
  by `torch_utils.persistence.persistent_class`, whose `__reduce__` emits
  `_reconstruct_persistent_obj(meta)` with `meta = {type, version, module_src, class_name, state}`.
  The real loader *executes* `module_src`. The NVIDIA -> rosinality key map is the one of its
  `export_weights.py` (PR #220): `mapping.fc{i}` -> `style.{i+1}`, `synthesis.b4.const` -> `input.input`,
  `synthesis.b{r}.conv{0,1}` -> `convs.{2k+level}`, `torgb` -> `to_rgbs.{k}` / `to_rgb1`,
  `affine` -> `conv.modulation`, `noise_strength` -> `noise.weight`, `noise_const` -> `noises.noise_i`,
  blur kernels = 4 x the normalised resample filter, `latent_avg` = `mapping.w_avg`.
- Legacy TensorFlow pickles (original StyleGAN2, the Toonify `.pkl`s): a tuple `(G, D, Gs)` of
  `dnnlib.tflib.network.Network` objects whose pickled state carries `variables` as (name, ndarray) and
  `components`; ADA's `legacy.py` reads them through a stub class. The TF -> rosinality map follows
  rosinality's `convert_weight.py` (https://github.com/rosinality/stylegan2-pytorch): conv weights
  `transpose(3, 2, 0, 1)`, modulation bias + 1, up-conv kernels flipped, `Dense{i}` -> `style.{i+1}`.

Safety: `SafeNetworkUnpickler.find_class` returns only allow-listed callables -- torch's tensor rebuild
helpers (storages are decoded with `torch.load(weights_only=True)`), `collections.OrderedDict`, numpy's
array reconstruction, `set`/`frozenset`, and *inert stub classes* for NVIDIA's persistent objects, TF
networks, `dnnlib.util.EasyDict` and plain `torch.nn` modules. A stub only records the pickled state; the
embedded source code is never compiled or executed and never even kept. Any other global (for example
`os.system` in a malicious `__reduce__`) raises `ModelError` naming it, before anything is called.
Conversions are meant for the operator's public files, once, offline: the result is safetensors.
"""

from __future__ import annotations

import codecs
import collections
import io
import math
import pickle
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ModelError, ModelNotFoundError
from .stylegan2 import (
    Discriminator,
    Generator,
    config_from_state_dict,
    discriminator_config_from_state_dict,
    make_kernel,
    save_stylegan2_safetensors,
)

__all__ = [
    "ConversionReport",
    "PersistentObjectStub",
    "SafeNetworkUnpickler",
    "TFNetworkStub",
    "TorchModuleStub",
    "convert_stylegan2_pickle",
    "nvidia_discriminator_to_rosinality",
    "nvidia_generator_to_rosinality",
    "nvidia_state_dicts",
    "read_network_pickle",
    "tf_discriminator_to_rosinality",
    "tf_generator_to_rosinality",
    "tf_params",
]

# ---------------------------------------------------------------------------------------------------
# Inert stubs
# ---------------------------------------------------------------------------------------------------


class _Stub:
    """Base of the inert classes the unpickler hands out: they keep the pickled state, nothing else."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:  # BUILD opcode: keep the data, run nothing
        self.state = state

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} is an inert stub and cannot be pickled again")


class PersistentObjectStub(_Stub):
    """What `torch_utils.persistence._reconstruct_persistent_obj(meta)` becomes: the class name, version
    and pickled `state` (a module's `__dict__`). `meta['module_src']` is dropped unread."""

    def __init__(self, class_name: str, version: Any, state: Any):
        self.class_name = class_name
        self.version = version
        self.state = state

    def __repr__(self) -> str:
        return f"PersistentObjectStub({self.class_name!r})"


class TFNetworkStub(_Stub):
    """A legacy `dnnlib.tflib.network.Network`: its state dict (`name`, `static_kwargs`, `components`,
    `variables`, and `build_module_src`, which is never used)."""

    def __repr__(self) -> str:
        name = self.state.get("name") if isinstance(self.state, dict) else None
        return f"TFNetworkStub({name!r})"


class TorchModuleStub(_Stub):
    """A plain `torch.nn` module (e.g. a container) inside a network pickle: its `__dict__` as `state`."""

    torch_class = "torch.nn.Module"

    def __repr__(self) -> str:
        return f"TorchModuleStub({self.torch_class!r})"


class _AttrDict(dict):
    """Stands in for `dnnlib.util.EasyDict` (a dict subclass); attribute access reads keys."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


# ---------------------------------------------------------------------------------------------------
# The allow-list unpickler
# ---------------------------------------------------------------------------------------------------


def _load_storage_bytes(b: bytes) -> Any:
    if not isinstance(b, (bytes, bytearray)):
        raise ModelError(f"tensor storage payload must be bytes, got {type(b).__name__}")
    return torch.load(io.BytesIO(bytes(b)), map_location="cpu", weights_only=True)


def _rebuild_parameter(
    data: torch.Tensor, requires_grad: bool, backward_hooks: Any, *state: Any
) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise ModelError(f"parameter data must be a tensor, got {type(data).__name__}")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _rebuild_tensor_v2(storage: Any, offset: int, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise ModelError(f"tensor storage must be a torch storage, got {type(storage).__name__}")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def _persistent_obj(meta: Any) -> PersistentObjectStub:
    if not isinstance(meta, dict):
        raise ModelError(f"persistent-object metadata must be a dict, got {type(meta).__name__}")
    if meta.get("type") != "class":
        raise ModelError(f"unsupported persistent object type {meta.get('type')!r} (only 'class')")
    return PersistentObjectStub(str(meta.get("class_name")), meta.get("version"), meta.get("state"))


def _codecs_encode(obj: Any, encoding: str = "utf-8", *args: Any) -> bytes:
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise ModelError(f"_codecs.encode is only allowed for latin1 bytes, got encoding {encoding!r}")
    return codecs.encode(obj, "latin1")


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise ModelError(f"numpy reconstruction only for numpy.ndarray, got {subtype!r}")
    return _numpy_multiarray()._reconstruct(np.ndarray, shape, dtype)


def _np_scalar(dtype: Any, *args: Any) -> Any:
    if not isinstance(dtype, np.dtype):
        raise ModelError(f"numpy scalar needs a dtype, got {type(dtype).__name__}")
    return _numpy_multiarray().scalar(dtype, *args)


_TORCH_DTYPES = {
    name
    for name in (
        "float32",
        "float16",
        "bfloat16",
        "float64",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "bool",
    )
}


class SafeNetworkUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` only returns allow-listed, side-effect-free callables.

    Persistent objects, TF networks and `torch.nn` modules become inert stubs. Everything else is refused
    with a `ModelError` naming `module.name`. `seen` records every global the file referenced."""

    _ALLOWED: Mapping[tuple[str, str], Callable[..., Any]] = types.MappingProxyType(
        {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
            ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
            ("torch", "Size"): torch.Size,
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_obj,
            ("dnnlib.util", "EasyDict"): _AttrDict,
            ("dnnlib", "EasyDict"): _AttrDict,
            ("dnnlib.tflib.network", "Network"): TFNetworkStub,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
            ("numpy.core.multiarray", "scalar"): _np_scalar,
            ("numpy._core.multiarray", "scalar"): _np_scalar,
            ("_codecs", "encode"): _codecs_encode,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("__builtin__", "set"): set,
            ("__builtin__", "frozenset"): frozenset,
        }
    )

    def __init__(self, file: Any, source_name: str = "pickle"):
        super().__init__(file)
        self.source_name = source_name
        self.seen: set[str] = set()
        self._module_stubs: dict[str, type[TorchModuleStub]] = {}

    def _module_stub(self, qualname: str) -> type[TorchModuleStub]:
        if qualname not in self._module_stubs:
            self._module_stubs[qualname] = type(
                "TorchModuleStub_" + qualname.rsplit(".", 1)[-1],
                (TorchModuleStub,),
                {"torch_class": qualname},
            )
        return self._module_stubs[qualname]

    def _reconstructor(self, cls: Any, base: Any, state: Any = None) -> Any:
        if not (isinstance(cls, type) and issubclass(cls, _Stub)) or base is not object or state is not None:
            raise ModelError(f"{self.source_name}: copyreg._reconstructor only for stub classes, got {cls!r}")
        return object.__new__(cls)

    def find_class(self, module: str, name: str) -> Any:
        qual = f"{module}.{name}"
        self.seen.add(qual)
        fn = self._ALLOWED.get((module, name))
        if fn is not None:
            return fn
        if module == "copyreg" and name == "_reconstructor":
            return self._reconstructor
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        if module.startswith("torch.nn.modules.") and re.fullmatch(r"[A-Z][A-Za-z0-9_]*", name):
            return self._module_stub(qual)
        raise ModelError(
            f"{self.source_name}: refusing to unpickle `{qual}`: it is not on the allow-list of tensor, "
            "container and network-stub types (loading it could run code); nothing from this file was executed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise ModelError(f"{self.source_name}: persistent ids are not supported in network pickles ({pid!r})")


def read_network_pickle(path: str | Path) -> Any:
    """Unpickle a network `.pkl` with `SafeNetworkUnpickler`; returns stubs, dicts and tensors."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"network pickle {str(path)!r} does not exist")
    with path.open("rb") as f:
        unpickler = SafeNetworkUnpickler(f, source_name=path.name)
        try:
            return unpickler.load()
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(
                f"{path.name}: not a readable network pickle: {type(e).__name__}: {str(e)[:300]}"
            ) from e


# ---------------------------------------------------------------------------------------------------
# State dicts out of stubs
# ---------------------------------------------------------------------------------------------------


def _module_state(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, (PersistentObjectStub, TorchModuleStub)) and isinstance(obj.state, dict):
        return obj.state
    return None


def _walk_module(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = _module_state(obj)
    if state is None:
        raise ModelError(
            f"`{prefix.rstrip('.') or 'network'}` is not a pickled torch module ({type(obj).__name__})"
        )
    non_persistent = set(state.get("_non_persistent_buffers_set") or ())
    for name, p in (state.get("_parameters") or {}).items():
        if isinstance(p, torch.Tensor):
            out[prefix + name] = p.detach()
    for name, b in (state.get("_buffers") or {}).items():
        if isinstance(b, torch.Tensor) and name not in non_persistent:
            out[prefix + name] = b.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _walk_module(child, f"{prefix}{name}.", out)


def _as_state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v.detach() for k, v in obj.items()}
    out: dict[str, torch.Tensor] = {}
    _walk_module(obj, "", out)
    if not out:
        raise ModelError(f"`{what}` holds no tensors")
    return out


def nvidia_state_dicts(data: Any) -> dict[str, dict[str, torch.Tensor]]:
    """NVIDIA-named state dicts (`mapping.fc0.weight`, `synthesis.b4.const`, `b64.conv0.weight`, ...) of
    the `G_ema`, `G` and `D` entries of an unpickled stylegan2-ada-pytorch file. Entries may be persistent
    stubs, plain `torch.nn` stubs or already plain state dicts (a "plain pickle")."""
    if not isinstance(data, Mapping):
        raise ModelError(
            f"expected a dict with `G_ema` (stylegan2-ada-pytorch pickle), got {type(data).__name__}"
        )
    out = {}
    for name in ("G_ema", "G", "D"):
        if data.get(name) is not None:
            out[name] = _as_state_dict(data[name], name)
    if "G_ema" not in out and "G" not in out:
        if all(isinstance(v, torch.Tensor) for v in data.values()) and any(
            k.startswith("synthesis.") for k in data
        ):
            out["G_ema"] = _as_state_dict(data, "G_ema")
        else:
            raise ModelError(f"no `G_ema` generator in this pickle (keys: {sorted(map(str, data))[:8]})")
    return out


# ---------------------------------------------------------------------------------------------------
# NVIDIA PyTorch -> rosinality
# ---------------------------------------------------------------------------------------------------


def _need(sd: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in sd:
        raise ModelError(f"NVIDIA generator/discriminator state is missing `{key}`")
    return sd[key].detach().to(torch.float32)


def nvidia_generator_to_rosinality(
    sd: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Map a stylegan2-ada-pytorch `Generator` state dict to rosinality keys; returns `(g, latent_avg)`.

    Only unconditional, 'skip'-architecture StyleGAN2 generators map (StyleGAN3 and conditional ones are
    refused)."""
    if any(k.startswith("mapping.embed.") for k in sd):
        raise ModelError("conditional (c_dim > 0) generators have no rosinality equivalent; not converted")
    if any(re.match(r"synthesis\.L\d+_", k) for k in sd):
        raise ModelError("this is a StyleGAN3 generator (synthesis.L*_ layers); only StyleGAN2 converts")
    if any(re.match(r"synthesis\.b\d+\.skip\.", k) for k in sd):
        raise ModelError("resnet-architecture generators (synthesis.b*.skip) are not the rosinality layout")
    n_mlp = len({m.group(1) for k in sd if (m := re.match(r"mapping\.fc(\d+)\.weight$", k))})
    resolutions = sorted({int(m.group(1)) for k in sd if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    if not n_mlp or not resolutions or resolutions[0] != 4:
        raise ModelError("not a stylegan2-ada-pytorch generator: no mapping.fc*/synthesis.b4 keys")
    w0 = _need(sd, "mapping.fc0.weight")
    if w0.shape[0] != w0.shape[1]:
        raise ModelError(f"z_dim {w0.shape[1]} != w_dim {w0.shape[0]}: rosinality needs equal dims")

    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"style.{i + 1}.weight"] = _need(sd, f"mapping.fc{i}.weight")
        out[f"style.{i + 1}.bias"] = _need(sd, f"mapping.fc{i}.bias")

    def conv(ros: str, nv: str) -> None:
        out[f"{ros}.conv.weight"] = _need(sd, f"{nv}.weight").unsqueeze(0)
        out[f"{ros}.conv.modulation.weight"] = _need(sd, f"{nv}.affine.weight")
        out[f"{ros}.conv.modulation.bias"] = _need(sd, f"{nv}.affine.bias")
        out[f"{ros}.noise.weight"] = _need(sd, f"{nv}.noise_strength").reshape(1)
        out[f"{ros}.activate.bias"] = _need(sd, f"{nv}.bias")

    def torgb(ros: str, nv: str) -> None:
        out[f"{ros}.conv.weight"] = _need(sd, f"{nv}.torgb.weight").unsqueeze(0)
        out[f"{ros}.conv.modulation.weight"] = _need(sd, f"{nv}.torgb.affine.weight")
        out[f"{ros}.conv.modulation.bias"] = _need(sd, f"{nv}.torgb.affine.bias")
        out[f"{ros}.bias"] = _need(sd, f"{nv}.torgb.bias").reshape(1, -1, 1, 1)

    filt = sd.get("synthesis.b4.resample_filter")
    kernel = (filt.detach().float() if filt is not None else make_kernel([1, 3, 3, 1])) * 4
    out["input.input"] = _need(sd, "synthesis.b4.const").unsqueeze(0)
    conv("conv1", "synthesis.b4.conv1")
    torgb("to_rgb1", "synthesis.b4")
    out["noises.noise_0"] = _need(sd, "synthesis.b4.conv1.noise_const").reshape(1, 1, 4, 4)
    for res in resolutions[1:]:
        k = int(math.log2(res)) - 3
        if 2 ** (k + 3) != res:
            raise ModelError(f"unexpected synthesis block b{res}")
        for level in (0, 1):
            nv = f"synthesis.b{res}.conv{level}"
            conv(f"convs.{2 * k + level}", nv)
            out[f"noises.noise_{2 * k + 1 + level}"] = _need(sd, f"{nv}.noise_const").reshape(1, 1, res, res)
        torgb(f"to_rgbs.{k}", f"synthesis.b{res}")
        out[f"convs.{2 * k}.conv.blur.kernel"] = kernel.clone()
        out[f"to_rgbs.{k}.upsample.kernel"] = kernel.clone()
    latent_avg = _need(sd, "mapping.w_avg").reshape(-1)
    return out, latent_avg


def nvidia_discriminator_to_rosinality(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a stylegan2-ada-pytorch resnet `Discriminator` state dict to rosinality keys."""
    if any(k.startswith("mapping.") for k in sd):
        raise ModelError("conditional discriminators (with a mapping network) are not converted")
    resolutions = sorted({int(m.group(1)) for k in sd if (m := re.match(r"b(\d+)\.", k))}, reverse=True)
    if not resolutions or resolutions[-1] != 4:
        raise ModelError("not a stylegan2-ada-pytorch discriminator: no b4 epilogue")
    top = resolutions[0]
    if f"b{top}.fromrgb.weight" not in sd or any(f"b{r}.fromrgb.weight" in sd for r in resolutions[1:-1]):
        raise ModelError("only the resnet discriminator architecture (one FromRGB at the top) converts")
    if _need(sd, "b4.out.weight").shape[0] != 1:
        raise ModelError("projection-conditioned discriminator output: not converted")
    out: dict[str, torch.Tensor] = {
        "convs.0.0.weight": _need(sd, f"b{top}.fromrgb.weight"),
        "convs.0.1.bias": _need(sd, f"b{top}.fromrgb.bias"),
    }
    for j, res in enumerate(resolutions[:-1], start=1):
        filt = sd.get(f"b{res}.conv1.resample_filter")
        kernel = filt.detach().float() if filt is not None else make_kernel([1, 3, 3, 1])
        out[f"convs.{j}.conv1.0.weight"] = _need(sd, f"b{res}.conv0.weight")
        out[f"convs.{j}.conv1.1.bias"] = _need(sd, f"b{res}.conv0.bias")
        out[f"convs.{j}.conv2.0.kernel"] = kernel.clone()
        out[f"convs.{j}.conv2.1.weight"] = _need(sd, f"b{res}.conv1.weight")
        out[f"convs.{j}.conv2.2.bias"] = _need(sd, f"b{res}.conv1.bias")
        out[f"convs.{j}.skip.0.kernel"] = kernel.clone()
        out[f"convs.{j}.skip.1.weight"] = _need(sd, f"b{res}.skip.weight")
    out["final_conv.0.weight"] = _need(sd, "b4.conv.weight")
    out["final_conv.1.bias"] = _need(sd, "b4.conv.bias")
    out["final_linear.0.weight"] = _need(sd, "b4.fc.weight")
    out["final_linear.0.bias"] = _need(sd, "b4.fc.bias")
    out["final_linear.1.weight"] = _need(sd, "b4.out.weight")
    out["final_linear.1.bias"] = _need(sd, "b4.out.bias")
    return out


# ---------------------------------------------------------------------------------------------------
# Legacy TensorFlow -> rosinality
# ---------------------------------------------------------------------------------------------------


def tf_params(net: TFNetworkStub) -> dict[str, np.ndarray]:
    """All variables of a TF network stub and its components, named `component/.../var`."""
    out: dict[str, np.ndarray] = {}

    def recurse(prefix: str, node: Any) -> None:
        if not isinstance(node, TFNetworkStub) or not isinstance(node.state, dict):
            raise ModelError(f"`{prefix or 'network'}` is not a TF network stub")
        for name, value in node.state.get("variables") or []:
            out[prefix + str(name)] = np.asarray(value)
        for name, comp in (node.state.get("components") or {}).items():
            recurse(f"{prefix}{name}/", comp)

    recurse("", net)
    return out


def _tf(params: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in params:
        raise ModelError(f"TF network has no variable `{key}`")
    return np.asarray(params[key], dtype=np.float32)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def tf_generator_to_rosinality(
    net: TFNetworkStub | Mapping[str, np.ndarray],
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Map a legacy TF StyleGAN2 generator (`Gs`) to rosinality keys; returns `(g, latent_avg)`."""
    kwargs: dict[str, Any] = {}
    if isinstance(net, TFNetworkStub):
        kwargs = dict(net.state.get("static_kwargs") or {}) if isinstance(net.state, dict) else {}
        if isinstance(net.state, dict) and int(net.state.get("version") or 0) < 4:
            raise ModelError("TF network pickle version < 4 (StyleGAN1-era) is not supported")
        params = tf_params(net)
    else:
        params = dict(net)
    if kwargs.get("architecture", "skip") != "skip" or int(kwargs.get("label_size") or 0):
        raise ModelError(
            f"only unconditional 'skip' TF generators convert (architecture={kwargs.get('architecture')!r}, "
            f"label_size={kwargs.get('label_size')})"
        )
    resample = kwargs.get("resample_kernel") or [1, 3, 3, 1]
    kernel = make_kernel(resample) * 4
    n_mlp = len({m.group(1) for k in params if (m := re.fullmatch(r"mapping/Dense(\d+)/weight", k))})
    resolutions = sorted({int(m.group(1)) for k in params if (m := re.match(r"synthesis/(\d+)x\1/", k))})
    if not n_mlp or not resolutions or resolutions[0] != 4:
        raise ModelError("not a TF StyleGAN2 generator: no mapping/Dense*/synthesis/4x4 variables")
    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"style.{i + 1}.weight"] = _t(_tf(params, f"mapping/Dense{i}/weight").T)
        out[f"style.{i + 1}.bias"] = _t(_tf(params, f"mapping/Dense{i}/bias"))

    def modconv(ros: str, tf: str, flip: bool) -> None:
        w = _tf(params, f"{tf}/weight")
        if flip:
            w = w[::-1, ::-1]
        out[f"{ros}.conv.weight"] = _t(w.transpose(3, 2, 0, 1))[None]
        out[f"{ros}.conv.modulation.weight"] = _t(_tf(params, f"{tf}/mod_weight").T)
        out[f"{ros}.conv.modulation.bias"] = _t(_tf(params, f"{tf}/mod_bias") + 1.0)
        out[f"{ros}.noise.weight"] = _t(_tf(params, f"{tf}/noise_strength").reshape(1))
        out[f"{ros}.activate.bias"] = _t(_tf(params, f"{tf}/bias"))

    def torgb(ros: str, tf: str) -> None:
        out[f"{ros}.conv.weight"] = _t(_tf(params, f"{tf}/weight").transpose(3, 2, 0, 1))[None]
        out[f"{ros}.conv.modulation.weight"] = _t(_tf(params, f"{tf}/mod_weight").T)
        out[f"{ros}.conv.modulation.bias"] = _t(_tf(params, f"{tf}/mod_bias") + 1.0)
        out[f"{ros}.bias"] = _t(_tf(params, f"{tf}/bias")).reshape(1, -1, 1, 1)

    out["input.input"] = _t(_tf(params, "synthesis/4x4/Const/const")).reshape(1, -1, 4, 4)
    modconv("conv1", "synthesis/4x4/Conv", flip=False)
    torgb("to_rgb1", "synthesis/4x4/ToRGB")
    out["noises.noise_0"] = _t(_tf(params, "synthesis/noise0")).reshape(1, 1, 4, 4)
    for res in resolutions[1:]:
        k = int(math.log2(res)) - 3
        modconv(f"convs.{2 * k}", f"synthesis/{res}x{res}/Conv0_up", flip=True)
        modconv(f"convs.{2 * k + 1}", f"synthesis/{res}x{res}/Conv1", flip=False)
        torgb(f"to_rgbs.{k}", f"synthesis/{res}x{res}/ToRGB")
        for level in (0, 1):
            idx = 2 * k + 1 + level
            out[f"noises.noise_{idx}"] = _t(_tf(params, f"synthesis/noise{idx}")).reshape(1, 1, res, res)
        out[f"convs.{2 * k}.conv.blur.kernel"] = kernel.clone()
        out[f"to_rgbs.{k}.upsample.kernel"] = kernel.clone()
    latent_avg = _t(_tf(params, "dlatent_avg")).reshape(-1) if "dlatent_avg" in params else None
    return out, latent_avg


def tf_discriminator_to_rosinality(net: TFNetworkStub | Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map a legacy TF resnet StyleGAN2 discriminator to rosinality keys."""
    kwargs = dict(net.state.get("static_kwargs") or {}) if isinstance(net, TFNetworkStub) else {}
    params = tf_params(net) if isinstance(net, TFNetworkStub) else dict(net)
    label_size = int(kwargs.get("label_size") or 0)
    if kwargs.get("architecture", "resnet") != "resnet" or label_size:
        raise ModelError(f"only unconditional resnet TF discriminators convert (label_size={label_size})")
    kernel = make_kernel(kwargs.get("resample_kernel") or [1, 3, 3, 1])
    resolutions = sorted({int(m.group(1)) for k in params if (m := re.match(r"(\d+)x\1/", k))}, reverse=True)
    if not resolutions or resolutions[-1] != 4:
        raise ModelError("not a TF StyleGAN2 discriminator: no 4x4 variables")
    top = resolutions[0]
    out = {
        "convs.0.0.weight": _t(_tf(params, f"{top}x{top}/FromRGB/weight").transpose(3, 2, 0, 1)),
        "convs.0.1.bias": _t(_tf(params, f"{top}x{top}/FromRGB/bias")),
    }
    for j, res in enumerate(resolutions[:-1], start=1):
        r = f"{res}x{res}"
        out[f"convs.{j}.conv1.0.weight"] = _t(_tf(params, f"{r}/Conv0/weight").transpose(3, 2, 0, 1))
        out[f"convs.{j}.conv1.1.bias"] = _t(_tf(params, f"{r}/Conv0/bias"))
        out[f"convs.{j}.conv2.0.kernel"] = kernel.clone()
        out[f"convs.{j}.conv2.1.weight"] = _t(_tf(params, f"{r}/Conv1_down/weight").transpose(3, 2, 0, 1))
        out[f"convs.{j}.conv2.2.bias"] = _t(_tf(params, f"{r}/Conv1_down/bias"))
        out[f"convs.{j}.skip.0.kernel"] = kernel.clone()
        out[f"convs.{j}.skip.1.weight"] = _t(_tf(params, f"{r}/Skip/weight").transpose(3, 2, 0, 1))
    out["final_conv.0.weight"] = _t(_tf(params, "4x4/Conv/weight").transpose(3, 2, 0, 1))
    out["final_conv.1.bias"] = _t(_tf(params, "4x4/Conv/bias"))
    out["final_linear.0.weight"] = _t(_tf(params, "4x4/Dense0/weight").T)
    out["final_linear.0.bias"] = _t(_tf(params, "4x4/Dense0/bias"))
    out["final_linear.1.weight"] = _t(_tf(params, "Output/weight").T)
    out["final_linear.1.bias"] = _t(_tf(params, "Output/bias"))
    return out


# ---------------------------------------------------------------------------------------------------
# One call: pickle -> safetensors
# ---------------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """What `convert_stylegan2_pickle` read and wrote."""

    source_format: str
    """`nvidia-pytorch` (persistent-class pickle), `plain-state-dict` or `tf-legacy`."""
    output: Path
    size: int
    networks: list[str]
    latent_avg: bool
    classes: list[str] = field(default_factory=list)
    """Class names recorded by the stubs (never imported or executed)."""
    notes: list[str] = field(default_factory=list)


def _validate(g: dict[str, torch.Tensor], d: dict[str, torch.Tensor] | None) -> int:
    """Strict load into our networks, built on the meta device (keys and shapes only, no allocation)."""
    cfg = config_from_state_dict(g)
    with torch.device("meta"):
        gen = Generator(cfg)
        disc = Discriminator(discriminator_config_from_state_dict(d)) if d is not None else None
    for what, module, sd in (("generator", gen, g), ("discriminator", disc, d)):
        if module is None or sd is None:
            continue
        diff = set(module.state_dict()) ^ set(sd)
        if diff:
            raise ModelError(f"converted {what} keys do not match the rosinality layout: {sorted(diff)[:5]}")
        module.load_state_dict(sd, strict=True, assign=True)
    return cfg.size


def _class_names(obj: Any, acc: set[str], depth: int = 0) -> None:
    if depth > 64:
        return
    if isinstance(obj, PersistentObjectStub):
        acc.add(obj.class_name)
        _class_names(obj.state, acc, depth + 1)
    elif isinstance(obj, TorchModuleStub):
        acc.add(obj.torch_class)
        _class_names(obj.state, acc, depth + 1)
    elif isinstance(obj, dict):
        for v in obj.values():
            if isinstance(v, (dict, PersistentObjectStub, TorchModuleStub)):
                _class_names(v, acc, depth + 1)


def convert_stylegan2_pickle(
    src: str | Path, dst: str | Path, include_d: bool = True, include_g: bool = False
) -> ConversionReport:
    """Convert an NVIDIA stylegan2-ada-pytorch `.pkl`, a legacy TF StyleGAN2 `.pkl` or a plain pickled
    NVIDIA state dict into rosinality-layout safetensors (`g_ema.*`, optional `d.*`/`g.*`, `latent_avg`).

    The file is read with `SafeNetworkUnpickler` (nothing from it runs); the result is checked by loading
    it strictly into our Generator (and Discriminator) before it is written."""
    src, dst = Path(src), Path(dst)
    data = read_network_pickle(src)
    notes: list[str] = []
    classes: set[str] = set()
    d_ros: dict[str, torch.Tensor] | None = None
    g_train: dict[str, torch.Tensor] | None = None
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetworkStub) for n in data):
        fmt = "tf-legacy"
        tf_g, tf_d, tf_gs = data
        g_ros, latent_avg = tf_generator_to_rosinality(tf_gs)
        if include_d:
            d_ros = tf_discriminator_to_rosinality(tf_d)
        if include_g:
            g_train, _ = tf_generator_to_rosinality(tf_g)
    elif isinstance(data, TFNetworkStub):
        fmt = "tf-legacy"
        g_ros, latent_avg = tf_generator_to_rosinality(data)
    else:
        nets = nvidia_state_dicts(data)
        if isinstance(data, Mapping):
            for v in data.values():
                _class_names(v, classes)
        fmt = "nvidia-pytorch" if classes else "plain-state-dict"
        g_ros, latent_avg = nvidia_generator_to_rosinality(nets.get("G_ema") or nets["G"])
        if "G_ema" not in nets:
            notes.append("no G_ema in the file: the training generator G was converted as g_ema")
        if include_d and "D" in nets:
            d_ros = nvidia_discriminator_to_rosinality(nets["D"])
        if include_g and "G" in nets:
            g_train, _ = nvidia_generator_to_rosinality(nets["G"])
        notes.append("conv_clamp / fp16 settings of the NVIDIA network are not applied (rosinality has none)")
    size = _validate(g_ros, d_ros)
    if g_train is not None:
        _validate(g_train, None)
    networks = ["g_ema"] + (["d"] if d_ros is not None else []) + (["g"] if g_train is not None else [])
    save_stylegan2_safetensors(
        dst,
        g_ros,
        latent_avg=latent_avg,
        g=g_train,
        d=d_ros,
        metadata={"converted_from": src.name, "source_format": fmt},
    )
    return ConversionReport(
        source_format=fmt,
        output=dst,
        size=size,
        networks=networks,
        latent_avg=latent_avg is not None,
        classes=sorted(classes),
        notes=notes,
    )
