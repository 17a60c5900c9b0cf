// direction.c — residual-stream directions (direction.h): a token's, a file's, a probe's.
#include "direction.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/safetensors.h"
#include "hook.h"

// A token as readable text for messages: decoded, quoted, control bytes escaped.
static char *token_display(const Tokenizer *t, int id) {
    char *text = tokenizer_decode(t, &id, 1, 0);
    StrBuf b = {0};
    sb_append(&b, "'", 1);
    for (const unsigned char *p = (const unsigned char *)(text ? text : "?"); *p; p++) {
        if (*p == '\n') sb_append(&b, "\\n", 2);
        else if (*p == '\\') sb_append(&b, "\\\\", 2);
        else if (*p < 0x20 || *p == 0x7f) sb_printf(&b, "\\x%02x", *p);
        else sb_append(&b, (const char *)p, 1);
    }
    sb_append(&b, "'", 1);
    free(text);
    return b.p;
}

// "FILE:SUFFIX" -> the file and the suffix (NULL when none). The path may itself hold ':'
// (the first prefix that names an existing file is the path); a spec that is a file as a whole
// has no suffix. Heap strings.
static void split_spec(const char *spec, char **path, char **suffix) {
    *suffix = NULL;
    if (!file_exists(spec)) {
        for (const char *c = strchr(spec, ':'); c; c = strchr(c + 1, ':')) {
            char *p = xmalloc((size_t)(c - spec) + 1);
            memcpy(p, spec, (size_t)(c - spec));
            p[c - spec] = 0;
            if (file_exists(p)) {
                *path = p;
                *suffix = xstrdup(c + 1);
                return;
            }
            free(p);
        }
    }
    *path = xstrdup(spec);
}

// The tensor names of ts as "'a', 'b', ..." (at most 20 named), heap.
static char *tensor_names(const TensorSet *ts) {
    StrBuf b = {0};
    for (int i = 0; i < ts->n && i < 20; i++)
        sb_printf(&b, "%s'%s'", i ? ", " : "", ts->tensors[i].name);
    if (ts->n > 20) sb_printf(&b, ", ... (%d in all)", ts->n);
    if (!b.p) sb_printf(&b, "none");
    return b.p;
}

static int check_nonzero(const float *v, int C, const char *what, Error *err) {
    int64_t bad = f32_first_nonfinite(v, C);
    if (bad >= 0) return err_set(err, "%s: element %lld is not finite", what, (long long)bad);
    for (int i = 0; i < C; i++)
        if (v[i] != 0) return 0;
    return err_set(err, "%s is all zeros: it has no direction", what);
}

// The token's unembedding row times the final norm's weight: the lens's logit of t at a
// residual h is (w_t ⊙ g)·h / rms(h), so h with its component along u = w_t ⊙ g removed gives
// t a logit of exactly 0.
static int load_token(const Model *m, const char *word, Direction *d, Error *err) {
    const Backend *be = m->be;
    const int C = m->cfg.dim;
    int *w = NULL, nw = 0;
    if (tokenizer_encode(m->tok, word, strlen(word), 0, &w, &nw, err))
        return err_wrap(err, "--token '%s'", word);
    if (nw != 1) {
        StrBuf b = {0};
        for (int i = 0; i < nw && i < 16; i++) {
            char *s = token_display(m->tok, w[i]);
            sb_printf(&b, "%s%s (id %d)", i ? ", " : "", s, w[i]);
            free(s);
        }
        if (nw > 16) sb_printf(&b, ", ...");
        int rc = nw == 0 ? err_set(err, "--token '%s' encodes to no tokens", word)
                         : err_set(err, "--token '%s' is %d tokens, %s: a direction needs a word of "
                                   "one token%s%s%s", word, nw, b.p,
                                   word[0] == ' ' ? "" : " (a leading space often makes one: ' ",
                                   word[0] == ' ' ? "" : word, word[0] == ' ' ? "" : "')");
        sb_free(&b);
        free(w);
        return rc;
    }
    int id = w[0];
    free(w);
    if (model_check_ids(m, &id, 1, err)) return err_wrap(err, "--token '%s'", word);
    float *g = xmalloc(sizeof(float) * (size_t)C);
    d->v = xmalloc(sizeof(float) * (size_t)C);
    be->download(d->v, m->head + (size_t)id * C, sizeof(float) * (size_t)C);
    be->download(g, m->final_norm, sizeof(float) * (size_t)C);
    for (int i = 0; i < C; i++) d->v[i] *= g[i];
    free(g);
    d->C = C;
    char *s = token_display(m->tok, id);
    d->what = xasprintf("token %s (id %d)", s, id);
    free(s);
    return check_nonzero(d->v, C, d->what, err);
}

