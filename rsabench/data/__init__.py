"""Data files shipped with rsabench (see README.md here)."""
