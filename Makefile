# tunelens — `make` builds ./tunelens (CPU-only when nvcc is absent), `make test` runs all tests.
CC      ?= gcc
OPT     ?= -O2 -march=native -g   # e.g. make OPT="-O2 -march=x86-64-v3" for a portable build
# OpenBLAS's OpenMP build shares libgomp's thread pool with our own OpenMP loops; the
# pthreads build runs a second pool, and the two spin against each other on few cores.
BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
ALL_CFLAGS = $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -fopenmp -Isrc \
           -I/usr/include/x86_64-linux-gnu/openblas-openmp $(CFLAGS)
LDLIBS  += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lpcre2-8 -lcjson -lcurl -lzip -lm -fopenmp
TEST_LDLIBS = $(LDLIBS) -lcmocka

SRC      := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
OBJ      := $(SRC:%.c=build/%.o)
TESTS    := $(basename $(notdir $(wildcard tests/test_*.c)))
TEST_BIN := $(TESTS:%=build/tests/%)

all: tunelens

tunelens: build/src/main.o build/libtunelens.a
	$(CC) -o $@ $^ $(LDLIBS)

build/libtunelens.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

build/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

build/tests/%: tests/%.c $(wildcard tests/*.h) build/libtunelens.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@ $< build/libtunelens.a $(TEST_LDLIBS)

# Tests run from the repo root; fixtures that need downloads are fetched by tests/setup.sh.
test: tunelens $(TEST_BIN)
	@./tests/setup.sh
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; ./$$t; done
	@./tests/cli_test.sh ./tunelens

clean:
	rm -rf build tunelens

-include $(OBJ:.o=.d)
.PHONY: all test clean