// A tensor of C values (shape (C) or (1, C)) as floats.
static int load_vector(const TensorView *t, int C, float *out, Error *err) {
    int64_t n = tensor_numel(t);
    if (t->dtype != DT_F32 && t->dtype != DT_BF16 && t->dtype != DT_F16)
        return err_set(err, "%s: tensor '%s' is %s; a direction is F32, BF16 or F16", t->file,
                       t->name, dtype_name(t->dtype));
    if (n != C || !(t->ndim == 1 || (t->ndim == 2 && t->shape[0] == 1))) {
        char shape[96] = "";
        for (int i = 0, o = 0; i < t->ndim; i++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%lld", i ? ", " : "",
                          (long long)t->shape[i]);
        return err_set(err, "%s: tensor '%s' has shape [%s]; a direction is a vector of the "
                       "model's hidden size, %d", t->file, t->name, shape, C);
    }
    return tensor_to_f32(t, out, err);
}

static int load_file(const Model *m, const char *spec, Direction *d, Error *err) {
    const int C = m->cfg.dim;
    char *path, *name;
    split_spec(spec, &path, &name);
    TensorSet ts = {0};
    int rc = safetensors_load(&ts, path, err);
    const TensorView *t = NULL;
    if (!rc && name) {
        if (!(t = tensorset_find(&ts, name))) {
            char *names = tensor_names(&ts);
            rc = err_set(err, "%s: no tensor '%s' (it holds %s)", path, name, names);
            free(names);
        }
    } else if (!rc) {
        if (ts.n == 1) t = &ts.tensors[0];
        else {
            char *names = tensor_names(&ts);
            rc = err_set(err, "%s holds %d tensors (%s): name one, --direction %s:NAME", path,
                         ts.n, names, path);
            free(names);
        }
    }
    if (!rc) {
        d->v = xmalloc(sizeof(float) * (size_t)C);
        d->C = C;
        d->what = xasprintf("%s:%s", path, t->name);
        rc = load_vector(t, C, d->v, err);
        if (!rc) rc = check_nonzero(d->v, C, d->what, err);
    }
    tensorset_free(&ts);
    free(path), free(name);
    return rc;
}

// The "__metadata__" object of a mapped safetensors file (already validated by
// safetensors_load), or NULL; the caller deletes it.
static cJSON *safetensors_metadata(const MappedFile *f) {
    uint64_t hlen;
    memcpy(&hlen, f->data, 8);
    cJSON *root = cJSON_ParseWithLength((const char *)f->data + 8, (size_t)hlen);
    if (!root) return NULL;
    cJSON *meta = cJSON_DetachItemFromObjectCaseSensitive(root, "__metadata__");
    cJSON_Delete(root);
    return meta;
}

