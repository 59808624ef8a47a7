"""paperboy: research-paper digests in, personal email digests and feeds out."""

__version__ = "0.1.0"
