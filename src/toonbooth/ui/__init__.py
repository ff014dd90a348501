"""toonbooth.ui layer."""
