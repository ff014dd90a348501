"""toonbooth.cli layer."""
