# tunelens — `make` builds ./tunelens (CPU-only when nvcc is absent), `make test` runs all tests.
# `make asan`: the whole suite under ASan+UBSan; `make fuzz`: the libFuzzer harnesses (tests/fuzz/).
CC      ?= gcc
OPT     ?= -O2 -march=native -g   # e.g. make OPT="-O2 -march=x86-64-v3" for a portable build
# Object folder, the binary `make test` builds and checks, and sanitizer flags (compile + link):
# `make asan` sets them to build-asan, build-asan/tunelens and ASan + UBSan.
B       ?= build
TUNELENS ?= tunelens
SAN     ?=
# OpenBLAS's OpenMP build shares libgomp's thread pool with our own OpenMP loops; the
# pthreads build runs a second pool, and the two spin against each other on few cores.
BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
ALL_CFLAGS = $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -fopenmp -Isrc \
           -I/usr/include/x86_64-linux-gnu/openblas-openmp $(SAN) $(CFLAGS)
LDLIBS  += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lpcre2-8 -lcjson -lcurl -lzip -lyaml -lm -fopenmp
TEST_LDLIBS = $(LDLIBS) -lcmocka

SRC      := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
OBJ      := $(SRC:%.c=$(B)/%.o)

# CUDA backend (src/ops/cuda/*.cu) when nvcc is found; without it, backend_cuda() says so.
NVCC      ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]
# It is a library of its own, libtunelens_cuda.so (beside the binary), that the program opens
# on first use: tunelens itself starts without any CUDA library.
CUDA_SO   = $(B)/libtunelens_cuda.so
ifneq ($(NVCC),)
CU_SRC   := $(shell find src -name '*.cu' | sort)
CU_OBJ   := $(CU_SRC:%.cu=$(B)/%.o)
ALL_CFLAGS += -DTUNELENS_CUDA -DTUNELENS_CUDA_SO='"$(abspath $(CUDA_SO))"'
CUDA_TARGETS = $(CUDA_SO) $(dir $(TUNELENS))libtunelens_cuda.so
endif
LDLIBS   += -ldl
# --default-stream per-thread: the ops' stream can be captured into CUDA graphs (record.cu)
NVCC_FLAGS = -O3 -std=c++17 $(CUDA_ARCH) -Isrc -DTUNELENS_CUDA --default-stream per-thread -Xcompiler -fPIC,-Wall
TESTS    := $(basename $(notdir $(wildcard tests/test_*.c)))
TEST_BIN := $(TESTS:%=$(B)/tests/%)
FUZZ_NAMES := safetensors safetensors_index gguf config tokenizer encode adapter data cli_num yaml_config chat_template
FUZZ_SRC   := $(FUZZ_NAMES:%=tests/fuzz/fuzz_%.c) tests/fuzz/fuzz_util.c

all: $(TUNELENS) $(CUDA_TARGETS)

$(TUNELENS): $(B)/src/main.o $(B)/libtunelens.a
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)

$(CUDA_SO): $(CU_OBJ)
	$(NVCC) -shared -o $@ $^ -L$(CUDA_HOME)/lib64 -Xlinker -rpath,$(CUDA_HOME)/lib64 -lcublas -lcublasLt -lcudart

ifneq ($(dir $(TUNELENS)),$(dir $(CUDA_SO)))
$(dir $(TUNELENS))libtunelens_cuda.so: $(CUDA_SO)
	cp $< $@
endif

