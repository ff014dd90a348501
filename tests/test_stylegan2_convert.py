"""NVIDIA / TF StyleGAN2 pickles -> rosinality safetensors, through the allow-list unpickler.

The pickles are built here from tiny rosinality models, mapped to the NVIDIA / TF names by this file's own
inverse mapping. Their persistent-object reconstructor and TF `Network.__setstate__` are *armed*: loading
them with plain `pickle` runs the embedded source / setstate, which writes a marker file and raises. The
converter must produce the original weights without ever creating the marker.
"""

from __future__ import annotations

import collections
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from toonbooth.core.errors import ModelError
from toonbooth.nets.stylegan2 import load_discriminator, load_generator, tiny_discriminator, tiny_generator
from toonbooth.nets.stylegan2_convert import (
    PersistentObjectStub,
    SafeNetworkUnpickler,
    convert_stylegan2_pickle,
    nvidia_generator_to_rosinality,
    read_network_pickle,
)

SIZE = 32

# ---------------------------------------------------------------------------------------------------
# rosinality -> NVIDIA / TF names (written independently of the converter, from the documented maps)
# ---------------------------------------------------------------------------------------------------


def to_nvidia_g(sd: dict[str, torch.Tensor], w_avg: torch.Tensor) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {"mapping.w_avg": w_avg.clone()}
    for k, v in sd.items():
        if k.startswith("style."):
            i = int(k.split(".")[1])
            out[f"mapping.fc{i - 1}.{k.split('.')[2]}"] = v.clone()
    out["synthesis.b4.const"] = sd["input.input"][0].clone()
    out["synthesis.b4.resample_filter"] = sd["convs.0.conv.blur.kernel"] / 4

    def layer(nv: str, ros: str, noise_key: str) -> None:
        out[f"{nv}.weight"] = sd[f"{ros}.conv.weight"][0].clone()
        out[f"{nv}.affine.weight"] = sd[f"{ros}.conv.modulation.weight"].clone()
        out[f"{nv}.affine.bias"] = sd[f"{ros}.conv.modulation.bias"].clone()
        out[f"{nv}.noise_strength"] = sd[f"{ros}.noise.weight"].reshape(()).clone()
        out[f"{nv}.bias"] = sd[f"{ros}.activate.bias"].clone()
        out[f"{nv}.noise_const"] = sd[noise_key][0, 0].clone()
        out[f"{nv}.resample_filter"] = sd["convs.0.conv.blur.kernel"] / 4

    def rgb(nv: str, ros: str) -> None:
        out[f"{nv}.torgb.weight"] = sd[f"{ros}.conv.weight"][0].clone()
        out[f"{nv}.torgb.affine.weight"] = sd[f"{ros}.conv.modulation.weight"].clone()
        out[f"{nv}.torgb.affine.bias"] = sd[f"{ros}.conv.modulation.bias"].clone()
        out[f"{nv}.torgb.bias"] = sd[f"{ros}.bias"].reshape(-1).clone()

    layer("synthesis.b4.conv1", "conv1", "noises.noise_0")
    rgb("synthesis.b4", "to_rgb1")
    res, i = 8, 0
    while f"to_rgbs.{i}.bias" in sd:
        layer(f"synthesis.b{res}.conv0", f"convs.{2 * i}", f"noises.noise_{2 * i + 1}")
        layer(f"synthesis.b{res}.conv1", f"convs.{2 * i + 1}", f"noises.noise_{2 * i + 2}")
        rgb(f"synthesis.b{res}", f"to_rgbs.{i}")
        res, i = res * 2, i + 1
    return out


