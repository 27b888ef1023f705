# The Projector host with the shop projections built in.
# Untested here (no Docker engine on the build machines); see README.
# Builds the host (with its EventStoreDB client) and the shop projections.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Guest toolchain (Debian's rustc-web + std source), then host and guests.
RUN bash scripts/setup-toolchain.sh \
 && cargo build --release -p projector -p shop-events \
 && target/release/projector build projections/order-summary \
 && target/release/projector build projections/customer-stats

FROM debian:bookworm-slim
COPY --from=build /src/target/release/projector /src/target/release/shop-events /usr/local/bin/
# Modules shipped with the image; mount your own folder over /projections to replace them.
COPY --from=build /src/target/projections/ /projections/
COPY examples/shop/docker.toml /etc/projector/projector.toml
VOLUME ["/data", "/events"]
ENTRYPOINT ["projector"]
CMD ["run", "--config", "/etc/projector/projector.toml"]
