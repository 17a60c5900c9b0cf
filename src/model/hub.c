// hub.c — Hugging Face model ids: the hub cache's layout (huggingface_hub's file_download.py:
// <cache>/models--org--name/{refs/main, snapshots/<commit>/<file> → ../../blobs/<etag>}) and a
// download into it: the file list from {endpoint}/api/models/{id}/revision/main, each file
// mlx-lm fetches (its allow_patterns) from {endpoint}/{id}/resolve/{commit}/{file} into
// blobs/<etag>.incomplete (resumed with a Range), renamed when whole, then linked.
#include "hub.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch.h"

// mlx_lm/utils.py DEFAULT_ALLOW_PATTERNS (0.32.2): what `mlx_lm.lora --model ID` downloads.
static const char *const ALLOW[] = {"*.json", "model*.safetensors", "*.py", "tokenizer.model",
                                    "*.tiktoken", "tiktoken.model", "*.txt", "*.jsonl", "*.jinja"};
enum { ATTEMPTS = 5 };  // tries per file; each resumes where the last stopped

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static char *expand_user(const char *p) {
    const char *h = env("HOME");
    if (p[0] == '~' && (p[1] == '/' || !p[1]) && h) return xasprintf("%s%s", h, p + 1);
    return xstrdup(p);
}

char *hub_cache_dir(const char **source) {
    const char *v, *s;
    char *dir;
    if ((v = env(s = "HF_HUB_CACHE")) || (v = env(s = "HUGGINGFACE_HUB_CACHE"))) {
        dir = expand_user(v);
    } else if ((v = env(s = "HF_HOME"))) {
        char *home = expand_user(v);
        dir = path_join(home, "hub");
        free(home);
    } else if ((v = env(s = "XDG_CACHE_HOME"))) {
        char *x = expand_user(v);
        dir = path_join(x, "huggingface/hub");
        free(x);
    } else {
        s = "the default, ~/.cache/huggingface/hub";
        dir = path_join((v = env("HOME")) ? v : ".", ".cache/huggingface/hub");
    }
    if (source) *source = s;
    return dir;
}

static int env_true(const char *name) {
    const char *v = getenv(name);
    if (!v) return 0;
    static const char *const yes[] = {"1", "ON", "YES", "TRUE"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!strcasecmp(v, yes[i])) return 1;
    return 0;
}

// huggingface_hub reads HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE when that is unset or empty.
int hub_offline(void) {
    return env("HF_HUB_OFFLINE") ? env_true("HF_HUB_OFFLINE") : env_true("TRANSFORMERS_OFFLINE");
}

static int id_part_ok(const char *s, size_t n) {
    if (n < 1 || n > 96 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i])) return 0;
    return 1;
}

int hub_is_repo_id(const char *s) {
    const char *slash = strchr(s, '/');
    size_t n = strlen(s);
    if (!slash || strchr(slash + 1, '/') || strstr(s, "--") || strstr(s, "..")) return 0;
    if (n >= 4 && !strcmp(s + n - 4, ".git")) return 0;
    return id_part_ok(s, (size_t)(slash - s)) && id_part_ok(slash + 1, strlen(slash + 1));
}

static int is_commit(const char *s) {
    size_t n = strlen(s);
    if (n != 40) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return 0;
    return 1;
}

// <cache>/models--org--name
static char *repo_folder(const char *cache, const char *id) {
    const char *slash = strchr(id, '/');
    char *r = xasprintf("models--%.*s--%s", (int)(slash - id), id, slash + 1);
    char *dir = path_join(cache, r);
    free(r);
    return dir;
}

// refs/main's commit: 1 when found (*commit set), 0 when there is no refs/main, -1 when it is
// not a commit hash.
static int read_ref(const char *repo, char **commit, Error *err) {
    char *ref = path_join(repo, "refs/main"), *text = NULL;
    size_t len;
    int rc = 0;
    *commit = NULL;
    if (file_exists(ref)) {
        if (read_file(ref, &text, &len, err)) {
            rc = -1;
        } else {
            size_t n = strlen(text);
            int whole = n == len;  // no NUL inside
            while (n && isspace((unsigned char)text[n - 1])) text[--n] = 0;  // a newline may end it
            if (!whole || !is_commit(text))
                rc = err_set(err, "%s: not a commit hash (40 lowercase hex digits): '%.60s'; remove "
                                  "the file to download the model again", ref, text);
            else
                *commit = text, text = NULL, rc = 1;
        }
    }
    free(text), free(ref);
    return rc;
}

static int allowed(const char *file) {
    for (size_t i = 0; i < sizeof ALLOW / sizeof ALLOW[0]; i++)
        if (fnmatch(ALLOW[i], file, 0) == 0) return 1;
    return 0;
}