def to_nvidia_d(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len({k.split(".")[1] for k in sd if k.startswith("convs.") and ".conv1." in k})
    top = 4 * 2**n
    out = {f"b{top}.fromrgb.weight": sd["convs.0.0.weight"], f"b{top}.fromrgb.bias": sd["convs.0.1.bias"]}
    for j in range(1, n + 1):
        res = top // 2 ** (j - 1)
        out[f"b{res}.conv0.weight"] = sd[f"convs.{j}.conv1.0.weight"]
        out[f"b{res}.conv0.bias"] = sd[f"convs.{j}.conv1.1.bias"]
        out[f"b{res}.conv1.weight"] = sd[f"convs.{j}.conv2.1.weight"]
        out[f"b{res}.conv1.bias"] = sd[f"convs.{j}.conv2.2.bias"]
        out[f"b{res}.skip.weight"] = sd[f"convs.{j}.skip.1.weight"]
        out[f"b{res}.conv1.resample_filter"] = sd[f"convs.{j}.conv2.0.kernel"]
    out.update(
        {
            "b4.conv.weight": sd["final_conv.0.weight"],
            "b4.conv.bias": sd["final_conv.1.bias"],
            "b4.fc.weight": sd["final_linear.0.weight"],
            "b4.fc.bias": sd["final_linear.0.bias"],
            "b4.out.weight": sd["final_linear.1.weight"],
            "b4.out.bias": sd["final_linear.1.bias"],
        }
    )
    return {k: v.clone() for k, v in out.items()}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float32).copy()


def to_tf_g(sd: dict[str, torch.Tensor], w_avg: torch.Tensor) -> tuple[dict, dict, dict]:
    """(mapping vars, synthesis vars, top-level vars) with TF StyleGAN2 names and layouts."""
    mapping = {}
    for k, v in sd.items():
        if k.startswith("style."):
            i, what = int(k.split(".")[1]), k.split(".")[2]
            mapping[f"Dense{i - 1}/{what}"] = _np(v.T if what == "weight" else v)
    syn = {"4x4/Const/const": _np(sd["input.input"])}

    def conv(tf: str, ros: str, flip: bool) -> None:
        w = _np(sd[f"{ros}.conv.weight"][0]).transpose(2, 3, 1, 0)  # (out,in,kh,kw) -> (kh,kw,in,out)
        syn[f"{tf}/weight"] = np.ascontiguousarray(w[::-1, ::-1] if flip else w)
        syn[f"{tf}/mod_weight"] = _np(sd[f"{ros}.conv.modulation.weight"].T)
        syn[f"{tf}/mod_bias"] = _np(sd[f"{ros}.conv.modulation.bias"]) - 1.0
        syn[f"{tf}/noise_strength"] = _np(sd[f"{ros}.noise.weight"]).reshape(())
        syn[f"{tf}/bias"] = _np(sd[f"{ros}.activate.bias"])

    def rgb(tf: str, ros: str) -> None:
        syn[f"{tf}/weight"] = np.ascontiguousarray(_np(sd[f"{ros}.conv.weight"][0]).transpose(2, 3, 1, 0))
        syn[f"{tf}/mod_weight"] = _np(sd[f"{ros}.conv.modulation.weight"].T)
        syn[f"{tf}/mod_bias"] = _np(sd[f"{ros}.conv.modulation.bias"]) - 1.0
        syn[f"{tf}/bias"] = _np(sd[f"{ros}.bias"]).reshape(-1)

    conv("4x4/Conv", "conv1", False)
    rgb("4x4/ToRGB", "to_rgb1")
    res, i = 8, 0
    while f"to_rgbs.{i}.bias" in sd:
        conv(f"{res}x{res}/Conv0_up", f"convs.{2 * i}", True)
        conv(f"{res}x{res}/Conv1", f"convs.{2 * i + 1}", False)
        rgb(f"{res}x{res}/ToRGB", f"to_rgbs.{i}")
        res, i = res * 2, i + 1
    for k, v in sd.items():
        if k.startswith("noises.noise_"):
            syn[f"noise{int(k.rsplit('_', 1)[1])}"] = _np(v)
    return mapping, syn, {"dlatent_avg": _np(w_avg)}


