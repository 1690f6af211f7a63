"""Prompt Gateway: an OpenAI-compatible proxy serving versioned, tested prompts."""