// A repo file name the snapshot may hold: relative, no "..", no empty parts.
static int safe_name(const char *f) {
    if (!*f || *f == '/' || strstr(f, "//") || f[strlen(f) - 1] == '/' || strchr(f, '\\')) return 0;
    for (const char *p = f; p; p = strchr(p, '/') ? strchr(p, '/') + 1 : NULL)
        if (!strncmp(p, "..", 2) && (p[2] == '/' || !p[2])) return 0;
    return 1;
}

// huggingface_hub's _normalize_etag, and a check that it can name a blob file.
static char *blob_name(const char *etag) {
    if (!etag) return NULL;
    while (*etag == 'W' || *etag == '/') etag++;
    while (*etag == '"') etag++;
    size_t n = strlen(etag);
    while (n && etag[n - 1] == '"') n--;
    if (!n || n > 128) return NULL;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)etag[i]) && !strchr("-_.", etag[i])) return NULL;
    char *s = xmalloc(n + 1);
    memcpy(s, etag, n);
    s[n] = 0;
    return s;
}

static long long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

typedef struct {
    const char *id, *endpoint, *token, *repo;
} Hub;

// The message for an answer that is not 2xx.
static int http_error(const Hub *h, const char *what, long status, Error *err) {
    if (status == 401 || status == 403)
        return err_set(err, "%s on %s: HTTP %ld: the model is gated or private (or does not exist): %s",
                       h->id, h->endpoint, status,
                       h->token ? "HF_TOKEN is set but was refused (accept the model's terms on its "
                                  "page, or use a token with access)"
                                : "set HF_TOKEN to a token with access (after accepting the model's "
                                  "terms on its page)");
    if (status == 404)
        return err_set(err, "%s: no such model on %s (HTTP 404 for %s)", h->id, h->endpoint, what);
    return err_set(err, "%s on %s: HTTP %ld for %s", h->id, h->endpoint, status, what);
}

// The commit of main and the files to fetch.
static int list_repo(const Hub *h, char **commit, char ***files, int *n_files, Error *err) {
    char *url = xasprintf("%s/api/models/%s/revision/main", h->endpoint, h->id);
    HttpRequest r = {.url = url, .token = h->token};
    HttpResponse resp;
    cJSON *j = NULL;
    int rc = http_request(&r, &resp, err);
    *files = NULL, *n_files = 0, *commit = NULL;
    if (rc) {
        err_wrap(err, "cannot reach the hub for %s (set HF_HUB_OFFLINE=1 to use the cache alone)", h->id);
        goto done;
    }
    if (resp.status != 200) {
        rc = http_error(h, url, resp.status, err);
        goto done;
    }
    j = cJSON_ParseWithLength(resp.body ? resp.body : "", resp.body_len);
    const cJSON *sha = cJSON_GetObjectItem(j, "sha"), *sib = cJSON_GetObjectItem(j, "siblings");
    if (!cJSON_IsString(sha) || !is_commit(sha->valuestring) || !cJSON_IsArray(sib)) {
        rc = err_set(err, "%s: the answer is not a model's file list (no \"sha\" commit hash or "
                          "\"siblings\" array)", url);
        goto done;
    }
    *commit = xstrdup(sha->valuestring);
    const cJSON *s;
    cJSON_ArrayForEach(s, sib) {
        const cJSON *f = cJSON_GetObjectItem(s, "rfilename");
        if (!cJSON_IsString(f) || !allowed(f->valuestring)) continue;
        if (!safe_name(f->valuestring)) {
            rc = err_set(err, "%s: file name '%s' leaves the snapshot folder", url, f->valuestring);
            goto done;
        }
        *files = xrealloc(*files, (size_t)(*n_files + 1) * sizeof **files);
        (*files)[(*n_files)++] = xstrdup(f->valuestring);
    }
    if (!*n_files) rc = err_set(err, "%s: the model has no file mlx-lm would fetch (config.json, "
                                     "*.safetensors, tokenizer files)", h->id);
done:
    if (rc) {
        for (int i = 0; i < *n_files; i++) free((*files)[i]);
        free(*files), free(*commit);
        *files = NULL, *commit = NULL, *n_files = 0;
    }
    cJSON_Delete(j);
    http_response_free(&resp);
    free(url);
    return rc;
}

