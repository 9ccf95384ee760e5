# Build the roomsync binary: static, CGO off (the SQLite driver is pure Go).
FROM golang:1.27 AS builder
ARG TARGETOS
ARG TARGETARCH
ENV GOTOOLCHAIN=go1.27.3
WORKDIR /workspace
# Modules first, so source edits do not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY main.go ./
COPY api/ api/
COPY controllers/ controllers/
COPY internal/ internal/
COPY resolver/ resolver/
COPY store/ store/
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o roomsync .

# Distroless, non-root: nothing in the image but the binary and CA certificates.
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/roomsync /roomsync
USER 65532:65532
ENTRYPOINT ["/roomsync"]
CMD ["manager"]
