// json_file.h — read a small JSON file (config.json, adapter_config.json, ...) with errors that
// name the file, line and column.
#pragma once
#include <cjson/cJSON.h>

#include "../common.h"

// The parsed top-level object, or NULL with "path: invalid JSON at line L, column C" (or
// "expected a JSON object").
cJSON *json_read_object(const char *path, Error *err);

// Write j (pretty-printed) atomically.
int json_write_file(const char *path, const cJSON *j, Error *err);
