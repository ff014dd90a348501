"""LoRA (Hu et al. 2021, arXiv:2106.09685) on the UNet's attention projections, optionally on the text
encoders' too — the training method of kohya-ss `sd-scripts` and diffusers' `train_text_to_image_lora` /
`train_dreambooth_lora` (DreamBooth-LoRA: the same adapters, a prior-preservation loss in the loop).

The UNet adapter is added with diffusers' `unet.add_adapter(LoraConfig)`; text encoders get theirs from
`peft.inject_adapter_in_model` (transformers' own `add_adapter` wants a newer peft than installed). B starts
at zero (`init_lora_weights="gaussian"`), so step 0 is the base model exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from .loop import encode_text

TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


class LoraMethod:
    """Trainable LoRA adapters; text embeddings are cached when the text encoders are frozen."""

    def __init__(
        self,
        arch: str,
        unet: Any,
        text_encoders: list[Any],
        tokenizers: list[Any],
        *,
        rank: int,
        alpha: float,
        target_modules: list[str],
        train_text_encoder: bool,
        learning_rate: float,
        text_encoder_lr: float | None,
        dropout: float,
        device: torch.device,
        seed: int,
    ):
        from peft import LoraConfig, inject_adapter_in_model

        self.arch = arch
        self.unet = unet
        self.text_encoders = text_encoders
        self.tokenizers = tokenizers
        self.device = device
        self.train_text_encoder = train_text_encoder
        self.learning_rate = learning_rate
        self.text_encoder_lr = text_encoder_lr or learning_rate
        self.rank, self.alpha = rank, alpha
        torch.manual_seed(seed)  # LoRA A init (kaiming) is drawn from the global generator
        self.unet_config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            init_lora_weights="gaussian",
            target_modules=target_modules,
        )
        unet.requires_grad_(False)
        unet.add_adapter(self.unet_config)
        self.te_config = None
        for te in text_encoders:
            te.requires_grad_(False)
        if train_text_encoder:
            self.te_config = LoraConfig(
                r=rank, lora_alpha=alpha, lora_dropout=dropout, init_lora_weights="gaussian",
                target_modules=TEXT_ENCODER_TARGETS,
            )  # fmt: skip
            for te in text_encoders:
                inject_adapter_in_model(self.te_config, te)
        self._cast_trainables_fp32()
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _cast_trainables_fp32(self) -> None:
        for module in [self.unet, *self.text_encoders]:
            for name, p in module.named_parameters():
                if "lora_" in name:
                    p.data = p.data.float()
                    p.requires_grad_(True)

    @property
    def components(self) -> dict[str, Any]:
        names = ["text_encoder", "text_encoder_2"][: len(self.text_encoders)]
        return {"unet": self.unet, **dict(zip(names, self.text_encoders, strict=True))}

    def param_groups(self) -> list[dict[str, Any]]:
        groups = [
            {"params": [p for n, p in self.unet.named_parameters() if "lora_" in n], "lr": self.learning_rate}
        ]
        if self.train_text_encoder:
            te_params = [p for te in self.text_encoders for n, p in te.named_parameters() if "lora_" in n]
            groups.append({"params": te_params, "lr": self.text_encoder_lr})
        return groups

    def trainables(self) -> dict[str, torch.Tensor]:
        out = {}
        for comp, module in self.components.items():
            for n, p in module.named_parameters():
                if "lora_" in n:
                    out[f"{comp}.{n}"] = p
        return out

    def encode(
        self, captions: list[str], timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.train_text_encoder:
            return encode_text(self.arch, self.tokenizers, self.text_encoders, captions, self.device)
        missing = [c for c in dict.fromkeys(captions) if c not in self._cache]
        if missing:
            with torch.no_grad():
                embeds, pooled = encode_text(
                    self.arch, self.tokenizers, self.text_encoders, missing, self.device
                )
            for i, c in enumerate(missing):
                self._cache[c] = (embeds[i].float(), pooled[i].float() if pooled is not None else None)
        embeds = torch.stack([self._cache[c][0] for c in captions])
        pooled = torch.stack([self._cache[c][1] for c in captions]) if self.arch == "sdxl" else None  # type: ignore[misc]
        return embeds, pooled

    def lora_layers(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, Any]]]:
        """PEFT state dicts per component (keys without the component prefix) and their LoraConfig dicts."""
        from peft.utils import get_peft_model_state_dict

        layers: dict[str, dict[str, torch.Tensor]] = {}
        metas: dict[str, dict[str, Any]] = {}
        layers["unet"] = get_peft_model_state_dict(self.unet)
        metas["unet"] = self.unet_config.to_dict()
        if self.train_text_encoder and self.te_config is not None:
            for comp, te in self.components.items():
                if comp != "unet":
                    layers[comp] = get_peft_model_state_dict(te)
                    metas[comp] = self.te_config.to_dict()
        clean = {
            comp: {k: v.detach().float().cpu().contiguous() for k, v in sd.items()}
            for comp, sd in layers.items()
        }
        return clean, metas