// blobs/<etag>: resumed from blobs/<etag>.incomplete, renamed when it has all its bytes.
static int fetch_blob(const Hub *h, const char *url, const char *file, const char *blob,
                      long long size, Error *err) {
    char *part = xasprintf("%s.incomplete", blob);
    int rc = -1;
    for (int attempt = 1; attempt <= ATTEMPTS; attempt++) {
        long long have = file_size(part);
        if (have < 0) have = 0;
        if (size >= 0 && have > size) {  // not this blob's bytes: start over
            unlink(part);
            have = 0;
        }
        if (size >= 0 && have == size) {
            rc = 0;
            break;
        }
        FILE *f = fopen(part, "ab");
        if (!f) {
            err_set(err, "%s: cannot create: %s", part, strerror(errno));
            break;
        }
        HttpRequest r = {.url = url, .token = h->token, .out = f, .resume_from = have,
                         .progress = file, .total = size};
        HttpResponse resp;
        rc = http_request(&r, &resp, err);
        long status = resp.status;
        http_response_free(&resp);
        // on disk before it can be renamed into place (and a resume trusts its bytes)
        int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
        bad |= fclose(f) != 0;
        if (bad && !rc) rc = err_set(err, "%s: write failed: %s", part, strerror(errno));
        if (!rc && status == 416) {  // the range lies past the file: start over
            unlink(part);
            rc = err_set(err, "%s: the server refused the range from byte %lld", url, have);
        } else if (!rc && (status < 200 || status >= 300)) {
            rc = http_error(h, url, status, err);
            break;
        } else if (!rc) {
            if (size < 0 || file_size(part) == size) break;
            rc = err_set(err, "%s: the answer stopped at byte %lld of %lld", url, file_size(part), size);
        }
        if (attempt < ATTEMPTS)
            fprintf(stderr, "%s: %s; resuming (attempt %d of %d)\n", file, err->msg, attempt + 1,
                    ATTEMPTS);
    }
    if (rc == 0 && size >= 0 && file_size(part) != size)
        rc = err_set(err, "%s: %lld bytes, expected %lld", part, file_size(part), size);
    if (rc == 0 && rename(part, blob) != 0)
        rc = err_set(err, "%s: cannot rename into place: %s", blob, strerror(errno));
    if (rc) err_wrap(err, "download of %s from %s failed (run again to resume from %s)", file,
                     h->endpoint, part);
    free(part);
    return rc;
}

// snapshots/<commit>/<file> → ../../blobs/<etag> (one more ../ per folder in file).
static int link_snapshot(const char *snap_file, const char *file, const char *etag, Error *err) {
    char *dir = xstrdup(snap_file), *slash = strrchr(dir, '/');
    *slash = 0;
    StrBuf target = {0};
    sb_printf(&target, "../../");
    for (const char *p = file; (p = strchr(p, '/')); p++) sb_printf(&target, "../");
    sb_printf(&target, "blobs/%s", etag);
    int rc = make_dirs(dir, err);
    if (!rc) {  // made aside and renamed over: a concurrent run never sees it missing
        char *tmp = xasprintf("%s.tmp.%ld", snap_file, (long)getpid());
        unlink(tmp);
        if (symlink(target.p, tmp) != 0 || rename(tmp, snap_file) != 0) {
            rc = err_set(err, "%s: cannot link to %s: %s", snap_file, target.p, strerror(errno));
            unlink(tmp);
        }
        free(tmp);
    }
    sb_free(&target);
    free(dir);
    return rc;
}

