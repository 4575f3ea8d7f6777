# One image for the API and the workers.
#   docker build -t benignity .                                  (CPU torch)
#   docker build -t benignity-gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim AS base
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 BENIGNITY_HOME=/data
WORKDIR /app
# gcc builds the training engine's C kernel at first use (it falls back to torch without it)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install . && useradd --create-home --uid 1000 benignity && mkdir -p /data \
    && chown benignity /data
USER benignity
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import httpx; httpx.get('http://127.0.0.1:8000/healthz').raise_for_status()" || exit 1
CMD ["benignity", "api", "--host", "0.0.0.0", "--port", "8000"]
