# Build from the repository root with plain Docker (no BuildKit, no sibling folder needed):
#   docker build -t prompt-gateway .
#   docker run -p 8080:8080 -v gateway-data:/data -e GATEWAY_UPSTREAM_URL=mock prompt-gateway
# The tiktoken encodings ship inside the package, so the image never downloads them. /data holds
# the SQLite store and the last good registry snapshot (the only place the gateway user writes).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_STORE_URL=sqlite:////data/gateway.db \
    GATEWAY_SNAPSHOT_PATH=/data/gateway.snapshot.json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . && useradd --system --home /app gateway \
    && mkdir /data && chown gateway /data
COPY config ./config

USER gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
CMD ["gateway", "serve"]
