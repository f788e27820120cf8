# Builds the condenser binary and runs it on proxy.toml.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libclang-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin condenser

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/condenser /usr/local/bin/condenser
COPY proxy.toml /etc/condenser/proxy.toml
EXPOSE 8787
ENV CONDENSER__SERVER__LISTEN=0.0.0.0:8787
ENTRYPOINT ["condenser", "serve", "--config", "/etc/condenser/proxy.toml"]
