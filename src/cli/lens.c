// lens.c — `tunelens lens`: the logit lens at the last position, one row per layer.
#include "../lens/lens.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *USAGE =
    "usage: tunelens lens --model M [--adapter A] --prompt P [--top-k K] [--all-layers |\n"
    "                     --layers 8,10] [--track WORD]... [--embeddings] [--json FILE]\n"
    "                     [--device auto|cpu|cuda]\n"
    "  Layer i is the output of block i, unembedded through the model's final RMSNorm and\n"
    "  head, softmax over the vocabulary, at the last position (the last layer is the model's\n"
    "  own prediction). Default: every layer, top-k 5. --embeddings adds layer -1 (the\n"
    "  embedding output). --track WORD reports WORD's probability and rank at every layer\n"
    "  (its first token when WORD is several). --json FILE ('-' = stdout) writes\n"
    "  {model, prompt, tokens, layers:[{layer, top, entropy, tracked}], final}.\n"
    "  --device: where the model runs (auto: a CUDA GPU when one answers, else the CPU).\n";

#define MAX_LAYERS 1024
#define MAX_TRACK 32

static int parse_layer_list(const char *s, int *layers, int *n) {
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < -1 || v > 100000 || *n >= MAX_LAYERS) return -1;
        layers[(*n)++] = (int)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return *n ? 0 : -1;
}

static cJSON *token_json(const Tokenizer *t, int id, double prob, int with_prob) {
    cJSON *o = cJSON_CreateObject();
    char *s = cli_token_text(t, id);
    cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "token", s);
    if (with_prob) cJSON_AddNumberToObject(o, "prob", prob);
    free(s);
    return o;
}

static cJSON *lens_json(const Model *m, const char *prompt, const int *ids, int n,
                        const LensResult *r, const char **track_words) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", m->path);
    cJSON_AddStringToObject(j, "prompt", prompt);
    cJSON *toks = cJSON_AddArrayToObject(j, "tokens");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(toks, token_json(m->tok, ids[i], 0, 0));
    cJSON *layers = cJSON_AddArrayToObject(j, "layers");
    for (int l = 0; l < r->n_layers; l++) {
        const LensLayer *L = &r->layers[l];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "layer", L->layer);
        cJSON *top = cJSON_AddArrayToObject(o, "top");
        for (int k = 0; k < L->top_k; k++)
            cJSON_AddItemToArray(top, token_json(m->tok, L->top[k].id, L->top[k].prob, 1));
        cJSON_AddNumberToObject(o, "entropy", L->entropy);
        cJSON_AddNumberToObject(o, "entropy_normalized", L->entropy / log(m->cfg.vocab_size));
        cJSON *tr = cJSON_AddArrayToObject(o, "tracked");
        for (int t = 0; t < r->n_tracked; t++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "token", track_words[t]);
            cJSON_AddNumberToObject(x, "id", L->tracked[t].id);
            cJSON_AddNumberToObject(x, "prob", L->tracked[t].prob);
            cJSON_AddNumberToObject(x, "rank", L->tracked_rank[t]);
            cJSON_AddItemToArray(tr, x);
        }
        cJSON_AddItemToArray(layers, o);
    }
    cJSON_AddItemToObject(j, "final", token_json(m->tok, r->final.id, r->final.prob, 1));
    return j;
}

static void print_table(const Model *m, const char *prompt, const int *ids, int n,
                        const LensResult *r, const char **track_words) {
    printf("Prompt: \"%s\" (%d tokens):", prompt, n);
    for (int i = 0; i < n; i++) {
        char *d = cli_token_display(m->tok, ids[i]);
        printf(" %s", d);
        free(d);
    }
    printf("\n\nLayer  Entropy");
    for (int t = 0; t < r->n_tracked; t++) printf("  %-16.16s", track_words[t]);
    printf("  Top %d\n", r->n_layers ? r->layers[0].top_k : 0);
    for (int l = 0; l < r->n_layers; l++) {
        const LensLayer *L = &r->layers[l];
        if (L->layer < 0) printf("  emb");
        else printf("%5d", L->layer);
        printf("  %7.3f", L->entropy);
        for (int t = 0; t < r->n_tracked; t++) {
            char cell[32];
            snprintf(cell, sizeof cell, "%.1f%% #%d", 100.0 * L->tracked[t].prob, L->tracked_rank[t]);
            printf("  %-16s", cell);
        }
        printf(" ");
        for (int k = 0; k < L->top_k; k++) {
            char *d = cli_token_display(m->tok, L->top[k].id);
            printf(" %s %.1f%%", d, 100.0 * L->top[k].prob);
            free(d);
        }
        printf("\n");
    }
    char *d = cli_token_display(m->tok, r->final.id);
    printf("\nFinal prediction: %s (%.1f%%)\n", d, 100.0 * r->final.prob);
    free(d);
}

