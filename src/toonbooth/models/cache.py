"""A small LRU of loaded models, bounded by item count (and freed from the GPU on eviction).

Engines never hold models in module globals; the runtime owns one cache per device and hands it
down through `ctx.models`.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class ModelCache:
    def __init__(self, max_items: int = 2):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0
        self.hits = 0

    def get_or_load(self, key: tuple, loader: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = loader()
        with self._lock:
            self.loads += 1
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._evict_oldest()
        return value

    def _evict_oldest(self) -> None:
        _key, value = self._items.popitem(last=False)
        del value
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

    def clear(self) -> None:
        with self._lock:
            while self._items:
                self._evict_oldest()
