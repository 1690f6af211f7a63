# syntax=docker/dockerfile:1
# Build from the repository root, with the tiktoken encodings as a named build context so the
# image never downloads them at run time:
#   docker build --build-context tiktoken=../shared/tiktoken -t prompt-gateway .
#   docker run -p 8080:8080 -v gateway-data:/data -e GATEWAY_UPSTREAM_URL=mock prompt-gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_STORE_URL=sqlite:////data/gateway.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . && useradd --system --home /app gateway \
    && mkdir /data && chown gateway /data
COPY config ./config
COPY --from=tiktoken . /opt/tiktoken

USER gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
CMD ["gateway", "serve"]
