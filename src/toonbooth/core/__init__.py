"""Torch-free foundation: job specs, typed events, errors, settings, safe image decoding."""
