"""Provider I/O: model routing (pure), the HTTP client behind one seam, and the mock provider."""
