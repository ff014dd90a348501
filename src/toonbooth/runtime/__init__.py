"""toonbooth.runtime layer."""