int cmd_lens(int argc, char **argv) {
    const char *cmd = "lens", *device = "auto", *model_path = NULL, *adapter = NULL, *prompt = NULL,
               *json_path = NULL, *track_words[MAX_TRACK];
    int top_k = 5, n_track = 0, embeddings = 0, rc, *layers = NULL, n_layers = 0;
    int layer_list[MAX_LAYERS];
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(f, "--device")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &device))) return rc;
        } else if (!strcmp(f, "--model")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &model_path))) return rc;
        } else if (!strcmp(f, "--adapter") || !strcmp(f, "--adapter-path")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &adapter))) return rc;
        } else if (!strcmp(f, "--prompt")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &prompt))) return rc;
        } else if (!strcmp(f, "--top-k")) {
            if ((rc = cli_int(cmd, argc, argv, &i, 1, 1000, &top_k))) return rc;
        } else if (!strcmp(f, "--all-layers")) {
            layers = NULL;
        } else if (!strcmp(f, "--layers")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &v))) return rc;
            if (parse_layer_list(v, layer_list, &n_layers)) {
                fprintf(stderr, "tunelens lens: --layers expects a comma-separated list of layer "
                        "numbers like 8,10, got '%s'\n", v);
                return EXIT_USAGE;
            }
            layers = layer_list;
        } else if (!strcmp(f, "--track")) {
            if (n_track == MAX_TRACK) {
                fprintf(stderr, "tunelens lens: at most %d --track words\n", MAX_TRACK);
                return EXIT_USAGE;
            }
            if ((rc = cli_value(cmd, argc, argv, &i, &track_words[n_track]))) return rc;
            n_track++;
        } else if (!strcmp(f, "--embeddings")) {
            embeddings = 1;
        } else if (!strcmp(f, "--json")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &json_path))) return rc;
        } else {
            return cli_unknown(cmd, f);
        }
    }
    if (!model_path) return cli_missing(cmd, "--model");
    if (!prompt) return cli_missing(cmd, "--prompt");
    Error err;
    Model m;
    if (cli_load_model(&m, model_path, adapter, device, &err)) return cli_fail(&err);
    int *ids = NULL, n = 0, track_ids[MAX_TRACK];
    LensResult r = {0};
    if (!layers) {  // every block, plus the embeddings when asked
        n_layers = 0;
        if (embeddings) layer_list[n_layers++] = -1;
        for (int l = 0; l < m.cfg.n_layers && n_layers < MAX_LAYERS; l++) layer_list[n_layers++] = l;
        layers = layer_list;
    } else if (embeddings && n_layers < MAX_LAYERS) {
        memmove(layer_list + 1, layer_list, sizeof(int) * (size_t)n_layers);
        layer_list[0] = -1;
        n_layers++;
    }
    for (int t = 0; t < n_track; t++) {
        int *w, nw;
        if (tokenizer_encode(m.tok, track_words[t], strlen(track_words[t]), 0, &w, &nw, &err))
            goto fail;
        if (nw == 0) {
            free(w);
            err_set(&err, "--track '%s' encodes to no tokens", track_words[t]);
            goto fail;
        }
        if (nw > 1) {
            char *d = cli_token_display(m.tok, w[0]);
            fprintf(stderr, "note: '%s' is %d tokens; tracking its first, %s\n", track_words[t], nw, d);
            free(d);
        }
        track_ids[t] = w[0];
        rc = model_check_ids(&m, w, 1, &err);
        free(w);
        if (rc) {
            err_wrap(&err, "--track '%s'", track_words[t]);
            goto fail;
        }
    }
    if (cli_encode(&m, prompt, &ids, &n, &err) ||
        lens_run(&m, ids, n, top_k, layers, n_layers, track_ids, n_track, &r, &err))
        goto fail;
    int json_stdout = json_path && !strcmp(json_path, "-");
    if (!json_stdout) print_table(&m, prompt, ids, n, &r, track_words);
    if (json_path) {
        cJSON *j = lens_json(&m, prompt, ids, n, &r, track_words);
        rc = cli_write_json(json_path, j, &err);
        cJSON_Delete(j);
        if (rc) goto fail;
    }
    lens_result_free(&r);
    free(ids);
    model_free(&m);
    return 0;
fail:
    lens_result_free(&r);
    free(ids);
    model_free(&m);
    return cli_fail(&err);
}
