"""toonbooth.nets layer."""
