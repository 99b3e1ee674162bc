"""minisir: self-play reasoning training on one GPU."""
__version__ = "0.1.0"
