// lens.c — `tunelens lens`: the logit lens at the last position, one row per layer.
#include "../lens/lens.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flags.h"

#define MAX_LAYERS 1024
#define MAX_TRACK 32

typedef struct {
    const char *device, *model, *adapter, *prompt, *json;
    const char *track_words[MAX_TRACK];
    int top_k, n_track, embeddings, n_layers;
    int *layers;                  // NULL: every layer
    int layer_list[MAX_LAYERS];
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

#define O(field) offsetof(LensArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG("--model", NULL, FLAG_STRING, O(model), NULL, 0, 0, NULL, "M",
         "a Hugging Face model folder or a .gguf file (required)", NULL),
    FLAG_ADAPTER(O(adapter)),
    FLAG("--prompt", NULL, FLAG_STRING, O(prompt), NULL, 0, 0, NULL, "P", "the prompt (required)", NULL),
    FLAG("--top-k", NULL, FLAG_INT, O(top_k), "5", 1, 1000, NULL, "K", "tokens shown per layer", NULL),
    FLAG_WITH(set_all_layers, 0, "--all-layers", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, NULL,
              "every layer (the default)", NULL),
    FLAG_WITH(set_layers, 0, "--layers", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, "8,10",
              "only these layers (0-based; -1 = the embedding output)", NULL),
    FLAG_WITH(add_track, 0, "--track", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, "WORD",
              "WORD's probability and rank at every layer (its first\ntoken when WORD is "
              "several); repeatable", NULL),
    FLAG("--embeddings", NULL, FLAG_SWITCH, O(embeddings), NULL, 0, 0, NULL, NULL,
         "add layer -1 (the embedding output)", NULL),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {model, prompt, tokens, layers:[{layer, top,\nentropy, tracked}], final} "
         "('-' = stdout)", NULL),
    FLAG_DEVICE(O(device)),
};
#undef O

static const FlagTable TABLE = {
    "lens",
    "usage: tunelens lens --model M [--adapter A] --prompt P [--top-k K] [--all-layers |\n"
    "                     --layers 8,10] [--track WORD]... [--embeddings] [--json FILE]\n"
    "                     [--device auto|cpu|cuda]\n"
    "  Layer i is the output of block i, unembedded through the model's final RMSNorm and\n"
    "  head, softmax over the vocabulary, at the last position (the last layer is the model's\n"
    "  own prediction).\n",
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
    const char *cmd = "lens";
    LensArgs a = {0};
    flags_defaults(&TABLE, &a);
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    const char *device = a.device, *model_path = a.model, *adapter = a.adapter,
               *prompt = a.prompt, *json_path = a.json, **track_words = a.track_words;
    int top_k = a.top_k, n_track = a.n_track, embeddings = a.embeddings, *layers = a.layers,
        n_layers = a.n_layers;
    if (!model_path) return cli_missing(cmd, "--model");
    if (!prompt) return cli_missing(cmd, "--prompt");
    Error err;
    Model m;
    if (cli_load_model(&m, model_path, adapter, device, &err)) return cli_fail(&err);
    int *ids = NULL, n = 0, track_ids[MAX_TRACK];
    LensResult r = {0};
    if (!layers) {  // every block, plus the embeddings when asked
        n_layers = 0;
        if (embeddings) a.layer_list[n_layers++] = -1;
        for (int l = 0; l < m.cfg.n_layers && n_layers < MAX_LAYERS; l++) a.layer_list[n_layers++] = l;
        layers = a.layer_list;
    } else if (embeddings && n_layers < MAX_LAYERS) {
        memmove(a.layer_list + 1, a.layer_list, sizeof(int) * (size_t)n_layers);
        a.layer_list[0] = -1;
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
