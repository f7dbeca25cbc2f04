"""hwpoison farm: A/B runs of Linux memory-failure handling in QEMU guests."""

__version__ = "0.1.0"
