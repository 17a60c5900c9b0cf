// strict_backend.h — a test backend that holds model code to backend.h's memory contract: it
// runs BACKEND_CPU's ops, but its buffers are pages the host cannot touch (PROT_NONE) except
// while one of its own ops, or upload / download / copy / zero, runs. Any host access that
// bypasses them (what would read garbage or crash on a GPU) is a SIGSEGV in the test.
#pragma once
#include "ops/backend.h"

// caps: BACKEND_CAP_DEVICE to take model code's device paths, 0 for its host ones.
const Backend *strict_backend(unsigned caps);
// Buffers allocated and not yet freed (a leak check for tests).
int strict_live_buffers(void);
