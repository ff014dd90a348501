"""`/sdapi/v1/options` store: AUTOMATIC1111's settings (`config.json` there), persisted as JSON in the
data folder (`<data_dir>/a1111_options.json`).

A1111 keeps one global options object; here each user has their own (one user's
`sd_model_checkpoint` never changes another's requests). Known keys are type-checked; other keys are
kept as given (A1111 clients store their own), within size bounds.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.fs import atomic_write_text

MAX_KEYS = 300
MAX_VALUE_CHARS = 10_000

# A1111 defaults the common clients read (modules/shared_options.py)
DEFAULTS: dict[str, Any] = {
    "sd_model_checkpoint": None,
    "sd_checkpoint_hash": None,
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "eta_noise_seed_delta": 0,
    "send_seed": True,
    "send_size": True,
    "samples_format": "png",
    "samples_save": True,
    "grid_save": True,
    "enable_pnginfo": True,
    "live_previews_enable": True,
    "show_progress_every_n_steps": 1,
    "sd_checkpoints_limit": 1,
    "img2img_fix_steps": False,
    "jpeg_quality": 80,
}
_TYPES: dict[str, tuple[type, ...]] = {
    "sd_model_checkpoint": (str,),
    "sd_vae": (str,),
    "CLIP_stop_at_last_layers": (int,),
    "eta_noise_seed_delta": (int,),
    "send_seed": (bool,),
    "send_size": (bool,),
    "samples_format": (str,),
    "enable_pnginfo": (bool,),
    "live_previews_enable": (bool,),
    "show_progress_every_n_steps": (int,),
    "jpeg_quality": (int,),
}


class OptionsStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read_all(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, user: str) -> dict[str, Any]:
        with self._lock:
            mine = self._read_all().get(user, {})
        return {**DEFAULTS, **(mine if isinstance(mine, dict) else {})}

    def update(self, user: str, changes: dict[str, Any], check_checkpoint=None) -> dict[str, Any]:
        """Validate and persist `changes` for `user`; `check_checkpoint(name) -> title` resolves
        `sd_model_checkpoint` (raising InputError when it is unknown)."""
        if not isinstance(changes, dict):
            raise InputError("body", "options must be a JSON object", changes)
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if not isinstance(key, str) or not 0 < len(key) <= 100:
                raise InputError("body", f"option names are 1-100 characters, got {str(key)[:100]!r}", key)
            types = _TYPES.get(key)
            if types is not None and value is not None:
                ok = isinstance(value, types) and not (bool not in types and isinstance(value, bool))
                if not ok:
                    raise InputError(key, f"must be {types[0].__name__}, got {value!r}"[:200], value)
            if key == "CLIP_stop_at_last_layers" and value is not None and not 1 <= value <= 12:
                raise InputError(key, f"must be in [1, 12], got {value}", value)
            if len(json.dumps(value, default=str)) > MAX_VALUE_CHARS:
                raise InputError(key, f"value is over {MAX_VALUE_CHARS} characters", None)
            if key == "sd_model_checkpoint" and value is not None and check_checkpoint is not None:
                value = check_checkpoint(value)
            clean[key] = value
        with self._lock:
            data = self._read_all()
            mine = data.get(user, {}) if isinstance(data.get(user), dict) else {}
            mine.update(clean)
            if len(mine) > MAX_KEYS:
                raise InputError("body", f"at most {MAX_KEYS} options are stored per user", len(mine))
            data[user] = mine
            atomic_write_text(self.path, json.dumps(data, indent=1, default=str))
        return {**DEFAULTS, **mine}
