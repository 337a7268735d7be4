# syntax=docker/dockerfile:1
# The headless-dns image (deploy/cluster, deploy/sidecar).
#
# Build: docker build --build-arg HEADLESS_DNS_COMMIT=$(git rev-parse --short HEAD) -t headless-dns:0.1.0 .
#
# Two stages: a Rust toolchain builds the binary with the `dist` profile
# (release without debug info, symbols stripped: Cargo.toml) from the locked
# dependency set; the runtime is distroless (glibc and libgcc, no shell, no
# package manager) running as the non-root user 65532. The binary carries
# the file capability cap_net_bind_service so that user can bind port 53:
# Kubernetes' `capabilities.add` alone does not reach a non-root process's
# effective set (CoreDNS's image does the same).

FROM rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY config ./config
# The allocator's settings (jemalloc, one arena) are fixed at build time there.
COPY .cargo ./.cargo
# There is no .git in the build context: `headless-dns --version` takes the
# commit from this argument (build.rs).
ARG HEADLESS_DNS_COMMIT=unknown
ENV HEADLESS_DNS_COMMIT=${HEADLESS_DNS_COMMIT}
RUN cargo build --profile dist --locked --bin headless-dns \
 && cp target/dist/headless-dns /headless-dns \
 && setcap cap_net_bind_service=+ep /headless-dns

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /headless-dns /usr/local/bin/headless-dns
USER 65532:65532
EXPOSE 53/udp 53/tcp 8080/tcp
ENTRYPOINT ["/usr/local/bin/headless-dns"]
CMD ["serve", "--source", "kubernetes", "--listen", "0.0.0.0:53", "--admin", "0.0.0.0:8080"]
