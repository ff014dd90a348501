"""The loaded-model cache: least-recently-used, budgeted in bytes of RAM and of device memory (VRAM).

Every model family shares it (SD pipelines, ControlNets, SAM, LaMa, pose nets, ...). After a load the
cache measures what the object holds (parameters and buffers of its torch modules, by the device they
live on) and evicts the least recently used items until both budgets hold again — never the item just
loaded, so one model larger than the budget still runs (and is reported). `max_items` is an optional
extra cap. Hits, loads and evictions are counted for tests and `/v1/status`.

Engines never hold models in module globals; the runtime owns one cache per device and hands it down
through `ctx.models`.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass
class _Item:
    value: Any
    ram: int
    vram: int


class CacheStats(BaseModel):
    items: int
    loads: int
    hits: int
    evictions: int
    ram_bytes: int
    vram_bytes: int
    ram_budget: int
    vram_budget: int
    keys: list[str]


def _modules_of(obj: Any) -> list[Any]:
    """The torch modules an object holds: itself, a pipeline's components, or its module attributes."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    if isinstance(obj, torch.nn.Module):
        return [obj]
    components = getattr(obj, "components", None) if not isinstance(obj, dict) else obj
    values = components.values() if isinstance(components, dict) else vars(obj).values() if hasattr(obj, "__dict__") else ()
    return [v for v in values if isinstance(v, torch.nn.Module)]


def measure_bytes(obj: Any) -> tuple[int, int]:
    """(bytes in host memory, bytes on an accelerator) of the tensors `obj` holds; shared tensors once."""
    seen: set[tuple[str, int]] = set()
    ram = vram = 0
    for module in _modules_of(obj):
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "meta":
                continue
            key = (str(tensor.device), tensor.data_ptr())
            if key in seen:
                continue
            seen.add(key)
            n = tensor.numel() * tensor.element_size()
            if tensor.device.type == "cpu":
                ram += n
            else:
                vram += n
    return ram, vram


class ModelCache:
    def __init__(self, ram_budget: int = 16 << 30, vram_budget: int = 16 << 30, max_items: int | None = None):
        if ram_budget < 0 or vram_budget < 0:
            raise ValueError(f"budgets must be >= 0, got ram={ram_budget} vram={vram_budget}")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.ram_budget = ram_budget
        self.vram_budget = vram_budget
        self.max_items = max_items
        self._items: OrderedDict[tuple, _Item] = OrderedDict()
        self._lock = threading.RLock()
        self._loading: dict[tuple, threading.Lock] = {}
        self.loads = 0
        self.hits = 0
        self.evictions = 0

    def get_or_load(self, key: tuple, loader: Callable[[], Any]) -> Any:
        """The cached value of `key`, or `loader()`'s (then measured, and older items evicted to budget).
        Two threads asking for the same key load it once."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key].value
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._items:  # loaded by another thread meanwhile
                    self._items.move_to_end(key)
                    self.hits += 1
                    return self._items[key].value
            value = loader()
            ram, vram = measure_bytes(value)
            with self._lock:
                self.loads += 1
                self._items[key] = _Item(value, ram, vram)
                self._items.move_to_end(key)
                self._loading.pop(key, None)
                self._shrink(keep=key)
        return value

    def _totals(self) -> tuple[int, int]:
        return sum(i.ram for i in self._items.values()), sum(i.vram for i in self._items.values())

    def _shrink(self, keep: tuple) -> None:
        while len(self._items) > 1:
            ram, vram = self._totals()
            over_items = self.max_items is not None and len(self._items) > self.max_items
            if not over_items and ram <= self.ram_budget and vram <= self.vram_budget:
                return
            oldest = next(iter(self._items))
            if oldest == keep:
                return
            self._evict(oldest)

    def _evict(self, key: tuple) -> None:
        item = self._items.pop(key)
        self.evictions += 1
        del item
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    def keys(self) -> list[tuple]:
        with self._lock:
            return list(self._items)

    def bytes_used(self) -> tuple[int, int]:
        with self._lock:
            return self._totals()

    def stats(self) -> CacheStats:
        with self._lock:
            ram, vram = self._totals()
            return CacheStats(
                items=len(self._items), loads=self.loads, hits=self.hits, evictions=self.evictions,
                ram_bytes=ram, vram_bytes=vram, ram_budget=self.ram_budget, vram_budget=self.vram_budget,
                keys=[":".join(str(p) for p in k[:2]) for k in self._items],
            )  # fmt: skip

    def evict_where(self, predicate: Callable[[tuple], bool]) -> int:
        """Drop the items whose key satisfies `predicate` (A1111's unload-checkpoint); how many went."""
        with self._lock:
            keys = [k for k in self._items if predicate(k)]
            for key in keys:
                self._evict(key)
            return len(keys)

    def clear(self) -> None:
        with self._lock:
            while self._items:
                self._evict(next(iter(self._items)))
