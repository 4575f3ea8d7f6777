# One image for migrations, the API and the workers (the role is the command).
#
#   docker build -t benignity .                       CPU torch from TORCH_INDEX
#   docker build -t benignity-gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# Layers, from the least to the most often changed: Debian's python3 (3.11) and gcc,
# torch, the dependencies named in pyproject.toml, then the project itself, so a code
# change reinstalls only the last layer.
#
# Offline or behind a TLS proxy, put files in deploy/context/ before building
# (deploy/smoke.sh does):
#   deploy/context/wheels/torch-*.whl   installed instead of downloading torch
#   deploy/context/ca/*.crt              extra CA certificates trusted by pip and apt
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_FROM_CONTEXT=yes
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    BENIGNITY_HOME=/data
WORKDIR /app

# gcc builds the training engine's C kernel at first use (it falls back to torch without it)
COPY deploy/context/ca/ /usr/local/share/ca-certificates/extra/
RUN apt-get -o Acquire::Check-Valid-Until=false update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv gcc libc6-dev ca-certificates \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

COPY deploy/context/wheels/ /tmp/wheels/
RUN if [ "$TORCH_FROM_CONTEXT" = yes ] && ls /tmp/wheels/torch-${TORCH_VERSION}*.whl >/dev/null 2>&1; then \
        pip install /tmp/wheels/torch-${TORCH_VERSION}*.whl; \
    else \
        pip install --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple \
            "torch==${TORCH_VERSION}"; \
    fi && rm -rf /tmp/wheels

COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        | grep -v '^torch' > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY README.md /src/
COPY service /src/service
COPY workers /src/workers
COPY migrations /src/migrations
RUN cp pyproject.toml /src/ && cd /src && pip install --no-deps . && cd /app && rm -rf /src \
    && useradd --create-home --uid 1000 benignity && mkdir -p /data && chown benignity /data
USER benignity
EXPOSE 8000
# Each role's check is set where the role is chosen (docker-compose.yml): the API's
# `benignity healthcheck api`, a worker's `benignity healthcheck worker`.
CMD ["benignity", "api", "--host", "0.0.0.0", "--port", "8000"]