def to_tf_d(sd: dict[str, torch.Tensor]) -> dict:
    nv = to_nvidia_d(sd)
    out = {}
    for k, v in nv.items():
        if "resample_filter" in k:
            continue
        block, layer, what = k.split(".")
        res = int(block[1:])
        name = {
            "fromrgb": "FromRGB",
            "conv0": "Conv0",
            "conv1": "Conv1_down",
            "skip": "Skip",
            "conv": "Conv",
            "fc": "Dense0",
            "out": "Output",
        }[layer]
        tf = f"{res}x{res}/{name}" if layer != "out" else "Output"
        arr = _np(v)
        if what == "weight":
            arr = arr.transpose(2, 3, 1, 0) if arr.ndim == 4 else arr.T
        out[f"{tf}/{what}"] = np.ascontiguousarray(arr)
    return out


# ---------------------------------------------------------------------------------------------------
# Armed fake NVIDIA / TF modules (what a real network pickle references)
# ---------------------------------------------------------------------------------------------------

ARMED_SRC = (
    "import pathlib, os\n"
    "pathlib.Path(os.environ['TOONBOOTH_TEST_MARKER']).write_text('embedded source ran')\n"
    "raise RuntimeError('embedded source executed')\n"
)


@pytest.fixture()
def marker(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "MARKER"
    monkeypatch.setenv("TOONBOOTH_TEST_MARKER", str(path))
    return path


@pytest.fixture()
def fake_modules(monkeypatch):
    """Register `torch_utils.persistence`, `dnnlib.util`, `dnnlib.tflib.network` stand-ins whose loaders
    run code, as the real ones do (only so `pickle.dumps` can name them and a plain load can prove it)."""
    pers = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # like the real one: executes the embedded module source
        exec(compile(meta["module_src"], "<embedded>", "exec"), {})

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj

    net_mod = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

        def __setstate__(self, state):  # armed: a plain unpickle runs this
            Path(os.environ["TOONBOOTH_TEST_MARKER"]).write_text("setstate ran")
            raise RuntimeError("Network.__setstate__ executed")

    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = "Network"
    net_mod.Network = Network

    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict
    for name, mod in {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": pers,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
        "dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
        "dnnlib.tflib.network": net_mod,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, Network=Network, EasyDict=EasyDict)


class FakePersistent:
    """Pickles exactly like a `persistent_class` instance: `_reconstruct_persistent_obj(meta)`."""

    def __init__(self, class_name: str, state: dict):
        self.meta = {
            "type": "class",
            "version": 4,
            "module_src": ARMED_SRC,
            "class_name": class_name,
            "state": state,
        }

    def __reduce__(self):
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


def _module_tree(sd: dict[str, torch.Tensor], class_name: str) -> FakePersistent:
    """Nest NVIDIA-named tensors into persistent modules: parameters, buffers and `_modules`."""
    buffers = ("noise_const", "resample_filter", "w_avg")
    root: dict = {}
    for key, value in sd.items():
        node = root
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value

    def build(name: str, node: dict) -> FakePersistent:
        params, bufs, mods = collections.OrderedDict(), collections.OrderedDict(), collections.OrderedDict()
        for k, v in node.items():
            if isinstance(v, dict):
                mods[k] = build(f"training.networks.{k}", v)
            elif k in buffers:
                bufs[k] = v
            else:
                params[k] = torch.nn.Parameter(v, requires_grad=False)
        state = {
            "training": False,
            "_parameters": params,
            "_buffers": bufs,
            "_modules": mods,
            "_non_persistent_buffers_set": set(),
            "_forward_hooks": collections.OrderedDict(),
            "_init_kwargs": {"img_resolution": SIZE},
        }
        return FakePersistent(name, state)

    return build(class_name, root)


@pytest.fixture(scope="module")
def nets():
    g = tiny_generator(SIZE, seed=11)
    d = tiny_discriminator(SIZE, seed=12)
    with torch.no_grad():  # visible noise, non-trivial w_avg
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
    return g, d, torch.randn(32)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k].float(), b[k].float()), k


# ---------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------


