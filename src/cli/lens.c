// lens.c — `tunelens lens`: the logit lens (or a tuned lens) at a position, one row per
// layer; every position; logit differences; several adapters side by side.
#include "../lens/lens.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/tuned_lens.h"
#include "cli.h"
#include "flags.h"

#define MAX_LAYERS 1024
#define MAX_TRACK 32
#define MAX_VARIANTS 16
#define POS_ALL (-2)

typedef struct {
    const char *device, *model, *prompt, *json, *tuned, *diff_s, *compare;
    const char *track_words[MAX_TRACK];
    const char *adapters[MAX_VARIANTS];
    int top_k, n_track, embeddings, n_layers, n_adapters, position, dtype;
    int *layers;                  // NULL: every layer
    int layer_list[MAX_LAYERS];
    char diff_words[2][256];
} LensArgs;


static int set_all_layers(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    ((LensArgs *)cfg)->layers = NULL;
    return 0;
}

static int set_layers(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    LensArgs *a = cfg;
    if (cli_layer_list(v, a->layer_list, MAX_LAYERS, &a->n_layers)) {
        snprintf(msg, n, "expects a comma-separated list of layer numbers like 8,10, got '%s'", v);
        return -1;
    }
    a->layers = a->layer_list;
    return 0;
}

static int add_track(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    LensArgs *a = cfg;
    if (a->n_track == MAX_TRACK) {
        snprintf(msg, n, "can be given at most %d times", MAX_TRACK);
        return -1;
    }
    a->track_words[a->n_track++] = v;
    return 0;
}

static int add_adapter(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    LensArgs *a = cfg;
    if (a->n_adapters == MAX_VARIANTS) {
        snprintf(msg, n, "can be given at most %d times", MAX_VARIANTS);
        return -1;
    }
    a->adapters[a->n_adapters++] = v;
    return 0;
}

// --position: last, all, or a 0-based position
static int set_position(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    LensArgs *a = cfg;
    char *end;
    long p = strtol(v, &end, 10);
    if (!strcmp(v, "last")) a->position = LENS_LAST;
    else if (!strcmp(v, "all")) a->position = POS_ALL;
    else if (end != v && !*end && p >= 0 && p <= 1000000) a->position = (int)p;
    else {
        snprintf(msg, n, "expects last, all or a position 0, 1, ..., got '%s'", v);
        return -1;
    }
    return 0;
}

// --diff TOK1,TOK2: two words, split at the first comma
static int set_diff(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    LensArgs *a = cfg;
    const char *c = strchr(v, ',');
    size_t l1 = c ? (size_t)(c - v) : 0, l2 = c ? strlen(c + 1) : 0;
    if (!c || !l1 || !l2 || l1 >= sizeof a->diff_words[0] || l2 >= sizeof a->diff_words[1]) {
        snprintf(msg, n, "expects two tokens separated by a comma, like ' Paris,' London', got "
                 "'%s'", v);
        return -1;
    }
    memcpy(a->diff_words[0], v, l1);
    a->diff_words[0][l1] = 0;
    memcpy(a->diff_words[1], c + 1, l2 + 1);
    a->diff_s = v;
    return 0;
}

