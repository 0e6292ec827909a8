# tapedeck in a container: build with cargo, run as a non-root user on a
# slim Debian. TLS roots are compiled in (webpki-roots), so the runtime
# image needs no CA bundle; mount one and pass --ca-file for a private CA.
#
#   docker build -t tapedeck .
#   docker run --rm -v "$PWD/captures:/data/captures" -p 8080:8080 tapedeck \
#       record --upstream http://chat:8000 --listen 0.0.0.0:8080 --capture captures/staging.db

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tapedeck

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home tapedeck
COPY --from=build /src/target/release/tapedeck /usr/local/bin/tapedeck
COPY replay-profiles /usr/share/tapedeck/replay-profiles
USER 10001
WORKDIR /data
EXPOSE 8080
ENTRYPOINT ["tapedeck"]
CMD ["--help"]