$(B)/libtunelens.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(B)/%.o: %.cu $(wildcard src/ops/cuda/*.cuh) src/ops/backend.h src/ops/ops.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

# Every test may run model code on the strict backend (tests/strict_backend.c: buffers the
# host cannot touch outside the backend's own calls).
$(B)/tests/%: tests/%.c $(wildcard tests/*.h) $(B)/tests/strict_backend.o $(B)/libtunelens.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(B)/tests/strict_backend.o $(B)/libtunelens.a $(TEST_LDLIBS)

# The fuzz harnesses without libFuzzer: every seed and saved crasher, replayed as a test.
$(B)/tests/test_fuzz_replay: tests/test_fuzz_replay.c $(FUZZ_SRC) tests/fuzz/fuzz_util.h $(wildcard tests/*.h) $(B)/libtunelens.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DFUZZ_REPLAY -Itests -o $@ $(filter %.c,$^) $(B)/libtunelens.a $(TEST_LDLIBS)

# Tests run from the repo root; fixtures that need downloads are fetched by tests/setup.sh.
# OpenBLAS picks its kernels, and with them the order of every sum, by CPU unless
# OPENBLAS_CORETYPE names them (tunelens itself re-execs with one chosen for speed). The
# numerical tests' tolerances are derived to hold in any order (tests/test_util.h), and every
# run proves it: all tests with the variable unset (OpenBLAS's own pick), then the numerical
# ones again with each of CORETYPES preset: Prescott (SSE3, every x86-64 has it) and Haswell
# (AVX2, where the CPU has it). OPENBLAS_VERBOSE=2 prints the kernels each numerical run used.
# CORETYPES= skips the second pass (make asan does: it checks memory, not rounding).
NUMERIC_TESTS = test_ops test_train test_model test_mlx test_export
CORETYPES ?= Prescott Haswell
test: $(TUNELENS) $(TEST_BIN) $(CUDA_TARGETS)
	@./tests/setup.sh
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; v=0; \
	    case " $(NUMERIC_TESTS) " in *" $${t##*/} "*) v=2;; esac; \
	    env -u OPENBLAS_CORETYPE OPENBLAS_VERBOSE=$$v ./$$t; done
	@set -e; for c in $(CORETYPES); do \
	    if [ $$c = Haswell ] && ! grep -qw avx2 /proc/cpuinfo; then \
	        echo "== (no AVX2 here: not run with OPENBLAS_CORETYPE=Haswell)"; continue; fi; \
	    for t in $(NUMERIC_TESTS); do echo "== OPENBLAS_CORETYPE=$$c $(B)/tests/$$t"; \
	        OPENBLAS_CORETYPE=$$c OPENBLAS_VERBOSE=2 TUNELENS_NO_BENCH=1 ./$(B)/tests/$$t; done; done
	@./tests/cli_test.sh ./$(TUNELENS)
	@./tests/bad_input_test.sh ./$(TUNELENS)
	@./tests/resume_test.sh ./$(TUNELENS)
	@set -e; for s in $(sort $(wildcard tests/cli/*.sh)); do echo "== $$s"; ./$$s ./$(TUNELENS); done

# ---- sanitizers: the same suite built with gcc's ASan + UBSan into build-asan/ (options and
# suppressions: tests/sanitizers/README.md).
ASAN_SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_ENV  = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1 \
           LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# (CPU-only: nvcc code is not instrumented, and ASan's shadow memory collides with CUDA's
# address space on GPU machines.)
asan:
	$(SAN_ENV) $(MAKE) --no-print-directory NVCC= B=build-asan TUNELENS=build-asan/tunelens SAN="$(ASAN_SAN)" CORETYPES= test

# ---- valgrind memcheck on a short training run. A separate build without -march=native:
# valgrind 3.19 cannot decode AVX-512 instructions.
valgrind:
	$(MAKE) --no-print-directory NVCC= B=build-vg TUNELENS=build-vg/tunelens OPT="-O2 -g" build-vg/tunelens
	./tests/valgrind_train.sh build-vg/tunelens

# ---- fuzzing: clang + libFuzzer, library built into build-fuzz/ with ASan + UBSan.
# FUZZ_SECONDS per harness; a crash, leak, timeout, huge allocation or UBSan report fails.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 20
FUZZ_CFLAGS  = -O1 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-pass-failed -fopenmp -Isrc \
               -I/usr/include/x86_64-linux-gnu/openblas-openmp -fno-omit-frame-pointer \
               -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_OBJ := $(SRC:%.c=build-fuzz/%.o)
FUZZ_BIN := $(FUZZ_NAMES:%=build-fuzz/fuzz_%)

build-fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

build-fuzz/libtunelens.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.c tests/fuzz/fuzz_util.h build-fuzz/libtunelens.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $(filter %.c,$^) build-fuzz/libtunelens.a $(LDLIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	@./tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_NAMES)

clean:
	rm -rf build build-asan build-vg build-fuzz tunelens

-include $(OBJ:.o=.d) $(FUZZ_OBJ:.o=.d) $(B)/tests/strict_backend.d
.PHONY: all test asan valgrind fuzz fuzz-build clean