#define O(field) offsetof(LensArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG_MODEL(O(model)),
    FLAG_WITH(add_adapter, 0, "--adapter", "--adapter-path", FLAG_CUSTOM, 0, NULL, 0, 0, NULL,
              "A", "an mlx-lm or PEFT adapter folder (or file); given\nmore than once, the "
              "adapters side by side", NULL),
    FLAG("--compare", NULL, FLAG_STRING, O(compare), NULL, 0, 0, NULL, "base,A,B",
         "model variants side by side (base = no adapter)", NULL),
    FLAG("--prompt", NULL, FLAG_STRING, O(prompt), NULL, 0, 0, NULL, "P", "the prompt (required)", NULL),
    FLAG("--top-k", NULL, FLAG_INT, O(top_k), "5", 1, 1000, NULL, "K", "tokens shown per layer", NULL),
    FLAG_WITH(set_all_layers, 0, "--all-layers", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, NULL,
              "every layer (the default)", NULL),
    FLAG_WITH(set_layers, 0, "--layers", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, "8,10",
              "only these layers (0-based; -1 = the embedding output)", NULL),
    FLAG_WITH(add_track, 0, "--track", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, "WORD",
              "WORD's probability and rank at every layer (its first\ntoken when WORD is "
              "several); repeatable", NULL),
    FLAG_WITH(set_diff, 0, "--diff", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, "TOK1,TOK2",
              "logit(TOK1) - logit(TOK2) at every layer (each word\nmust be one token)", NULL),
    FLAG_WITH(set_position, 0, "--position", NULL, FLAG_CUSTOM, 0, "last", 0, 0, NULL,
              "last|all|N", "the position read: the last, every one, or N\n(0-based)", NULL),
    FLAG("--tuned", NULL, FLAG_STRING, O(tuned), NULL, 0, 0, NULL, "F",
         "a tuned lens (tunelens tuned-lens) instead of the\nplain logit lens", NULL),
    FLAG("--embeddings", NULL, FLAG_SWITCH, O(embeddings), NULL, 0, 0, NULL, NULL,
         "add layer -1 (the embedding output)", NULL),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {model, prompt, tokens, [position,] layers:[{layer,\ntop, entropy, kl_to_final, "
         "tracked, diff}], final}\n(--position all: positions:[{position, layers,\nfinal}]; "
         "several variants: variants:{NAME: ...})\n('-' = stdout)", NULL),
    FLAG_DTYPE(O(dtype)),
    FLAG_DEVICE(O(device)),
};
#undef O

static const FlagTable TABLE = {
    "lens",
    "usage: tunelens lens --model M [--adapter A]... [--compare base,A,B] --prompt P\n"
    "                     [--top-k K] [--all-layers | --layers 8,10] [--track WORD]...\n"
    "                     [--diff TOK1,TOK2] [--position last|all|N] [--tuned F]\n"
    "                     [--embeddings] [--json FILE] [--dtype auto|f32|bf16|tf32]\n"
    "                     [--device auto|cpu|cuda]\n"
    "  Layer i is the output of block i, unembedded through the model's final RMSNorm and\n"
    "  head, softmax over the vocabulary, at the last position (the last layer is the model's\n"
    "  own prediction). kl_to_final is KL(final || layer) in nats, as tuned-lens defines it.\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

static cJSON *token_json(const Tokenizer *t, int id, double prob, int with_prob) {
    cJSON *o = cJSON_CreateObject();
    char *s = cli_token_text(t, id);
    cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "token", s);
    if (with_prob) cJSON_AddNumberToObject(o, "prob", prob);
    free(s);
    return o;
}

// What every variant and position shares: the words and their ids.
typedef struct {
    const Tokenizer *tok;
    const char **track_words;
    const int *diff;  // NULL or 2 ids
    int V;
} View;

// {position, layers:[...], final} of one result
static void result_json(cJSON *o, const View *w, const LensResult *r, int with_position) {
    if (with_position) cJSON_AddNumberToObject(o, "position", r->position);
    cJSON *layers = cJSON_AddArrayToObject(o, "layers");
    for (int l = 0; l < r->n_layers; l++) {
        const LensLayer *L = &r->layers[l];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "layer", L->layer);
        cJSON *top = cJSON_AddArrayToObject(x, "top");
        for (int k = 0; k < L->top_k; k++)
            cJSON_AddItemToArray(top, token_json(w->tok, L->top[k].id, L->top[k].prob, 1));
        cJSON_AddNumberToObject(x, "entropy", L->entropy);
        cJSON_AddNumberToObject(x, "entropy_normalized", L->entropy / log(w->V));
        cJSON_AddNumberToObject(x, "kl_to_final", L->kl_to_final);
        cJSON *tr = cJSON_AddArrayToObject(x, "tracked");
        for (int t = 0; t < r->n_tracked; t++) {
            cJSON *y = cJSON_CreateObject();
            cJSON_AddStringToObject(y, "token", w->track_words[t]);
            cJSON_AddNumberToObject(y, "id", L->tracked[t].id);
            cJSON_AddNumberToObject(y, "prob", L->tracked[t].prob);
            cJSON_AddNumberToObject(y, "rank", L->tracked_rank[t]);
            cJSON_AddItemToArray(tr, y);
        }
        if (w->diff) cJSON_AddNumberToObject(x, "diff", L->diff);
        cJSON_AddItemToArray(layers, x);
    }
    cJSON_AddItemToObject(o, "final", token_json(w->tok, r->final.id, r->final.prob, 1));
}

