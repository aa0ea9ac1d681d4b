# Makefile: entry points of ragops (build, demo, tests, bench).
# The real work lives in scripts/ and tests/run_all.sh; this file only names it.

BUILD_DIR ?= build
JOBS ?= 2

DEB_DIR ?= build-deb

.PHONY: build deb package demo demo-model demo-stop test bench clean

build:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD_DIR) -j$(JOBS)

# The Debian package (docs/instalacao.md): Release build in $(DEB_DIR), cpack -G DEB;
# the .deb lands in $(DEB_DIR)/ (ragops_<version>_<arch>.deb).
deb:
	cmake -S . -B $(DEB_DIR) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(DEB_DIR) -j$(JOBS) --target ragops ragops-embed-server
	cd $(DEB_DIR) && cpack -G DEB

package: deb

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
	@if [ "$${RAGOPS_BENCH_BATCH:-1}" != 0 ]; then bash bench/batch.sh; fi
	@if [ "$${RAGOPS_BENCH_QUOTA:-1}" != 0 ]; then bash bench/quota.sh; fi

clean:
	-@if [ -d build ]; then scripts/demo.sh stop; fi
	rm -rf $(BUILD_DIR) build-test $(DEB_DIR)
