"""The pure core: the registry model, semver, resolution, experiment assignment and rendering.

Nothing here does I/O, reads the environment or the clock, or imports asyncio, httpx, redis,
litestar, opentelemetry or tiktoken: every input is passed in.
"""
