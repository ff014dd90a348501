"""toonbooth.training layer."""
