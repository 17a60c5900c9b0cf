// ablate.c — `tunelens ablate`: remove a direction from the residual stream after one layer and
// continue (analysis/ablate.h): one prompt's next-token distribution before and after, or
// exact match per operation on arithmetic problems before and after.
#include "../analysis/ablate.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../lens/lens.h"
#include "cli.h"
#include "flags.h"

typedef struct {
    const char *device, *model, *adapter, *prompt, *token, *direction, *probe, *data, *json;
    int layer, mode, all_positions, top_k;
    uint64_t seed;
} AblateArgs;

static const char *const MODES[] = {"project", "mean", NULL};

#define O(field) offsetof(AblateArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG_MODEL(O(model)),
    FLAG("--prompt", NULL, FLAG_STRING, O(prompt), NULL, 0, 0, NULL, "P",
         "the prompt (or --data)", NULL),
    FLAG("--data", NULL, FLAG_STRING, O(data), NULL, 0, 0, NULL, "FILE.jsonl",
         "arithmetic problems, lines {\"text\": \"7 * 8 = 56\"} (an\nexperiment's test.jsonl): "
         "exact match per operation\nbefore and after, instead of --prompt", NULL),
    FLAG("--layer", NULL, FLAG_INT, O(layer), NULL, -1, 1000000, NULL, "L",
         "ablate after block L (-1 = the embedding output)\n(required)", NULL),
    FLAG_DIRECTION(O(token), O(direction), O(probe)),
    FLAG("--mode", NULL, FLAG_ENUM, O(mode), "project", 0, 0, MODES, "project|mean",
         "project: remove the component along the direction;\nmean: set it to its mean "
         "(see below)", NULL),
    FLAG_POSITION(O(all_positions), "the last position (each decoding step's, with\n--data), "
                  "or every position"),
    FLAG_ADAPTER(O(adapter)),
    FLAG("--top-k", NULL, FLAG_INT, O(top_k), "5", 1, 1000, NULL, "K", "tokens shown before and after",
         NULL),
    FLAG_WITH(flags_set_seed, 0, "--seed", NULL, FLAG_CUSTOM, O(seed), "0", 0, 0, NULL, "N",
              "the bootstrap's seed (--data)", NULL),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {direction, layer, mode, position, component,\nbefore:{top:[{id, token, prob}]}, "
         "after:{top}} or,\nwith --data, {ops:[{op, n, before:{exact_match,\nci}, after, "
         "change}], all, problems} ('-' = stdout)", NULL),
    FLAG_DEVICE(O(device)),
};
#undef O