// One variant's results (np positions) into o: the single position's keys, or positions:[...]
// (the plain last-position lens keeps its keys as they were: no "position")
static void variant_json(cJSON *o, const View *w, const LensResult *r, int np, int all,
                         const int *ids, int with_position) {
    if (!all) {
        result_json(o, w, &r[0], with_position);
        return;
    }
    cJSON *ps = cJSON_AddArrayToObject(o, "positions");
    for (int p = 0; p < np; p++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddItemToObject(x, "token", token_json(w->tok, ids[r[p].position], 0, 0));
        result_json(x, w, &r[p], 1);
        cJSON_AddItemToArray(ps, x);
    }
}

static void print_prompt(const Tokenizer *tok, const char *prompt, const int *ids, int n) {
    printf("Prompt: \"%s\" (%d tokens):", prompt, n);
    for (int i = 0; i < n; i++) {
        char *d = cli_token_display(tok, ids[i]);
        printf(" %s", d);
        free(d);
    }
    printf("\n");
}

// One variant, one position: a row per layer.
static void print_table(const View *w, const LensResult *r) {
    printf("\nLayer  Entropy  KL(final)");
    if (w->diff) printf("  %10s", "logit diff");
    for (int t = 0; t < r->n_tracked; t++) printf("  %-16.16s", w->track_words[t]);
    printf("  Top %d\n", r->n_layers ? r->layers[0].top_k : 0);
    for (int l = 0; l < r->n_layers; l++) {
        const LensLayer *L = &r->layers[l];
        if (L->layer < 0) printf("  emb");
        else printf("%5d", L->layer);
        printf("  %7.3f  %9.4f", L->entropy, L->kl_to_final);
        if (w->diff) printf("  %10.4f", L->diff);
        for (int t = 0; t < r->n_tracked; t++) {
            char cell[32];
            snprintf(cell, sizeof cell, "%.1f%% #%d", 100.0 * L->tracked[t].prob, L->tracked_rank[t]);
            printf("  %-16s", cell);
        }
        printf(" ");
        for (int k = 0; k < L->top_k; k++) {
            char *d = cli_token_display(w->tok, L->top[k].id);
            printf(" %s %.1f%%", d, 100.0 * L->top[k].prob);
            free(d);
        }
        printf("\n");
    }
    char *d = cli_token_display(w->tok, r->final.id);
    printf("\nFinal prediction: %s (%.1f%%)\n", d, 100.0 * r->final.prob);
    free(d);
}

// A token shown in width columns (one a code point; a long one cut with '~')
static void cell(const Tokenizer *tok, int id, int width) {
    char *d = cli_token_display(tok, id);
    int cols = 0;
    size_t cut = 0, i = 0;
    for (; d[i]; i++) {
        if (((unsigned char)d[i] & 0xC0) == 0x80) continue;  // a UTF-8 continuation byte
        if (++cols == width) cut = i;
    }
    if (cols > width) {
        d[cut] = '~', d[cut + 1] = 0;
        cols = width;
    }
    printf(" %s%*s", d, width - cols, "");
    free(d);
}

// One variant, every position: a grid of top-1 tokens, layers x positions.
static void print_grid(const View *w, const LensResult *r, int np, const int *ids) {
    const int width = 10;
    printf("\nTop-1 token per layer (rows) and position (columns; the input token on top)\n");
    printf("Layer");
    for (int p = 0; p < np; p++) cell(w->tok, ids[r[p].position], width);
    printf("\n");
    for (int l = 0; np && l < r[0].n_layers; l++) {
        if (r[0].layers[l].layer < 0) printf("  emb");
        else printf("%5d", r[0].layers[l].layer);
        for (int p = 0; p < np; p++) cell(w->tok, r[p].layers[l].top[0].id, width);
        printf("\n");
    }
    const char *what[2] = {"KL(final || layer), nats", "logit diff"};
    for (int k = 0; k < (w->diff ? 2 : 1); k++) {
        printf("\n%s per layer and position\nLayer", what[k]);
        for (int p = 0; p < np; p++) printf(" %*d", width, r[p].position);
        printf("\n");
        for (int l = 0; np && l < r[0].n_layers; l++) {
            if (r[0].layers[l].layer < 0) printf("  emb");
            else printf("%5d", r[0].layers[l].layer);
            for (int p = 0; p < np; p++)
                printf(" %*.4f", width, k ? r[p].layers[l].diff : r[p].layers[l].kl_to_final);
            printf("\n");
        }
    }
}