def test_nvidia_persistent_pickle_converts_without_running_code(tmp_path, marker, fake_modules, nets):
    g, d, w_avg = nets
    data = {
        "G": _module_tree(to_nvidia_g(g.state_dict(), w_avg), "training.networks.Generator"),
        "D": _module_tree(to_nvidia_d(d.state_dict()), "training.networks.Discriminator"),
        "G_ema": _module_tree(to_nvidia_g(g.state_dict(), w_avg), "training.networks.Generator"),
        "augment_pipe": None,
        "training_set_kwargs": fake_modules.EasyDict(path="faces.zip", resolution=SIZE),
    }
    pkl = tmp_path / "network-snapshot.pkl"
    pkl.write_bytes(pickle.dumps(data, protocol=4))

    # control: the file is armed -- a plain unpickle executes the embedded source
    with pytest.raises(RuntimeError, match="embedded source executed"):
        pickle.loads(pkl.read_bytes())
    assert marker.read_text() == "embedded source ran"
    marker.unlink()

    report = convert_stylegan2_pickle(pkl, tmp_path / "out.safetensors", include_d=True)
    assert not marker.exists()
    assert report.source_format == "nvidia-pytorch"
    assert report.size == SIZE and report.networks == ["g_ema", "d"] and report.latent_avg
    assert "training.networks.Generator" in report.classes

    gen, avg = load_generator(tmp_path / "out.safetensors")
    _assert_same_state(gen.state_dict(), g.state_dict())
    assert torch.equal(avg, w_avg)
    z = torch.randn(2, 32)
    assert torch.equal(gen([z], randomize_noise=False)[0], g([z], randomize_noise=False)[0])
    disc = load_discriminator(tmp_path / "out.safetensors")
    _assert_same_state(disc.state_dict(), d.state_dict())
    x = torch.randn(2, 3, SIZE, SIZE)
    assert torch.equal(disc(x), d(x))


def test_stubs_keep_state_but_not_source(tmp_path, marker, fake_modules, nets):
    g, _, w_avg = nets
    pkl = tmp_path / "g.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": _module_tree(to_nvidia_g(g.state_dict(), w_avg), "Gen")}))
    data = read_network_pickle(pkl)
    stub = data["G_ema"]
    assert isinstance(stub, PersistentObjectStub)
    assert stub.class_name == "Gen" and stub.version == 4
    assert "module_src" not in vars(stub)
    assert isinstance(stub.state["_modules"]["synthesis"], PersistentObjectStub)
    with pytest.raises(TypeError, match="inert stub"):
        pickle.dumps(stub)
    assert not marker.exists()


def test_plain_pickled_state_dicts_convert(tmp_path, nets):
    g, d, w_avg = nets
    data = {
        "G_ema": collections.OrderedDict(to_nvidia_g(g.state_dict(), w_avg)),
        "D": collections.OrderedDict(to_nvidia_d(d.state_dict())),
    }
    pkl = tmp_path / "plain.pkl"
    pkl.write_bytes(pickle.dumps(data, protocol=2))
    report = convert_stylegan2_pickle(pkl, tmp_path / "plain.safetensors")
    assert report.source_format == "plain-state-dict"
    gen, avg = load_generator(tmp_path / "plain.safetensors")
    _assert_same_state(gen.state_dict(), g.state_dict())
    assert torch.equal(avg, w_avg)
    _assert_same_state(load_discriminator(tmp_path / "plain.safetensors").state_dict(), d.state_dict())


def test_key_map_spot_checks(nets):
    g, _, w_avg = nets
    nv = to_nvidia_g(g.state_dict(), w_avg)
    ros, avg = nvidia_generator_to_rosinality(nv)
    assert torch.equal(ros["style.1.weight"], nv["mapping.fc0.weight"])
    assert torch.equal(ros["input.input"], nv["synthesis.b4.const"].unsqueeze(0))
    assert torch.equal(ros["convs.0.conv.weight"], nv["synthesis.b8.conv0.weight"].unsqueeze(0))
    assert torch.equal(ros["convs.3.conv.modulation.bias"], nv["synthesis.b16.conv1.affine.bias"])
    assert torch.equal(ros["to_rgbs.1.bias"], nv["synthesis.b16.torgb.bias"].reshape(1, 3, 1, 1))
    assert torch.equal(ros["noises.noise_4"][0, 0], nv["synthesis.b16.conv1.noise_const"])
    assert torch.equal(ros["convs.2.noise.weight"], nv["synthesis.b16.conv0.noise_strength"].reshape(1))
    assert torch.equal(ros["to_rgbs.0.upsample.kernel"], 4 * nv["synthesis.b4.resample_filter"])
    assert torch.equal(avg, nv["mapping.w_avg"])
    conditional = dict(nv, **{"mapping.embed.weight": torch.zeros(32, 4)})
    with pytest.raises(ModelError, match="conditional"):
        nvidia_generator_to_rosinality(conditional)