// huggingface_hub's lock for a blob, <cache>/.locks/models--org--name/<etag>.lock (flock, as its
// filelock takes it): two downloads of one blob, ours or huggingface_hub's, never append to the
// same .incomplete; the second waits, then finds the blob whole. Returns the held descriptor.
static int lock_blob(const Hub *h, const char *etag, Error *err) {
    const char *name = strrchr(h->repo, '/');
    char *cache = xstrdup(h->repo);
    cache[name - h->repo] = 0;
    char *dir = xasprintf("%s/.locks/%s", cache, name + 1), *path = xasprintf("%s/%s.lock", dir, etag);
    int fd = -1;
    if (make_dirs(dir, err) == 0 && (fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
        err_set(err, "%s: cannot create: %s", path, strerror(errno));
    if (fd >= 0 && flock(fd, LOCK_EX) != 0) {
        err_set(err, "%s: cannot lock: %s", path, strerror(errno));
        close(fd);
        fd = -1;
    }
    free(cache), free(dir), free(path);
    return fd;
}

static int fetch_file(const Hub *h, const char *commit, const char *file, Error *err) {
    char *snap = xasprintf("%s/snapshots/%s/%s", h->repo, commit, file);
    char *url = xasprintf("%s/%s/resolve/%s/%s", h->endpoint, h->id, commit, file);
    char *etag = NULL, *blob = NULL, *blobs = path_join(h->repo, "blobs");
    int rc = 0;
    if (file_exists(snap)) goto done;  // linked by an earlier run (stat follows the link)
    // The metadata: a HEAD, not following the redirect of a large (LFS) file to its storage,
    // whose answer carries X-Linked-Etag / X-Linked-Size; a relative redirect (a renamed repo)
    // is followed, as huggingface_hub does.
    HttpResponse resp;
    char *at = xstrdup(url);
    for (int hop = 0;; hop++) {
        HttpRequest r = {.url = at, .token = h->token, .head = 1};
        rc = http_request(&r, &resp, err);
        if (rc || resp.status < 300 || resp.status >= 400 || resp.linked_etag || !resp.location ||
            resp.location[0] != '/' || hop == 5)
            break;
        const char *host = strstr(at, "://"), *path = host ? strchr(host + 3, '/') : NULL;
        char *next = xasprintf("%.*s%s", (int)(path ? path - at : (ptrdiff_t)strlen(at)), at, resp.location);
        free(at);
        at = next;
        http_response_free(&resp);
    }
    free(at);
    if (!rc && (resp.status < 200 || resp.status >= 400)) rc = http_error(h, url, resp.status, err);
    long long size = resp.linked_size >= 0 ? resp.linked_size : resp.content_length;
    if (!rc && !(etag = blob_name(resp.linked_etag ? resp.linked_etag : resp.etag)))
        rc = err_set(err, "%s: no usable ETag in the answer (got '%s')", url,
                     resp.linked_etag ? resp.linked_etag : resp.etag ? resp.etag : "nothing");
    if (!rc && resp.repo_commit && strcmp(resp.repo_commit, commit))
        rc = err_set(err, "%s: answered for commit %s, not %s", url, resp.repo_commit, commit);
    http_response_free(&resp);
    if (rc) goto done;
    blob = path_join(blobs, etag);
    int lock = make_dirs(blobs, err) ? -1 : lock_blob(h, etag, err);
    if (lock < 0) rc = -1;
    else if (!(file_exists(blob) && (size < 0 || file_size(blob) == size)))
        rc = fetch_blob(h, url, file, blob, size, err);
    if (lock >= 0) close(lock);  // releases the lock
    if (!rc) rc = link_snapshot(snap, file, etag, err);
done:
    free(snap), free(url), free(etag), free(blob), free(blobs);
    return rc;
}

static int download(const Hub *h, char **commit_out, Error *err) {
    char *commit, **files;
    int n;
    if (list_repo(h, &commit, &files, &n, err)) return -1;
    fprintf(stderr, "Fetching %s (commit %.12s, %d files) from %s into %s\n", h->id, commit, n,
            h->endpoint, h->repo);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = fetch_file(h, commit, files[i], err);
    if (!rc) {  // refs/main last: a snapshot that has it is whole
        char *refs = path_join(h->repo, "refs"), *ref = path_join(refs, "main");
        rc = make_dirs(refs, err) || write_file_atomic(ref, commit, strlen(commit), err) ? -1 : 0;
        free(refs), free(ref);
    }
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    if (rc) free(commit);
    else *commit_out = commit;
    return rc;
}

char *hub_resolve_model(const char *model, Error *err) {
    struct stat st;
    if (stat(model, &st) == 0 || !hub_is_repo_id(model)) return xstrdup(model);
    const char *source;
    char *cache = hub_cache_dir(&source), *repo = repo_folder(cache, model), *commit = NULL;
    char *snap = NULL, *out = NULL;
    int found = read_ref(repo, &commit, err);
    if (found > 0) {
        snap = xasprintf("%s/snapshots/%s", repo, commit);
        if (dir_exists(snap)) out = snap, snap = NULL;
    }
    if (!out && found >= 0) {
        if (hub_offline()) {
            err_set(err, "%s: not a file or folder here, and not in the Hugging Face cache (%s, from "
                         "%s): %s%s; offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE), so not downloaded",
                    model, cache, source, snap ? snap : repo, snap ? " is missing" : "/refs/main is missing");
        } else {
            const char *ep = env("HF_ENDPOINT") ? env("HF_ENDPOINT") : "https://huggingface.co";
            char *endpoint = xstrdup(ep);
            for (size_t n = strlen(endpoint); n > 0 && endpoint[n - 1] == '/'; n--) endpoint[n - 1] = 0;
            Hub h = {model, endpoint, env("HF_TOKEN"), repo};
            free(commit), commit = NULL;
            if (download(&h, &commit, err) == 0) {
                out = xasprintf("%s/snapshots/%s", repo, commit);
                fprintf(stderr, "Saved %s\n", out);
            } else {
                err_wrap(err, "%s (not a file or folder here, nor in the cache %s)", model, repo);
            }
            free(endpoint);
        }
    }
    free(cache), free(repo), free(commit), free(snap);
    return out;
}

int hub_model_load(Model *m, const char *model, Error *err) {
    char *path = hub_resolve_model(model, err);
    int rc = path ? model_load(m, path, err) : -1;
    free(path);
    return rc;
}
