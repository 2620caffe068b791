# flagroll container image.
#
#   podman build --isolation=chroot -t flagroll:0.1.0 .                      # public python:3.11-slim base
#   podman build --isolation=chroot --build-arg BASE_IMAGE=localhost/flagroll-base:bookworm \
#     -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
#     --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt -t flagroll:0.1.0 .   # a local base
#
# scripts/image-test builds it with a local Debian base and smoke-tests it. Any base works that has
# python3 (>= 3.11) with the venv module at the same path in both stages.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Marks this stage's images, so that scripts/image-test can remove them after the build.
LABEL io.flagroll.build-stage="true"
# A CA bundle for pip, when the build needs one mounted from the host (empty: the base's own).
ARG PIP_CERT=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/flagroll
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY controller/ controller/
RUN if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi \
 && /opt/flagroll/bin/pip install --quiet -c constraints.txt . \
 && /opt/flagroll/bin/pip uninstall --quiet --yes pip \
 && /opt/flagroll/bin/python -m compileall -q /opt/flagroll/lib \
 && find /opt/flagroll -name '*.pyi' -delete

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="flagroll" \
      org.opencontainers.image.description="Feature-flag rollout controller: policies in Git, guardrails from Prometheus, flags for OpenFeature/flagd" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric user, so that runAsNonRoot can check it without a passwd lookup.
RUN groupadd --gid 10001 flagroll \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin flagroll
COPY --from=build /opt/flagroll /opt/flagroll
COPY policies/ /usr/share/flagroll/policies/
# Nothing is written at run time except the flag file, its lock and the decision log, all on mounted
# volumes: the root filesystem can be read-only.
ENV PATH=/opt/flagroll/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["flagroll"]
CMD ["--help"]
