// patch.c — `tunelens patch`: activation patching of the residual stream (analysis/patch.h).
#include "../analysis/patch.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../lens/lens.h"
#include "cli.h"
#include "flags.h"

typedef struct {
    const char *device, *model, *adapter, *source, *target, *layer_s, *json;
    int top_k, all_positions, sweep, layer;
} PatchArgs;

// --layer: a layer number (-1: the embeddings) or all
static int set_layer(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    PatchArgs *a = cfg;
    int sweep = !strcmp(v, "all");
    long l = 0;
    if (!sweep) {
        char *end;
        l = strtol(v, &end, 10);
        if (end == v || *end || l < -1 || l > 100000) {
            snprintf(msg, n, "expects a layer number (-1 for the embeddings) or all, got '%s'", v);
            return -1;
        }
    }
    a->layer_s = v, a->sweep = sweep, a->layer = (int)l;
    return 0;
}

#define O(field) offsetof(PatchArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG_MODEL(O(model)),
    FLAG("--source", NULL, FLAG_STRING, O(source), NULL, 0, 0, NULL, "P1",
         "the prompt whose residual stream is patched in\n(required)", NULL),
    FLAG("--target", NULL, FLAG_STRING, O(target), NULL, 0, 0, NULL, "P2",
         "the prompt patched into (required)", NULL),
    FLAG_WITH(set_layer, 0, "--layer", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, "L|all",
              "patch after block L (-1 = the embedding output), or\nsweep every block "
              "(required)", NULL),
    FLAG_POSITION(O(all_positions), "the last position, or every position"),
    FLAG_ADAPTER(O(adapter)),
    FLAG("--top-k", NULL, FLAG_INT, O(top_k), "5", 1, 1000, NULL, "K", "tokens shown per run", NULL),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {model, position, source:{prompt, top:[{id,\ntoken, prob}]}, target:{...}, "
         "patched:{layer,\ntop} (--layer all: [{layer, top, target_answer_prob,\n"
         "source_answer_prob}])} ('-' = stdout)", NULL),
    FLAG_DEVICE(O(device)),
};
#undef O

