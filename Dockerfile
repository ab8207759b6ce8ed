# RecipeStore images. Build the binaries first, then one image per target:
#
#   cargo build --release --workspace
#   docker build --target node     -t recipestore-node:dev .
#   docker build --target operator -t recipestore-operator:dev .
#
# PROFILE=debug packages a debug build instead (the e2e suite does, to reuse
# the test build).
#
# The base is a plain Debian image (the binaries need only glibc). Where no
# registry is reachable, scripts/base-image.sh creates it with debootstrap.
ARG BASE_IMAGE=debian:bookworm-slim
ARG PROFILE=release

FROM ${BASE_IMAGE} AS base
ARG PROFILE=release
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/recipestore/recipestore" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.vendor="RecipeStore"
# A fixed non-root identity that matches the pod security context.
RUN groupadd --system --gid 10001 recipestore \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent recipestore

FROM base AS node
LABEL org.opencontainers.image.title="recipestore-node" \
      org.opencontainers.image.description="A RecipeStore node: Raft-replicated recipe storage, with recipectl"
ARG PROFILE
COPY target/${PROFILE}/recipestore-node target/${PROFILE}/recipectl /usr/local/bin/
RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/recipestore
USER 10001:10001
ENV RECIPESTORE_DATA_DIR=/var/lib/recipestore
VOLUME ["/var/lib/recipestore"]
EXPOSE 7070 7071 9090
ENTRYPOINT ["/usr/local/bin/recipestore-node"]

FROM base AS operator
LABEL org.opencontainers.image.title="recipestore-operator" \
      org.opencontainers.image.description="The RecipeStore Kubernetes operator"
ARG PROFILE
COPY target/${PROFILE}/recipestore-operator /usr/local/bin/
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/recipestore-operator"]
