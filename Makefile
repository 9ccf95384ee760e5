# roomsync — kubebuilder-style targets. `make help` lists them.

# The project pins Go 1.27.3 (mautrix's federation/pdu needs it); machines that default to
# GOTOOLCHAIN=local fetch it from the module proxy through this.
export GOTOOLCHAIN := go1.27.3
export CGO_ENABLED ?= 0

# The chart's appVersion is the release version; the default image is the project's at it.
VERSION ?= $(shell sed -n 's/^appVersion: *"\(.*\)"/\1/p' charts/roomsync/Chart.yaml)
IMG ?= ghcr.io/roomsync/roomsync:$(VERSION)
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
ENVTEST_K8S_VERSION ?= 1.37.2
GO_TEST_FLAGS ?= -count=1 -timeout=20m
# The packages `make test` runs under the race detector: the engine, the wire, the store and the
# controllers, where goroutines share state. They run once, with -race (which needs cgo and
# gcc), not once without and once with; the other packages run without. Empty: none.
RACE_PKGS ?= ./resolver/ ./resolver/federation/ ./store/ ./controllers/
# `make fuzz` fuzzes each target this long (hack/fuzz.sh); `make test` fuzzes each for
# FUZZ_SMOKE_TIME after the seed corpora ran as tests (0 skips it).
FUZZTIME ?= 60s
FUZZ_SMOKE_TIME ?= 3s
# `make soak`: the fault tests at these sizes (events in each fault test's room, seconds the
# flapping peer flaps) and the load test for SOAK_DURATION, under SOAK_TIMEOUT in all.
SOAK_FAULT_EVENTS ?= 20000
SOAK_FLAP_SECONDS ?= 60
SOAK_DURATION ?= 10m
SOAK_TIMEOUT ?= 150m
SOAK_TESTS ?= TestManagerKilledWhileConverging|TestPostgresRestartMidPass|TestFlappingPeer|TestDiskFull|TestLoad
# A free-enough loopback port for the throwaway PostgreSQL of `make test`.
PG_PORT ?= $(shell echo $$((20000 + $$$$ % 20000)))

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-16s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC manifests into config/, and the chart's copies of them.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	go run ./hack/chartgen -config config -chart charts/roomsync

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: verify
verify: ## Fail when generated files differ from what the generators make now.
	@hack/verify-generated.sh "$(MAKE)"

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: fmt-check
fmt-check: ## Fail when gofmt would change a file.
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: envtest
envtest: ## Build or find the envtest control plane (kube-apiserver, etcd, kubectl) under bin/.
	@hack/envtest-assets.sh >/dev/null

.PHONY: test
test: verify fmt-check vet ## Run every test: unit, store (SQLite and PostgreSQL), envtest; RACE_PKGS under -race; a short fuzz of each target.
	@KUBE_VERSION=$(ENVTEST_K8S_VERSION) hack/test-services.sh --envtest $(PG_PORT) $(MAKE) --no-print-directory test-go

# test-go is `make test`'s go commands, run by hack/test-services.sh beside PostgreSQL and the
# envtest binaries; on its own, the PostgreSQL and envtest tests find neither.
.PHONY: test-go
test-go:
	@set -e; \
	race="$(if $(strip $(RACE_PKGS)),$$(go list $(RACE_PKGS)))"; \
	go test $(GO_TEST_FLAGS) $$(go list ./... | grep -vxF "$$race"); \
	$(if $(strip $(RACE_PKGS)),CGO_ENABLED=1 go test -race $(GO_TEST_FLAGS) $(RACE_PKGS);) \
	if [ "$(FUZZ_SMOKE_TIME)" != 0 ]; then FUZZTIME=$(FUZZ_SMOKE_TIME) hack/fuzz.sh; fi

.PHONY: soak
soak: ## The fault tests of test/e2e at full size and the load test (docs/reliability.md): about an hour.
	@KUBE_VERSION=$(ENVTEST_K8S_VERSION) ROOMSYNC_SOAK=1 ROOMSYNC_FAULT_EVENTS=$(SOAK_FAULT_EVENTS) \
		ROOMSYNC_FLAP_SECONDS=$(SOAK_FLAP_SECONDS) ROOMSYNC_SOAK_DURATION=$(SOAK_DURATION) \
		hack/test-services.sh --envtest $(PG_PORT) \
		go test -count=1 -v -timeout=$(SOAK_TIMEOUT) -run '^($(SOAK_TESTS))$$' ./test/e2e/

.PHONY: fuzz
fuzz: ## Fuzz every target for FUZZTIME (60s) each, one after another (a failing input lands in testdata/fuzz).
	@FUZZTIME=$(FUZZTIME) hack/fuzz.sh

.PHONY: bench-go
bench-go: ## Run every Go benchmark of every package (the large ones skip without their env), beside a PostgreSQL.
	@hack/test-services.sh $(PG_PORT) go test -run '^$$' -bench . -benchmem -timeout 60m ./...

##@ Build

.PHONY: build
build: ## Build the roomsync binary into bin/: static (CGO off), the one the image ships.
	go build -trimpath -ldflags="-s -w -X github.com/roomsync/roomsync/internal/cli.Version=$(VERSION)" -o $(LOCALBIN)/roomsync .

.PHONY: run
run: manifests generate ## Run the manager against the cluster of the current kubeconfig.
	go run . manager

.PHONY: docker-build
docker-build: build ## Build the container image IMG from bin/roomsync (needs a Docker engine).
	docker build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the container image IMG.
	docker push $(IMG)

.PHONY: install
install: manifests ## Install the CRDs into the cluster of the current kubeconfig.
	kubectl apply -k config/crd

.PHONY: deploy
deploy: manifests ## Deploy the manager into the cluster of the current kubeconfig.
	kubectl apply -k config/default

##@ Tools

$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN)/.controller-gen go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/.controller-gen/controller-gen $@ && rmdir $(LOCALBIN)/.controller-gen

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen into bin/.

##@ Demo and benchmarks

.PHONY: demo
demo: ## A control plane, two Dendrites, the manager and a RoomSync on loopback (DEMO_NONINTERACTIVE=1: no wait).
	@go run ./hack/demo

.PHONY: bench
bench: ## Every speed goal, one table: figure, target, met/NOT met, load (hack/bench-goals.sh; ~25 min on 2 cores, sizes by env).
	@hack/bench-goals.sh

.PHONY: bench-many-rooms
bench-many-rooms: ## Goal "Many rooms": 1,000 rooms of 200 events converge, then the manager's CPU for a pass over all with nothing new (< 2 s), on SQLite and PostgreSQL.
	@KUBE_VERSION=$(ENVTEST_K8S_VERSION) ROOMSYNC_BENCH_MANY_ROOMS=1 hack/test-services.sh --envtest $(PG_PORT) \
		go test -count=1 -v -timeout=90m -run '^TestManyRoomsSteadyState$$' ./test/e2e/

.PHONY: bench-dendrite
bench-dendrite: ## Events/s of roomsync sync vs a Dendrite backfilling the same room and vs its raw /backfill (BENCH_EVENTS=2000, or BENCH_SIZES=2000,10000); then from two Dendrites vs one on a netsplit fork (BENCH_FORK_EVENTS=2000 a branch).
	@hack/bench-dendrite.sh