// A probe's direction for one label at one layer. The probe's logits are
// z_k = W_k · ((x - mean) / std) + b_k, and the softmax only sees their differences, so what
// label k has of its own is W_k minus the mean of the rows (for two labels, half their
// difference); in the residual's coordinates that is (W_k - mean_j W_j) / std, elementwise:
// the direction along which x raises label k's logit over the average label's.
static int load_probe(const Model *m, const char *spec, int layer, Direction *d, Error *err) {
    const int C = m->cfg.dim;
    char *path, *label;
    split_spec(spec, &path, &label);
    TensorSet ts = {0};
    cJSON *meta = NULL, *labels = NULL;
    float *W = NULL, *sd = NULL;
    int rc = 0;
    if (!label || !*label) {
        rc = err_set(err, "--probe %s: name the label, --probe PROBES.safetensors:LABEL", spec);
        goto done;
    }
    if ((rc = safetensors_load(&ts, path, err))) goto done;
    meta = safetensors_metadata(&ts.files[0]);
    const cJSON *ls = meta ? cJSON_GetObjectItemCaseSensitive(meta, "labels") : NULL;
    if (!cJSON_IsString(ls) || !(labels = cJSON_Parse(ls->valuestring)) || !cJSON_IsArray(labels)) {
        rc = err_set(err, "%s: no \"labels\" in the metadata (not a file of probe --save?)", path);
        goto done;
    }
    int K = cJSON_GetArraySize(labels), k = -1, i = 0;
    StrBuf names = {0};
    for (const cJSON *x = labels->child; x; x = x->next, i++) {
        if (!cJSON_IsString(x)) continue;
        sb_printf(&names, "%s'%s'", i ? ", " : "", x->valuestring);
        if (k < 0 && !strcmp(x->valuestring, label)) k = i;
    }
    if (k < 0) {
        rc = err_set(err, "%s: no label '%s' (its labels: %s)", path, label,
                     names.p ? names.p : "none");
        sb_free(&names);
        goto done;
    }
    sb_free(&names);
    char key[64];
    snprintf(key, sizeof key, "layer.%d.weight", layer);
    const TensorView *tw = tensorset_find(&ts, key);
    if (!tw) {
        StrBuf b = {0};
        for (int j = 0; j < ts.n; j++) {
            int l;
            char tail[16];
            if (sscanf(ts.tensors[j].name, "layer.%d.%15s", &l, tail) == 2 && !strcmp(tail, "weight"))
                sb_printf(&b, "%s%d", b.p ? ", " : "", l);
        }
        rc = err_set(err, "%s: no probe at layer %d (it has layers %s)", path, layer,
                     b.p ? b.p : "none");
        sb_free(&b);
        goto done;
    }
    if (tw->ndim != 2 || tw->shape[0] != K || tw->shape[1] != C) {
        rc = err_set(err, "%s: tensor '%s' has shape [%lld, %lld]; a probe of %d labels on this "
                     "model is [%d, %d]", path, key, (long long)tw->shape[0],
                     tw->ndim == 2 ? (long long)tw->shape[1] : 0LL, K, K, C);
        goto done;
    }
    W = xmalloc(sizeof(float) * (size_t)K * C);
    if ((rc = tensor_to_f32(tw, W, err))) goto done;
    snprintf(key, sizeof key, "layer.%d.std", layer);
    const TensorView *ts_std = tensorset_find(&ts, key);
    sd = xmalloc(sizeof(float) * (size_t)C);
    if (ts_std) {
        if ((rc = load_vector(ts_std, C, sd, err))) goto done;
    } else {
        for (int j = 0; j < C; j++) sd[j] = 1;
    }
    d->v = xmalloc(sizeof(float) * (size_t)C);
    d->C = C;
    for (int j = 0; j < C; j++) {
        double mean = 0;
        for (int r = 0; r < K; r++) mean += W[(size_t)r * C + j];
        mean /= K;
        double s = sd[j] > 0 ? sd[j] : 1;  // probe_fit reads a zero std as 1
        d->v[j] = (float)((W[(size_t)k * C + j] - mean) / s);
    }
    d->what = xasprintf("probe %s label '%s' at layer %d", path, label, layer);
    rc = check_nonzero(d->v, C, d->what, err);
done:
    free(W), free(sd);
    cJSON_Delete(labels), cJSON_Delete(meta);
    tensorset_free(&ts);
    free(path), free(label);
    return rc ? -1 : 0;
}

int direction_load(const Model *m, const DirectionSpec *spec, int layer, Direction *d, Error *err) {
    *d = (Direction){0};
    int given = !!spec->token + !!spec->file + !!spec->probe;
    if (given == 0)
        return err_set(err, "no direction: give --token WORD, --direction FILE[:NAME] or --probe "
                       "PROBES.safetensors:LABEL");
    if (given > 1)
        return err_set(err, "give one direction: --token, --direction or --probe, not %d", given);
    int rc;
    if (spec->token) rc = load_token(m, spec->token, d, err);
    else if (spec->file) rc = load_file(m, spec->file, d, err);
    else {
        if (hook_check_layer(m, layer, err)) return -1;
        rc = load_probe(m, spec->probe, layer, d, err);
    }
    if (rc) direction_free(d);
    return rc ? -1 : 0;
}

void direction_free(Direction *d) {
    free(d->v);
    free(d->what);
    *d = (Direction){0};
}
