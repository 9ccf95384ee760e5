# The image ships the binary `make build` makes (static, CGO off: the SQLite driver is pure
# Go), so the image and bin/roomsync are the same program: `make docker-build IMG=…`.
# Distroless, non-root: nothing in the image but the binary and CA certificates.
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY bin/roomsync /roomsync
USER 65532:65532
ENTRYPOINT ["/roomsync"]
CMD ["manager"]
