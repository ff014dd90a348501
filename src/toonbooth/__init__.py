"""toonbooth: photos to personal characters."""
__version__ = "0.1.0"