static const FlagTable TABLE = {
    "patch",
    "usage: tunelens patch --model M --source P1 --target P2 --layer L|all\n"
    "                      [--position last|all] [--adapter A] [--top-k K] [--json FILE]\n"
    "                      [--device auto|cpu|cuda]\n"
    "  Runs the source prompt, takes its residual stream after block L (layer numbering as\n"
    "  `lens`: -1 is the embedding output), puts it into the target prompt's run at that\n"
    "  layer, and continues to the target's next-token distribution. --position last (the\n"
    "  default) patches the source's last position into the target's last; all patches every\n"
    "  position (the prompts must have the same number of tokens). --layer all sweeps every\n"
    "  block (a patching curve) and tabulates, per layer, the probability of the target's\n"
    "  own answer and of the source's. Patching the last layer at the last position gives the\n"
    "  source's prediction exactly.\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

static int argmax(const float *p, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (p[i] > p[best]) best = i;
    return best;
}

int cmd_patch(int argc, char **argv) {
    const char *cmd = "patch";
    PatchArgs a = {0};
    flags_defaults(&TABLE, &a);
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    const char *device = a.device, *model_path = a.model, *adapter = a.adapter,
               *source = a.source, *target = a.target, *json_path = a.json;
    int top_k = a.top_k, all_positions = a.all_positions, sweep = a.sweep, layer = a.layer;
    if (!model_path) return cli_missing(cmd, "--model");
    if (!source) return cli_missing(cmd, "--source");
    if (!target) return cli_missing(cmd, "--target");
    if (!a.layer_s) return cli_missing(cmd, "--layer");
    Error err;
    Model m;
    if (cli_load_model(&m, model_path, adapter, device, &err)) return cli_fail(&err);
    const int L = m.cfg.n_layers, V = m.cfg.vocab_size;
    if (top_k > V) top_k = V;
    int *src = NULL, *tgt = NULL, ns = 0, nt = 0, n_layers = sweep ? L : 1;
    int *layers = xmalloc(sizeof(int) * (size_t)n_layers);
    for (int i = 0; i < n_layers; i++) layers[i] = sweep ? i : layer;
    PatchResult r = {0};
    rc = 0;
    if (cli_encode(&m, source, &src, &ns, &err)) rc = err_wrap(&err, "--source");
    else if (cli_encode(&m, target, &tgt, &nt, &err)) rc = err_wrap(&err, "--target");
    else rc = patch_run(&m, src, ns, tgt, nt, layers, n_layers, all_positions, &r, &err);
    int json_stdout = json_path && !strcmp(json_path, "-");
    int ans_t = rc ? 0 : argmax(r.target_probs, V), ans_s = rc ? 0 : argmax(r.source_probs, V);
    if (!rc && !json_stdout) {
        printf("Source: \"%s\" (%d tokens):", source, ns);
        cli_print_top(&m, r.source_probs, top_k);
        printf("Target: \"%s\" (%d tokens):", target, nt);
        cli_print_top(&m, r.target_probs, top_k);
        if (!sweep) {
            printf("Patched after layer %d (%s position%s):", layer, all_positions ? "every" : "last",
                   all_positions ? "" : "");
            cli_print_top(&m, r.patched[0].probs, top_k);
        } else {
            char *dt = cli_token_display(m.tok, ans_t), *ds = cli_token_display(m.tok, ans_s);
            printf("\nPatched after each layer (%s position):\n", all_positions ? "every" : "last");
            printf("Layer  P(target %s)  P(source %s)  Top %d\n", dt, ds, top_k);
            for (int i = 0; i < r.n_patched; i++) {
                printf("%5d  %*.1f%%  %*.1f%%  ", r.patched[i].layer, (int)strlen(dt) + 9,
                       100.0 * r.patched[i].probs[ans_t], (int)strlen(ds) + 9,
                       100.0 * r.patched[i].probs[ans_s]);
                cli_print_top(&m, r.patched[i].probs, top_k);
            }
            free(dt), free(ds);
        }
    }
    if (!rc && json_path) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", m.path);
        if (adapter) cJSON_AddStringToObject(j, "adapter", adapter);
        cJSON_AddStringToObject(j, "position", all_positions ? "all" : "last");
        cJSON *s = cJSON_AddObjectToObject(j, "source"), *t = cJSON_AddObjectToObject(j, "target");
        cJSON_AddStringToObject(s, "prompt", source);
        cJSON_AddNumberToObject(s, "n_tokens", ns);
        cJSON_AddItemToObject(s, "top", cli_top_json(&m, r.source_probs, top_k));
        cJSON_AddStringToObject(t, "prompt", target);
        cJSON_AddNumberToObject(t, "n_tokens", nt);
        cJSON_AddItemToObject(t, "top", cli_top_json(&m, r.target_probs, top_k));
        cJSON *arr = sweep ? cJSON_AddArrayToObject(j, "patched") : NULL;
        for (int i = 0; i < r.n_patched; i++) {
            cJSON *o = sweep ? cJSON_CreateObject() : cJSON_AddObjectToObject(j, "patched");
            cJSON_AddNumberToObject(o, "layer", r.patched[i].layer);
            cJSON_AddItemToObject(o, "top", cli_top_json(&m, r.patched[i].probs, top_k));
            cJSON_AddNumberToObject(o, "target_answer_prob", r.patched[i].probs[ans_t]);
            cJSON_AddNumberToObject(o, "source_answer_prob", r.patched[i].probs[ans_s]);
            if (sweep) cJSON_AddItemToArray(arr, o);
        }
        rc = cli_write_json(json_path, j, &err);
        cJSON_Delete(j);
    }
    patch_result_free(&r);
    free(src), free(tgt), free(layers);
    model_free(&m);
    return rc ? cli_fail(&err) : 0;
}
