# Makefile: entry points of ragops (build, demo, tests, bench).
# The real work lives in scripts/ and tests/run_all.sh; this file only names it.

BUILD_DIR ?= build
JOBS ?= 2

.PHONY: build demo demo-model demo-stop test bench clean

build:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD_DIR) -j$(JOBS)

demo:
	scripts/demo.sh

demo-model:
	scripts/demo_model.sh

demo-stop:
	scripts/demo.sh stop

test:
	tests/run_all.sh

bench: build
	@if [ -f bench/run.sh ]; then bash bench/run.sh; \
	else echo "bench/run.sh ainda não existe; nada a medir"; fi
	@if [ "$${RAGOPS_BENCH_SYNC:-1}" != 0 ]; then bash bench/sync.sh; fi

clean:
	-@if [ -d build ]; then scripts/demo.sh stop; fi
	rm -rf $(BUILD_DIR) build-test
