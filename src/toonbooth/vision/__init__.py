"""toonbooth.vision layer."""
