// weight_diff.c — `tunelens weight-diff`: per layer and projection, the size and effective rank
// of an adapter's update (analysis/weight_diff.h).
#include "../analysis/weight_diff.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flags.h"

typedef struct {
    const char *adapter, *model, *json;
} WeightDiffArgs;

#define O(field) offsetof(WeightDiffArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG_ADAPTER(O(adapter)),
    FLAG("--model", NULL, FLAG_STRING, O(model), NULL, 0, 0, NULL, "M",
         "the base model (a Hugging Face folder or a .gguf):\nneeded for full fine-tunes and "
         "PEFT adapters; adds\n|dW| / |W|", NULL),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {adapter, model, type, total_norm, layers:[{layer,\nprojections:[{name, shape, "
         "norm, w_norm, relative,\nrank, scale, effective_rank, singular_values}]}]}\n('-' = "
         "stdout)", NULL),
};
#undef O

static const FlagTable TABLE = {
    "weight-diff",
    "usage: tunelens weight-diff --adapter A [--model M] [--json FILE]\n"
    "  Per layer and projection, the Frobenius norm of the adapter's update dW and, with\n"
    "  --model, its size relative to the weight, |dW| / |W|.\n"
    "  LoRA (mlx-lm: A (in, r), B (r, out), y += scale (x A) B): dW = scale (A B)^T; its\n"
    "  singular values come from the r x r core (float64 QR and Jacobi), and its effective\n"
    "  rank is exp(-sum p_i ln p_i), p_i = s_i / sum s (Roy and Vetterli 2007): 1 when one\n"
    "  direction carries the whole update, r when all r carry it equally.\n"
    "  DoRA: the norm is that of the whole change W' - W with --model (the magnitude's row\n"
    "  scaling included), of the LoRA part without it; the rank is the LoRA part's.\n"
    "  Full fine-tune: dW = W' - W for every tensor the adapter holds (needs --model).\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

static void print_table(const WeightDiff *w, const WeightDiffArgs *a) {
    printf("Adapter %s (%s)%s%s\n", a->adapter, w->kind, a->model ? ", base " : "",
           a->model ? a->model : "");
    int lora = strcmp(w->kind, "full") != 0;
    printf("%5s  %-26s %12s %12s", "layer", "tensor", "shape", "|dW|");
    if (a->model) printf(" %11s", "|dW|/|W|");
    if (lora) printf(" %14s   %s", "eff. rank / r", "singular values");
    printf("\n");
    for (int i = 0; i < w->n; i++) {
        const WeightDiffEntry *e = &w->e[i];
        char shape[32];
        if (e->in > 1) snprintf(shape, sizeof shape, "%dx%d", e->out, e->in);
        else snprintf(shape, sizeof shape, "%d", e->out);
        printf("%5d  %-26.26s %12s %12.5g", e->layer, e->name, shape, e->norm);
        if (a->model) printf(" %11.4g", e->relative);
        if (e->rank) {
            printf(" %9.3f / %-3d  ", e->eff_rank, e->rank);
            for (int k = 0; k < e->rank && k < 8; k++) printf(" %.4g", e->sv[k]);
            if (e->rank > 8) printf(" ...");
        }
        printf("\n");
    }
    printf("Total |dW| (root of the sum of squares): %.6g\n", w->total_norm);
    if (!strcmp(w->kind, "dora") && !a->model)
        printf("Note: DoRA without --model: the norms are the LoRA part's; the magnitude's row "
               "scaling needs the base weights.\n");
}

static cJSON *to_json(const WeightDiff *w, const WeightDiffArgs *a) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "adapter", a->adapter);
    if (a->model) cJSON_AddStringToObject(j, "model", a->model);
    else cJSON_AddNullToObject(j, "model");
    cJSON_AddStringToObject(j, "type", w->kind);
    cJSON_AddNumberToObject(j, "total_norm", w->total_norm);
    cJSON *layers = cJSON_AddArrayToObject(j, "layers"), *cur = NULL;
    int cur_layer = -2;
    for (int i = 0; i < w->n; i++) {
        const WeightDiffEntry *e = &w->e[i];
        if (!cur || e->layer != cur_layer) {
            cJSON *lo = cJSON_CreateObject();
            cJSON_AddNumberToObject(lo, "layer", e->layer);
            cur = cJSON_AddArrayToObject(lo, "projections");
            cJSON_AddItemToArray(layers, lo);
            cur_layer = e->layer;
        }
        cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "name", e->name);
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(e->out));
        if (e->in > 1) cJSON_AddItemToArray(sh, cJSON_CreateNumber(e->in));
        cJSON_AddItemToObject(o, "shape", sh);
        cJSON_AddNumberToObject(o, "norm", e->norm);
        if (a->model) {
            cJSON_AddNumberToObject(o, "w_norm", e->w_norm);
            cJSON_AddNumberToObject(o, "relative", e->relative);
        }
        if (e->rank) {
            cJSON_AddNumberToObject(o, "rank", e->rank);
            cJSON_AddNumberToObject(o, "scale", e->scale);
            cJSON_AddNumberToObject(o, "effective_rank", e->eff_rank);
            cJSON *sv = cJSON_AddArrayToObject(o, "singular_values");
            for (int k = 0; k < e->rank; k++) cJSON_AddItemToArray(sv, cJSON_CreateNumber(e->sv[k]));
        }
        cJSON_AddItemToArray(cur, o);
    }
    return j;
}

int cmd_weight_diff(int argc, char **argv) {
    WeightDiffArgs a = {0};
    flags_defaults(&TABLE, &a);
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    if (!a.adapter) return cli_missing("weight-diff", "--adapter");
    Error err;
    WeightDiff w;
    if (weight_diff_run(a.adapter, a.model, &w, &err)) return cli_fail(&err);
    if (!(a.json && !strcmp(a.json, "-"))) print_table(&w, &a);
    if (a.json) {
        cJSON *j = to_json(&w, &a);
        rc = cli_write_json(a.json, j, &err);
        cJSON_Delete(j);
    }
    weight_diff_free(&w);
    return rc ? cli_fail(&err) : 0;
}