def test_tf_legacy_pickle_converts_without_running_setstate(tmp_path, marker, fake_modules, nets):
    g, d, w_avg = nets
    mapping, synthesis, top = to_tf_g(g.state_dict(), w_avg)
    net = fake_modules.Network

    def tf_net(name, variables, components, kwargs):
        return net(
            {
                "version": 4,
                "name": name,
                "static_kwargs": kwargs,
                "components": components,
                "build_module_src": ARMED_SRC,
                "build_func_name": "G_main",
                "variables": list(variables.items()),
            }
        )

    def gs():
        comps = {
            "mapping": tf_net("G_mapping", mapping, {}, {}),
            "synthesis": tf_net("G_synthesis", synthesis, {}, {}),
        }
        return tf_net("G", top, comps, {"resolution": SIZE, "architecture": "skip"})

    data = (gs(), tf_net("D", to_tf_d(d.state_dict()), {}, {"resolution": SIZE}), gs())
    pkl = tmp_path / "toonify-tf.pkl"
    pkl.write_bytes(pickle.dumps(data, protocol=2))

    with pytest.raises(RuntimeError, match="__setstate__ executed"):
        pickle.loads(pkl.read_bytes())
    assert marker.exists()
    marker.unlink()

    report = convert_stylegan2_pickle(pkl, tmp_path / "tf.safetensors", include_d=True, include_g=True)
    assert not marker.exists()
    assert report.source_format == "tf-legacy" and report.networks == ["g_ema", "d", "g"]
    gen, avg = load_generator(tmp_path / "tf.safetensors")
    _assert_same_state(gen.state_dict(), g.state_dict())
    assert torch.equal(avg, w_avg)
    z = torch.randn(2, 32)
    assert torch.equal(gen([z], randomize_noise=False)[0], g([z], randomize_noise=False)[0])
    _assert_same_state(load_discriminator(tmp_path / "tf.safetensors").state_dict(), d.state_dict())


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['TOONBOOTH_TEST_MARKER']}",))


class EvalExploit:
    def __reduce__(self):
        return (
            eval,
            ("__import__('pathlib').Path(__import__('os').environ['TOONBOOTH_TEST_MARKER']).touch()",),
        )


@pytest.mark.parametrize("payload, name", [(Exploit, "system"), (EvalExploit, "builtins.eval")])
def test_malicious_pickle_is_refused_without_side_effects(tmp_path, marker, payload, name):
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": payload()}))
    with pytest.raises(ModelError) as err:
        convert_stylegan2_pickle(pkl, tmp_path / "evil.safetensors")
    msg = str(err.value)
    assert "refusing to unpickle" in msg and name in msg and "evil.pkl" in msg
    assert not marker.exists()
    assert not (tmp_path / "evil.safetensors").exists()


def test_unknown_class_and_persistent_ids_are_refused(tmp_path):
    pkl = tmp_path / "obj.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": collections.Counter(a=1)}))
    with pytest.raises(ModelError, match="collections.Counter"):
        read_network_pickle(pkl)

    class PidPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "ext" if isinstance(obj, str) and obj == "x" else None

    import io

    buf = io.BytesIO()
    PidPickler(buf).dump({"G_ema": "x"})
    with pytest.raises(ModelError, match="persistent ids"):
        SafeNetworkUnpickler(io.BytesIO(buf.getvalue())).load()


def test_not_a_stylegan_pickle(tmp_path):
    pkl = tmp_path / "other.pkl"
    pkl.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelError, match="G_ema"):
        convert_stylegan2_pickle(pkl, tmp_path / "x.safetensors")
