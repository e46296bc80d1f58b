"""A wire-exact Roo Code IPC peer in Python, and the ZeroMQ bridge in front of it."""

__version__ = "0.1.0"
