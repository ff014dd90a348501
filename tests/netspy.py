"""Test helper: record every attempt of this process to reach the network, instead of timing it.

`record_network(monkeypatch)` wraps `socket.getaddrinfo` (every host name lookup, also the ones that
fail before a connection is tried) and `socket.socket.connect` (every TCP / UDP connect) and returns the
list they append to: "lookup HOST:PORT" and "connect HOST:PORT" strings in call order. A test that says
"fails fast without touching the network" asserts the list is empty; one that talks to a closed
loopback port asserts exactly which addresses were tried, once each.
"""

from __future__ import annotations

import socket

import pytest


def record_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Start recording network attempts (undone with `monkeypatch`); returns the live record."""
    seen: list[str] = []
    real_lookup = socket.getaddrinfo
    real_connect = socket.socket.connect

    def lookup(host, port, *args, **kwargs):
        seen.append(f"lookup {host}:{port}")
        return real_lookup(host, port, *args, **kwargs)

    def connect(self, address):
        if isinstance(address, tuple) and len(address) >= 2:
            seen.append(f"connect {address[0]}:{address[1]}")
        else:  # a Unix socket path: not the network, but still recorded
            seen.append(f"connect {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen
