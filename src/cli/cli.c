// cli.c — flag parsing, model loading and output helpers shared by the commands.
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lens/lens.h"
#include "../model/generate.h"
#include "../model/hub.h"

int cli_unknown(const char *cmd, const char *flag) {
    fprintf(stderr, "tunelens %s: unknown option '%s' (see tunelens %s --help)\n", cmd, flag, cmd);
    return EXIT_USAGE;
}

int cli_missing(const char *cmd, const char *flag) {
    fprintf(stderr, "tunelens %s: %s is required (see tunelens %s --help)\n", cmd, flag, cmd);
    return EXIT_USAGE;
}

int cli_value(const char *cmd, int argc, char **argv, int *i, const char **out) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "tunelens %s: %s needs a value\n", cmd, argv[*i]);
        return EXIT_USAGE;
    }
    *out = argv[++*i];
    return 0;
}

int cli_int(const char *cmd, int argc, char **argv, int *i, long min, long max, int *out) {
    const char *flag = argv[*i], *s;
    if (cli_value(cmd, argc, argv, i, &s)) return EXIT_USAGE;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "tunelens %s: %s expects an integer in [%ld, %ld], got '%s'\n", cmd, flag,
                min, max, s);
        return EXIT_USAGE;
    }
    *out = (int)v;
    return 0;
}

int cli_double(const char *cmd, int argc, char **argv, int *i, double min, double max, double *out) {
    const char *flag = argv[*i], *s;
    if (cli_value(cmd, argc, argv, i, &s)) return EXIT_USAGE;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < min || v > max) {
        fprintf(stderr, "tunelens %s: %s expects a number in [%g, %g], got '%s'\n", cmd, flag, min,
                max, s);
        return EXIT_USAGE;
    }
    *out = v;
    return 0;
}

int cli_layer_list(const char *s, int *layers, int max, int *n) {
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < -1 || v > 100000 || *n >= max) return -1;
        layers[(*n)++] = (int)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return *n ? 0 : -1;
}

int cli_fail(const Error *err) {
    fprintf(stderr, "tunelens: %s\n", err->msg);
    return 1;
}

// dtype < 0: the f32 weights as loaded, no handles
static int load_model(Model *m, const char *path, const char *adapter, const char *device,
                      int dtype, Error *err) {
    double t0 = now_seconds();
    const Backend *be;
    char *resolved = hub_resolve_model(path, err);  // org/name: from the hub cache
    int rc = !resolved || backend_select(device, &be, err) ||
             (dtype < 0 ? model_load_on(m, resolved, adapter, be, err)
                        : model_load_for_inference(m, resolved, adapter, be, (ComputeDtype)dtype, err));
    free(resolved);
    if (rc) return -1;
    // as loaded (f32 weights, no handles), or as prepared
    const ComputeDtype d = dtype < 0 ? DTYPE_F32 : m->linear_dtype;
    fprintf(stderr, "Loaded %s (%d layers, hidden %d, vocab %d, %s, computed in %s)%s%s on %s "
            "in %.2fs\n", m->name, m->cfg.n_layers, m->cfg.dim, m->cfg.vocab_size,
            m->weight_dtype, DTYPE_NAMES[d], adapter ? " + adapter " : "", adapter ? adapter : "", be->device, now_seconds() - t0);
    return 0;
}

int cli_load_model(Model *m, const char *path, const char *adapter, const char *device,
                   Error *err) {
    return load_model(m, path, adapter, device, -1, err);
}

int cli_load_model_dtype(Model *m, const char *path, const char *adapter, const char *device,
                         int dtype, Error *err) {
    return load_model(m, path, adapter, device, dtype, err);
}

char *cli_resolve_model(const char *model, Error *err) { return hub_resolve_model(model, err); }

int cli_encode(const Model *m, const char *text, int **ids, int *n, Error *err) {
    return generate_encode(m, text, ids, n, err);
}

char *cli_token_text(const Tokenizer *t, int id) { return tokenizer_decode(t, &id, 1, 0); }

char *cli_token_display(const Tokenizer *t, int id) {
    char *text = cli_token_text(t, id);
    size_t n = strlen(text);
    char *out = xmalloc(n * 4 + 3), *o = out;
    *o++ = '\'';
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        switch (*p) {
        case '\n': *o++ = '\\', *o++ = 'n'; break;
        case '\t': *o++ = '\\', *o++ = 't'; break;
        case '\r': *o++ = '\\', *o++ = 'r'; break;
        case '\\': *o++ = '\\', *o++ = '\\'; break;
        default:
            if (*p < 0x20 || *p == 0x7f) o += sprintf(o, "\\x%02x", *p);
            else *o++ = (char)*p;
        }
    }
    *o++ = '\'';
    *o = 0;
    free(text);
    return out;
}

int cli_write_json(const char *path, const cJSON *j, Error *err) {
    char *text = cJSON_Print(j);
    if (!text) return err_set(err, "out of memory while writing JSON");
    int rc = 0;
    if (!strcmp(path, "-")) {
        printf("%s\n", text);
    } else {
        size_t n = strlen(text);
        text[n] = '\n';  // replace the NUL: cJSON's buffer has room for it
        rc = write_file_atomic(path, text, n + 1, err);
    }
    free(text);
    return rc;
}

cJSON *cli_top_json(const Model *m, const float *probs, int k) {
    TokenProb *t = xmalloc(sizeof(TokenProb) * (size_t)k);
    top_k_probs(probs, m->cfg.vocab_size, k, t);
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < k; i++) {
        cJSON *o = cJSON_CreateObject();
        char *s = cli_token_text(m->tok, t[i].id);
        cJSON_AddNumberToObject(o, "id", t[i].id);
        cJSON_AddStringToObject(o, "token", s);
        cJSON_AddNumberToObject(o, "prob", t[i].prob);
        free(s);
        cJSON_AddItemToArray(a, o);
    }
    free(t);
    return a;
}

void cli_print_top(const Model *m, const float *probs, int k) {
    TokenProb *t = xmalloc(sizeof(TokenProb) * (size_t)k);
    top_k_probs(probs, m->cfg.vocab_size, k, t);
    for (int i = 0; i < k; i++) {
        char *d = cli_token_display(m->tok, t[i].id);
        printf(" %s %.1f%%", d, 100.0 * t[i].prob);
        free(d);
    }
    printf("\n");
    free(t);
}

int cli_one_direction(const char *cmd, const char *token, const char *direction,
                      const char *probe) {
    int given = !!token + !!direction + !!probe;
    if (given == 1) return 0;
    fprintf(stderr, "tunelens %s: %s\n", cmd,
            given ? "give one direction: --token, --direction or --probe, not several"
                  : "missing the direction: --token WORD, --direction FILE[:NAME] or --probe "
                    "PROBES:LABEL");
    return EXIT_USAGE;
}
