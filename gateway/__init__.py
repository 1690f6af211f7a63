"""Prompt Gateway: an OpenAI-compatible proxy serving versioned, tested prompts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prompt-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
