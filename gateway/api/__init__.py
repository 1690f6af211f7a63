"""The HTTP surface: the OpenAI-compatible proxy, operations endpoints, and the app factory."""