static const FlagTable TABLE = {
    "ablate",
    "usage: tunelens ablate --model M (--prompt P | --data FILE.jsonl) --layer L\n"
    "                       (--token WORD | --direction FILE[:NAME] | --probe PROBES:LABEL)\n"
    "                       [--mode project|mean] [--position last|all] [--adapter A]\n"
    "                       [--top-k K] [--seed N] [--json FILE] [--device auto|cpu|cuda]\n"
    "  Removes a direction u from the residual stream after block L (layer numbering as\n"
    "  `lens`) and lets the rest of the model run on it. project: h - (h.u)u, u = d/|d|;\n"
    "  mean: h - (h.u)u + mu u, mu the mean of h.u over a reference set: with --data, the\n"
    "  problems' prompts (last position); with --prompt, the prompt's own positions but the\n"
    "  first (the first token's residual is an outlier). --token WORD's direction is the one\n"
    "  the lens reads, so at the last layer WORD's logit becomes exactly 0.\n"
    "  --data: exact match per operation, as the experiment judges it (the greedy answer\n"
    "  after \"a op b =\"), before and after, with 95% percentile-bootstrap intervals\n"
    "  (2000 resamples; change: the paired difference). --position last ablates the last\n"
    "  position of each decoding step (prompt + answer so far, run without a KV cache).\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

static double norm_of(const float *v, int C) {
    double s = 0;
    for (int i = 0; i < C; i++) s += (double)v[i] * v[i];
    return sqrt(s);
}

static void add_header(cJSON *j, const Model *m, const AblateArgs *a, const Direction *d,
                       const Ablation *ab) {
    cJSON_AddStringToObject(j, "model", m->path);
    if (a->adapter) cJSON_AddStringToObject(j, "adapter", a->adapter);
    cJSON *dj = cJSON_AddObjectToObject(j, "direction");
    cJSON_AddStringToObject(dj, "what", d->what);
    cJSON_AddStringToObject(dj, "kind", a->token ? "token" : a->probe ? "probe" : "file");
    cJSON_AddNumberToObject(dj, "norm", norm_of(d->v, d->C));
    cJSON_AddNumberToObject(j, "layer", ab->layer);
    cJSON_AddStringToObject(j, "mode", MODES[ab->mode]);
    cJSON_AddStringToObject(j, "position", FLAG_POSITIONS[ab->all_positions]);
    if (ab->mode == ABLATE_MEAN) cJSON_AddNumberToObject(j, "mean", ab->mean);
}

static int run_prompt(const Model *m, const AblateArgs *a, const Direction *d, Ablation *ab,
                      cJSON **json, Error *err) {
    const int V = m->cfg.vocab_size, k = a->top_k < V ? a->top_k : V;
    int *ids = NULL, n = 0, rc;
    if (cli_encode(m, a->prompt, &ids, &n, err)) return err_wrap(err, "--prompt");
    if (ab->mode == ABLATE_MEAN) {
        const int *ids1[1] = {ids};
        if (ablate_mean_component(m, ids1, &n, 1, ab->layer, d->v, 1, &ab->mean, err)) {
            free(ids);
            return -1;
        }
    }
    float *before = xmalloc(sizeof(float) * (size_t)V), *after = xmalloc(sizeof(float) * (size_t)V);
    double comp = 0;
    rc = ablate_run(m, ids, n, ab, before, after, &comp, err);
    int tok = -1;
    if (!rc && a->token) {  // the token's own probability before and after (its id: d->what)
        int *w = NULL, nw = 0;
        if (!tokenizer_encode(m->tok, a->token, strlen(a->token), 0, &w, &nw, err) && nw == 1)
            tok = w[0];
        free(w);
    }
    if (!rc && !(a->json && !strcmp(a->json, "-"))) {
        printf("Prompt: \"%s\" (%d tokens)\n", a->prompt, n);
        printf("Direction: %s, |d| = %.4g; after layer %d, %s, %s position\n", d->what,
               norm_of(d->v, d->C), ab->layer, MODES[ab->mode],
               ab->all_positions ? "every" : "last");
        printf("Component along it at the last position: %.6g", comp);
        if (ab->mode == ABLATE_MEAN) printf(" (set to the mean, %.6g)", ab->mean);
        printf("\nBefore:");
        cli_print_top(m, before, k);
        printf("After: ");
        cli_print_top(m, after, k);
        if (tok >= 0) {
            char *t = cli_token_display(m->tok, tok);
            printf("P(%s): %.4g%% -> %.4g%%\n", t, 100.0 * before[tok], 100.0 * after[tok]);
            free(t);
        }
    }
    if (!rc && json) {
        cJSON *j = *json = cJSON_CreateObject();
        add_header(j, m, a, d, ab);
        cJSON_AddStringToObject(j, "prompt", a->prompt);
        cJSON_AddNumberToObject(j, "n_tokens", n);
        cJSON_AddNumberToObject(j, "component", comp);
        cJSON *b = cJSON_AddObjectToObject(j, "before"), *f = cJSON_AddObjectToObject(j, "after");
        cJSON_AddItemToObject(b, "top", cli_top_json(m, before, k));
        cJSON_AddItemToObject(f, "top", cli_top_json(m, after, k));
        if (tok >= 0) {
            cJSON_AddNumberToObject(b, "token_prob", before[tok]);
            cJSON_AddNumberToObject(f, "token_prob", after[tok]);
        }
    }
    free(ids), free(before), free(after);
    return rc;
}

static cJSON *ci_json(double v, double lo, double hi, const char *key) {
    cJSON *o = cJSON_CreateObject(), *ci = cJSON_CreateArray();
    cJSON_AddNumberToObject(o, key, v);
    cJSON_AddItemToArray(ci, cJSON_CreateNumber(lo));
    cJSON_AddItemToArray(ci, cJSON_CreateNumber(hi));
    cJSON_AddItemToObject(o, "ci", ci);
    return o;
}

// One group of problems (an operation, or all): its row of the table and its JSON.
static void group_report(const char *name, const char *op, const int *before, const int *after,
                         int n, uint64_t seed, int print, cJSON *arr) {
    double mb, lb, hb, ma, la, ha, md, ld, hd;
    bootstrap_ci(before, n, 0, seed, &mb, &lb, &hb);
    bootstrap_ci(after, n, 0, seed, &ma, &la, &ha);
    bootstrap_diff_ci(before, after, n, 0, seed, &md, &ld, &hd);
    if (print)
        printf("%-15s %5d   %5.3f [%5.3f, %5.3f]   %5.3f [%5.3f, %5.3f]   %+6.3f [%+6.3f, %+6.3f]\n",
               name, n, mb, lb, hb, ma, la, ha, md, ld, hd);
    if (!arr) return;
    cJSON *o = cJSON_CreateObject();
    if (op) cJSON_AddStringToObject(o, "op", op);
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddNumberToObject(o, "n", n);
    int cb = 0, ca = 0;
    for (int i = 0; i < n; i++) cb += before[i], ca += after[i];
    cJSON *b = ci_json(mb, lb, hb, "exact_match"), *f = ci_json(ma, la, ha, "exact_match");
    cJSON_AddNumberToObject(b, "correct", cb);
    cJSON_AddNumberToObject(f, "correct", ca);
    cJSON_AddItemToObject(o, "before", b);
    cJSON_AddItemToObject(o, "after", f);
    cJSON_AddItemToObject(o, "change", ci_json(md, ld, hd, "value"));
    cJSON_AddItemToArray(arr, o);
}

static int run_data(const Model *m, const AblateArgs *a, const Direction *d, Ablation *ab,
                    cJSON **json, Error *err) {
    Problem *probs = NULL;
    int n = 0;
    if (problems_load(a->data, &probs, &n, err)) return -1;
    int rc = 0;
    if (ab->mode == ABLATE_MEAN) {
        int **ids = xcalloc((size_t)n, sizeof(int *)), *len = xcalloc((size_t)n, sizeof(int));
        for (int i = 0; i < n && !rc; i++) {
            char q[96];
            snprintf(q, sizeof q, "%d %c %d =", probs[i].a, EXP_OPS[probs[i].op], probs[i].b);
            rc = cli_encode(m, q, &ids[i], &len[i], err);
        }
        if (!rc)
            rc = ablate_mean_component(m, (const int *const *)ids, len, n, ab->layer, d->v, 0,
                                       &ab->mean, err);
        for (int i = 0; i < n; i++) free(ids[i]);
        free(ids), free(len);
    }
    int *before = xmalloc(sizeof(int) * (size_t)n), *after = xmalloc(sizeof(int) * (size_t)n);
    double t0 = now_seconds();
    if (!rc) rc = ablate_exact_match_with(m, probs, n, NULL, before, err);
    if (!rc) rc = ablate_exact_match_with(m, probs, n, ab, after, err);
    int print = !rc && !(a->json && !strcmp(a->json, "-"));
    cJSON *j = NULL, *ops = NULL;
    if (!rc && json) {
        j = *json = cJSON_CreateObject();
        add_header(j, m, a, d, ab);
        cJSON_AddStringToObject(j, "data", a->data);
        cJSON_AddNumberToObject(j, "n", n);
        cJSON_AddNumberToObject(j, "bootstrap", ABLATE_BOOTSTRAP);
        cJSON_AddNumberToObject(j, "seed", (double)a->seed);
        ops = cJSON_AddArrayToObject(j, "ops");
    }
    if (print) {
        printf("Direction: %s, |d| = %.4g; after layer %d, %s, %s position", d->what,
               norm_of(d->v, d->C), ab->layer, MODES[ab->mode], ab->all_positions ? "every" : "last");
        if (ab->mode == ABLATE_MEAN) printf(" (mean component %.6g)", ab->mean);
        printf("\n%d problems from %s, exact match (95%% bootstrap intervals), %.1fs\n", n, a->data,
               now_seconds() - t0);
        printf("%-15s %5s   %-20s   %-20s   %s\n", "operation", "n", "before", "after", "change");
    }
    int *sb = xmalloc(sizeof(int) * (size_t)n), *sa = xmalloc(sizeof(int) * (size_t)n);
    for (int op = 0; op < N_OPS && !rc; op++) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (probs[i].op == op) sb[k] = before[i], sa[k++] = after[i];
        if (!k) continue;
        char ops_s[2] = {EXP_OPS[op], 0};
        group_report(EXP_OP_NAMES[op], ops_s, sb, sa, k, a->seed + (uint64_t)op, print, ops);
    }
    if (!rc) {
        cJSON *all = j ? cJSON_CreateArray() : NULL;
        group_report("all", NULL, before, after, n, a->seed + N_OPS, print, all);
        if (j) {
            cJSON_AddItemToObject(j, "all", cJSON_DetachItemFromArray(all, 0));
            cJSON_Delete(all);
            cJSON *pj = cJSON_AddArrayToObject(j, "problems");
            for (int i = 0; i < n; i++) {
                cJSON *o = cJSON_CreateObject();
                char t[96];
                snprintf(t, sizeof t, "%d %c %d = %ld", probs[i].a, EXP_OPS[probs[i].op],
                         probs[i].b, probs[i].answer);
                cJSON_AddStringToObject(o, "text", t);
                cJSON_AddBoolToObject(o, "before", before[i]);
                cJSON_AddBoolToObject(o, "after", after[i]);
                cJSON_AddItemToArray(pj, o);
            }
        }
    }
    free(sb), free(sa), free(before), free(after), free(probs);
    return rc;
}

