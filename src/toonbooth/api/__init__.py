"""toonbooth.api layer."""