// Several variants, one position: a column group (top-1, KL, diff) per variant.
static void print_compare(const View *w, LensResult *const *res, const char **names, int nv) {
    const int gw = w->diff ? 40 : 29;
    printf("\nLayer");
    for (int v = 0; v < nv; v++) {
        int n = (int)strlen(names[v]);  // a long path keeps its end: the adapter's own name
        if (n > gw - 2) printf(" | ~%-*s", gw - 3, names[v] + n - (gw - 3));
        else printf(" | %-*s", gw - 2, names[v]);
    }
    printf("\n     ");
    for (int v = 0; v < nv; v++) {
        printf(" | %-13s %6s %6s", "top-1", "prob", "KL");
        if (w->diff) printf(" %10s", "diff");
    }
    printf("\n");
    for (int l = 0; l < res[0][0].n_layers; l++) {
        if (res[0][0].layers[l].layer < 0) printf("  emb");
        else printf("%5d", res[0][0].layers[l].layer);
        for (int v = 0; v < nv; v++) {
            const LensLayer *L = &res[v][0].layers[l];
            printf(" |");
            cell(w->tok, L->top[0].id, 13);
            printf(" %5.1f%% %6.3f", 100.0 * L->top[0].prob, L->kl_to_final);
            if (w->diff) printf(" %10.4f", L->diff);
        }
        printf("\n");
    }
    printf("\nFinal prediction:");
    for (int v = 0; v < nv; v++) {
        char *d = cli_token_display(w->tok, res[v][0].final.id);
        printf("%s %s %s (%.1f%%)", v ? "," : "", names[v], d, 100.0 * res[v][0].final.prob);
        free(d);
    }
    printf("\n");
}

// A word that must be one token (--diff): its id, with a note saying which token it is.
static int one_token(const Model *m, const char *word, int *id, Error *err) {
    int *w, nw;
    if (tokenizer_encode(m->tok, word, strlen(word), 0, &w, &nw, err)) return -1;
    if (nw != 1) {
        StrBuf b = {0};
        for (int i = 0; i < nw; i++) {
            char *d = cli_token_display(m->tok, w[i]);
            sb_printf(&b, "%s%s (id %d)", i ? ", " : "", d, w[i]);
            free(d);
        }
        err_set(err, "--diff '%s' is not one token: it becomes %d tokens%s%s; give a single "
                "token (a leading space is part of the token, e.g. ' Paris')", word, nw,
                nw ? ": " : "", nw ? b.p : "");
        sb_free(&b);
        free(w);
        return -1;
    }
    *id = w[0];
    free(w);
    if (model_check_ids(m, id, 1, err)) return err_wrap(err, "--diff '%s'", word);
    char *d = cli_token_display(m->tok, *id);
    fprintf(stderr, "note: --diff '%s' is token %d, %s\n", word, *id, d);
    free(d);
    return 0;
}

// The lens of every asked position of one model variant: out (np) results.
static int run_variant(const Model *m, const int *ids, int n, const LensArgs *a, const int *layers,
                       int n_layers, const int *track_ids, const LensOpts *base, LensResult *out,
                       int *np, Error *err) {
    if (a->position != POS_ALL) {
        LensOpts o = *base;
        o.position = a->position;
        *np = 1;
        return lens_run_opts(m, ids, n, a->top_k, layers, n_layers, track_ids, a->n_track, &o,
                             out, err);
    }
    const int R = m->cfg.n_layers + 1, C = m->cfg.dim;
    float *every = malloc(sizeof(float) * (size_t)R * n * C), *rows = xmalloc(sizeof(float) * R * C);
    if (!every) {
        free(rows);
        return err_set(err, "out of memory for %d positions' residuals", n);
    }
    int rc = lens_residuals_every(m, ids, n, every, err);
    *np = 0;
    for (int p = 0; rc == 0 && p < n; p++) {
        for (int r = 0; r < R; r++)
            memcpy(rows + (size_t)r * C, every + ((size_t)r * n + p) * C, sizeof(float) * C);
        LensOpts o = *base;
        o.position = p;
        rc = lens_run_rows(m, rows, a->top_k, layers, n_layers, track_ids, a->n_track, &o,
                           &out[p], err);
        if (rc == 0) (*np)++;
    }
    free(every), free(rows);
    return rc;
}