int cmd_ablate(int argc, char **argv) {
    const char *cmd = "ablate";
    AblateArgs a = {0};
    a.layer = INT_MIN;  // required: no default
    flags_defaults(&TABLE, &a);
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    if (!a.model) return cli_missing(cmd, "--model");
    if (!a.prompt && !a.data) return cli_missing(cmd, "--prompt (or --data)");
    if (a.prompt && a.data) {
        fprintf(stderr, "tunelens %s: give --prompt or --data, not both\n", cmd);
        return EXIT_USAGE;
    }
    if (a.layer == INT_MIN) return cli_missing(cmd, "--layer");
    if ((rc = cli_one_direction(cmd, a.token, a.direction, a.probe))) return rc;
    Error err;
    Model m;
    if (cli_load_model(&m, a.model, a.adapter, a.device, &err)) return cli_fail(&err);
    Direction d = {0};
    cJSON *j = NULL;
    DirectionSpec spec = {a.token, a.direction, a.probe};
    if (!(rc = hook_check_layer(&m, a.layer, &err)) &&
        !(rc = direction_load(&m, &spec, a.layer, &d, &err))) {
        Ablation ab = {a.layer, d.v, (AblateMode)a.mode, 0, a.all_positions};
        cJSON **jp = a.json ? &j : NULL;
        rc = a.data ? run_data(&m, &a, &d, &ab, jp, &err) : run_prompt(&m, &a, &d, &ab, jp, &err);
        if (!rc && j) rc = cli_write_json(a.json, j, &err);
    }
    cJSON_Delete(j);
    direction_free(&d);
    model_free(&m);
    return rc ? cli_fail(&err) : 0;
}
