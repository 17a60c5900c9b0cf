// json_file.c — small JSON files, parsed whole with cJSON.
#include "json_file.h"

#include <stdlib.h>
#include <string.h>

cJSON *json_read_object(const char *path, Error *err) {
    char *text;
    size_t len;
    if (read_file(path, &text, &len, err)) return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j) {
        int line = 1, col = 1;
        for (const char *p = text; end && p < end && p < text + len; p++) {
            if (*p == '\n') line++, col = 1;
            else col++;
        }
        err_set(err, "%s: invalid JSON at line %d, column %d", path, line, col);
    } else if (!cJSON_IsObject(j)) {
        err_set(err, "%s: expected a JSON object", path);
        cJSON_Delete(j);
        j = NULL;
    }
    free(text);
    return j;
}

int json_write_file(const char *path, const cJSON *j, Error *err) {
    char *text = cJSON_Print(j);
    if (!text) return err_set(err, "%s: out of memory printing JSON", path);
    int rc = write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}
