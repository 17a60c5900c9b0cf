// metrics.h — DIR/metrics.jsonl: one JSON object per report or validation line, for plots and
// the experiment's report. The whole file is rewritten atomically at each entry, so a killed
// run never leaves half a line, and a resumed run continues the entries of the interrupted one.
#pragma once
#include <cjson/cJSON.h>

#include "../common.h"

typedef struct {
    char *path;
    cJSON *log;  // every entry so far
} Metrics;

// Starts the log of a run in dir; a run resumed at iteration `resumed_at` (> 0) keeps the
// entries up to it.
void metrics_open(Metrics *mt, const char *dir, int resumed_at);
// Appends one entry (taking ownership of it) and rewrites the file.
int metrics_append(Metrics *mt, cJSON *entry, Error *err);
void metrics_free(Metrics *mt);
