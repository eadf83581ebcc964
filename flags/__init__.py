"""absl flag definitions of train.py and sample.py (import as `from flags import glow_flags`)."""