int cmd_lens(int argc, char **argv) {
    const char *cmd = "lens";
    LensArgs a = {0};
    flags_defaults(&TABLE, &a);
    a.position = LENS_LAST;
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    if (!a.model) return cli_missing(cmd, "--model");
    if (!a.prompt) return cli_missing(cmd, "--prompt");
    // the model variants: --compare base,A,B, or each --adapter, or the model alone
    const char *names[MAX_VARIANTS] = {0}, *adapters[MAX_VARIANTS] = {0};
    char *compare_copy = NULL;
    int nv = 0;
    if (a.compare && a.n_adapters) {
        fprintf(stderr, "tunelens lens: --compare names the adapters itself; give it or "
                "--adapter, not both\n");
        return EXIT_USAGE;
    }
    if (a.compare) {
        compare_copy = xstrdup(a.compare);
        for (char *save = NULL, *t = strtok_r(compare_copy, ",", &save); t;
             t = strtok_r(NULL, ",", &save)) {
            if (nv == MAX_VARIANTS) {
                fprintf(stderr, "tunelens lens: --compare takes at most %d variants\n", MAX_VARIANTS);
                free(compare_copy);
                return EXIT_USAGE;
            }
            names[nv] = t, adapters[nv] = strcmp(t, "base") ? t : NULL, nv++;
        }
        if (nv == 0) {
            fprintf(stderr, "tunelens lens: --compare expects a list like base,ADAPTER1,ADAPTER2\n");
            free(compare_copy);
            return EXIT_USAGE;
        }
    } else if (a.n_adapters) {
        for (; nv < a.n_adapters; nv++) names[nv] = adapters[nv] = a.adapters[nv];
    } else {
        names[0] = "base", adapters[0] = NULL, nv = 1;
    }
    Error err;
    for (int v = 0; nv > 1 && v < nv; v++)  // fail before any model loads, not after the first
        if (adapters[v] && !file_exists(adapters[v]) && !dir_exists(adapters[v])) {
            err_set(&err, "%s: adapter '%s' cannot be read (no such file or folder)",
                    a.compare ? "--compare" : "--adapter", adapters[v]);
            free(compare_copy);
            return cli_fail(&err);
        }
    Model m, mv;
    if (cli_load_model_dtype(&m, a.model, adapters[0], a.device, a.dtype, &err)) {
        if (nv > 1) err_wrap(&err, "variant '%s'", names[0]);
        free(compare_copy);
        return cli_fail(&err);
    }
    int *ids = NULL, n = 0, track_ids[MAX_TRACK], diff_ids[2], *layers = a.layers,
        n_layers = a.n_layers, nps = 0;
    LensResult *res[MAX_VARIANTS] = {0};
    TunedLens tl = {0};
    int have_tl = 0;
    if (!layers) {  // every block, plus the embeddings when asked
        n_layers = 0;
        if (a.embeddings) a.layer_list[n_layers++] = -1;
        for (int l = 0; l < m.cfg.n_layers && n_layers < MAX_LAYERS; l++) a.layer_list[n_layers++] = l;
        layers = a.layer_list;
    } else if (a.embeddings && n_layers < MAX_LAYERS) {
        memmove(a.layer_list + 1, a.layer_list, sizeof(int) * (size_t)n_layers);
        a.layer_list[0] = -1;
        n_layers++;
    }
    for (int t = 0; t < a.n_track; t++) {
        int *w, nw;
        if (tokenizer_encode(m.tok, a.track_words[t], strlen(a.track_words[t]), 0, &w, &nw, &err))
            goto fail;
        if (nw == 0) {
            free(w);
            err_set(&err, "--track '%s' encodes to no tokens", a.track_words[t]);
            goto fail;
        }
        if (nw > 1) {
            char *d = cli_token_display(m.tok, w[0]);
            fprintf(stderr, "note: '%s' is %d tokens; tracking its first, %s\n", a.track_words[t], nw, d);
            free(d);
        }
        track_ids[t] = w[0];
        rc = model_check_ids(&m, w, 1, &err);
        free(w);
        if (rc) {
            err_wrap(&err, "--track '%s'", a.track_words[t]);
            goto fail;
        }
    }
    if (a.diff_s && (one_token(&m, a.diff_words[0], &diff_ids[0], &err) ||
                     one_token(&m, a.diff_words[1], &diff_ids[1], &err)))
        goto fail;
    if (a.tuned) {
        if (tuned_lens_load(&tl, a.tuned, &m.cfg, &err)) goto fail;
        have_tl = 1;
    }
    if (cli_encode(&m, a.prompt, &ids, &n, &err)) goto fail;
    if (a.position >= 0 && a.position >= n) {
        err_set(&err, "--position %d is outside the prompt's %d tokens (positions 0..%d)",
                a.position, n, n - 1);
        goto fail;
    }
    LensOpts opts = {LENS_LAST, a.diff_s ? diff_ids : NULL, have_tl ? &tl : NULL};
    for (int v = 0; v < nv; v++) {
        res[v] = xcalloc((size_t)n, sizeof(LensResult));
        const Model *mm = &m;
        if (v > 0) {
            if (cli_load_model_dtype(&mv, a.model, adapters[v], a.device, a.dtype, &err)) {
                err_wrap(&err, "variant '%s'", names[v]);
                goto fail;
            }
            mm = &mv;
        }
        rc = run_variant(mm, ids, n, &a, layers, n_layers, track_ids, &opts, res[v], &nps, &err);
        if (v > 0) model_free(&mv);
        if (rc) {
            if (nv > 1) err_wrap(&err, "variant '%s'", names[v]);
            goto fail;
        }
    }
    View w = {m.tok, a.track_words, a.diff_s ? diff_ids : NULL, m.cfg.vocab_size};
    int all = a.position == POS_ALL;
    if (!a.json || strcmp(a.json, "-")) {
        print_prompt(m.tok, a.prompt, ids, n);
        if (a.diff_s)
            printf("Logit diff: logit('%s') - logit('%s') (tokens %d, %d)\n", a.diff_words[0],
                   a.diff_words[1], diff_ids[0], diff_ids[1]);
        if (a.tuned) printf("Tuned lens: %s\n", a.tuned);
        if (!all && res[0][0].position != n - 1) printf("Position: %d\n", res[0][0].position);
        if (nv > 1 && !all) print_compare(&w, res, names, nv);
        for (int v = 0; v < nv && (nv == 1 || all); v++) {
            if (nv > 1) printf("\n== %s ==\n", names[v]);
            if (all) print_grid(&w, res[v], nps, ids);
            else print_table(&w, &res[v][0]);
        }
    }
    if (a.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", m.path);
        cJSON_AddStringToObject(j, "prompt", a.prompt);
        cJSON *toks = cJSON_AddArrayToObject(j, "tokens");
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(toks, token_json(m.tok, ids[i], 0, 0));
        if (a.tuned) cJSON_AddStringToObject(j, "tuned", a.tuned);
        if (a.diff_s) {
            cJSON *d = cJSON_AddArrayToObject(j, "diff_tokens");
            for (int k = 0; k < 2; k++) {
                cJSON *x = token_json(m.tok, diff_ids[k], 0, 0);
                cJSON_AddStringToObject(x, "word", a.diff_words[k]);
                cJSON_AddItemToArray(d, x);
            }
        }
        if (nv == 1 && !a.compare) {
            variant_json(j, &w, res[0], nps, all, ids, a.position != LENS_LAST);
        } else {
            cJSON *order = cJSON_AddArrayToObject(j, "variant_order");
            cJSON *vs = cJSON_AddObjectToObject(j, "variants");
            for (int v = 0; v < nv; v++) {
                cJSON_AddItemToArray(order, cJSON_CreateString(names[v]));
                cJSON *x = cJSON_CreateObject();
                if (adapters[v]) cJSON_AddStringToObject(x, "adapter", adapters[v]);
                else cJSON_AddNullToObject(x, "adapter");
                variant_json(x, &w, res[v], nps, all, ids, a.position != LENS_LAST);
                cJSON_AddItemToObject(vs, names[v], x);
            }
        }
        rc = cli_write_json(a.json, j, &err);
        cJSON_Delete(j);
        if (rc) goto fail;
    }
    rc = 0;
    goto done;
fail:
    rc = cli_fail(&err);
done:
    for (int v = 0; v < nv; v++) {
        for (int p = 0; res[v] && p < n; p++) lens_result_free(&res[v][p]);
        free(res[v]);
    }
    if (have_tl) tuned_lens_free(&tl);
    free(ids), free(compare_copy);
    model_free(&m);
    return rc;
}
