"""Model catalog, registry, probe, loader, cache, A1111 prompt syntax and sampler names."""
