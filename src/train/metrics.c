// metrics.c — the training run's metrics.jsonl.
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#include "../formats/json_file.h"

// Entries up to iteration `iter` of an earlier metrics.jsonl (the resumed run rewrites the rest).
static cJSON *load_entries(const char *path, int iter) {
    cJSON *log = cJSON_CreateArray();
    char *text;
    size_t len;
    Error ignore;
    if (!file_exists(path) || read_file(path, &text, &len, &ignore)) return log;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *e = cJSON_Parse(line);
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(e, "iter");
        if (cJSON_IsNumber(at) && at->valuedouble <= iter) cJSON_AddItemToArray(log, e);
        else cJSON_Delete(e);
    }
    free(text);
    return log;
}

void metrics_open(Metrics *mt, const char *dir, int resumed_at) {
    mt->path = path_join(dir, "metrics.jsonl");
    mt->log = resumed_at > 0 ? load_entries(mt->path, resumed_at) : cJSON_CreateArray();
}

int metrics_append(Metrics *mt, cJSON *entry, Error *err) {
    cJSON_AddItemToArray(mt->log, entry);
    StrBuf b = {0};
    const cJSON *e;
    cJSON_ArrayForEach(e, mt->log) {
        char *line = cJSON_PrintUnformatted(e);
        sb_printf(&b, "%s\n", line);
        free(line);
    }
    int rc = write_file_atomic(mt->path, b.p, b.len, err);
    sb_free(&b);
    return rc;
}

void metrics_free(Metrics *mt) {
    cJSON_Delete(mt->log);
    free(mt->path);
    memset(mt, 0, sizeof *mt);
}
