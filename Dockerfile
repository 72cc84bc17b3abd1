# Multi-stage build of a small non-root cexdr image.
#   docker build -t cexdr:0.1.0 .
# Not built in this project's CI (no container engine on its machines);
# see docs/operations.md.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin cexdr \
 && strip target/release/cexdr

# distroless "cc": glibc + libgcc + CA certificates, no shell, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/cexdr /usr/local/bin/cexdr
USER 65532:65532
EXPOSE 9847
ENTRYPOINT ["/usr/local/bin/cexdr"]
CMD ["--help"]
