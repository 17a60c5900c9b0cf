// steer.c — `tunelens steer`: generation with alpha * u added to the residual stream after one
// block, u a unit direction (analysis/direction.h), beside the same generation unsteered.
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/direction.h"
#include "../analysis/hook.h"
#include "../lens/lens.h"
#include "generate.h"

typedef struct {
    const char *device, *model, *adapter, *prompt, *token, *direction, *probe, *json;
    const char *system_prompt;
    int layer, max_tokens, top_k_shown, chat;
    double alpha;
    SamplerConfig sampler;
    GenSeed seed;
} SteerArgs;

#define O(field) offsetof(SteerArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG_MODEL(O(model)),
    FLAG("--prompt", "-p", FLAG_STRING, O(prompt), NULL, 0, 0, NULL, "P", "the prompt (required)",
         NULL),
    FLAG("--chat", NULL, FLAG_SWITCH, O(chat), NULL, 0, 0, NULL, NULL,
         "the prompt through the chat template, as generate\n--chat", NULL),
    FLAG("--system-prompt", NULL, FLAG_STRING, O(system_prompt), NULL, 0, 0, NULL, "S",
         "with --chat: a system message before it", NULL),
    FLAG("--layer", NULL, FLAG_INT, O(layer), NULL, -1, 1000000, NULL, "L",
         "steer after block L (-1 = the embedding output)\n(required)", NULL),
    FLAG_DIRECTION(O(token), O(direction), O(probe)),
    FLAG("--alpha", NULL, FLAG_DOUBLE, O(alpha), NULL, -1e6, 1e6, NULL, "A",
         "the size of the push: alpha * the unit direction is\nadded (negative: away from it) "
         "(required)", NULL),
    GEN_SAMPLING_FLAGS(O),
    FLAG_ADAPTER(O(adapter)),
    FLAG("--top-k-shown", NULL, FLAG_INT, O(top_k_shown), "5", 1, 1000, NULL, "K",
         "the first token's K most probable, unsteered and\nsteered", NULL),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {model, prompt, layer, alpha, direction,\nresidual_norm, residual_rms, sampler, unsteered:"
         "{tokens:[{id,\ntoken, prob, sample_prob}], text, first_top:[{id,\ntoken, prob}]}, "
         "steered:{...}} ('-' = stdout)", NULL),
    FLAG_DEVICE(O(device)),
};
#undef O

static const FlagTable TABLE = {
    "steer",
    "usage: tunelens steer --model M --prompt P --layer L --alpha A\n"
    "                      (--token WORD | --direction FILE[:NAME] | --probe PROBES:LABEL)\n"
    "                      [--chat [--system-prompt S]] [--max-tokens N] [--temp T]\n"
    "                      [--top-p P] [--min-p M] [--min-tokens-to-keep N] [--top-k K]\n"
    "                      [--seed S] [--adapter A] [--json FILE] [--device auto|cpu|cuda]\n"
    "  Generates twice from the prompt: as `generate` does, and with alpha * u added to the\n"
    "  residual stream after block L (layer numbering as `lens`) at every position, the\n"
    "  prompt's and each generated token's; u = d/|d|, the direction made a unit vector, so\n"
    "  alpha is the length of the push in the residual stream's own units (the output shows\n"
    "  the residual's norm there for scale). chuk-lazarus's `introspect steer` also makes d a\n"
    "  unit vector but multiplies by the RMS of the hidden states (all positions and entries,\n"
    "  recomputed every step without a KV cache): for its first token, its coefficient c is\n"
    "  alpha = c * the prompt's RMS, which the output prints. Sampling flags as `generate`\n"
    "  (greedy by default); both runs draw with the same seed, so they differ by the steering\n"
    "  alone. alpha 0 gives `generate`'s tokens exactly.\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

typedef struct {
    GenToken *out;
    int n;
    float *probs;  // the first token's softmax (V)
} Run;

static cJSON *run_json(const Model *m, const Run *r, int sampled, int k) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddItemToObject(j, "tokens", gen_tokens_json(m->tok, r->out, r->n, sampled));
    char *text = gen_text(m->tok, r->out, r->n);
    cJSON_AddStringToObject(j, "text", text);
    free(text);
    if (k > 0) cJSON_AddItemToObject(j, "first_top", cli_top_json(m, r->probs, k));
    return j;
}

// A read-only hook: the residual rows after one layer, copied to the host.
typedef struct {
    const Backend *be;
    int layer;
    float *rows;
} ReadRows;

static void read_rows(void *ctx, int layer, const float *resid, int rows, int C) {
    const ReadRows *r = ctx;
    if (layer == r->layer) r->be->download(r->rows, resid, sizeof(float) * (size_t)rows * C);
}

int cmd_steer(int argc, char **argv) {
    const char *cmd = "steer";
    SteerArgs a = {0};
    flags_defaults(&TABLE, &a);
    a.layer = STEER_NONE;
    a.alpha = NAN;
    FlagState fs;
    int rc = flags_parse(&TABLE, &a, argc, argv, &fs);
    if (rc) return rc == 1 ? 0 : rc;
    if (!a.model) return cli_missing(cmd, "--model");
    if (!a.prompt) return cli_missing(cmd, "--prompt");
    if (a.layer == STEER_NONE) return cli_missing(cmd, "--layer");
    if (isnan(a.alpha)) return cli_missing(cmd, "--alpha");
    if ((rc = gen_check_chat(cmd, a.system_prompt, a.chat))) return rc;
    if ((rc = cli_one_direction(cmd, a.token, a.direction, a.probe))) return rc;
    const int sampled = a.sampler.temp > 0, k = a.top_k_shown;
    GenerateOptions opt = GENERATE_DEFAULTS;
    opt.sampler = a.sampler;
    opt.seed = gen_seed(&a.seed);
    Error err;
    Model m;
    if (cli_load_model(&m, a.model, a.adapter, a.device, &err)) return cli_fail(&err);
    const int C = m.cfg.dim, V = m.cfg.vocab_size;
    int *ids = NULL, n = 0;
    Direction dir = {0};
    float *vec = NULL, *logits = xmalloc(sizeof(float) * (size_t)V);
    float *rows = NULL;
    char *shown = NULL;
    Run run[2] = {{0}, {0}};
    for (int r = 0; r < 2; r++) {
        run[r].out = xmalloc(sizeof(GenToken) * (size_t)(a.max_tokens ? a.max_tokens : 1));
        run[r].probs = xcalloc((size_t)V, sizeof(float));
    }
    if (hook_check_layer(&m, a.layer, &err)) goto fail;
    if (sampler_check(&opt.sampler, V, &err) ||
        gen_prompt_ids(&m, a.chat, a.system_prompt, a.prompt, &ids, &n, &shown, &err))
        goto fail;
    DirectionSpec spec = {a.token, a.direction, a.probe};
    if (direction_load(&m, &spec, a.layer, &dir, &err)) goto fail;
    if (dir.C != C) {
        err_set(&err, "the direction has %d entries, the model's hidden size is %d", dir.C, C);
        goto fail;
    }
    vec = xmalloc(sizeof(float) * (size_t)C);
    if (steer_vector(dir.v, C, a.alpha, vec, &err)) {
        err_wrap(&err, "%s", dir.what);
        goto fail;
    }
    // the residual where the push goes, for scale: the last prompt position's norm, and the
    // RMS over every position and entry (chuk-lazarus's scale for its first step)
    if (n > m.cfg.max_pos) {
        err_set(&err, "the prompt has %d tokens, more than the model's %d positions", n,
                m.cfg.max_pos);
        goto fail;
    }
    rows = xmalloc(sizeof(float) * (size_t)n * C);
    ForwardState st;
    if (forward_state_init(&st, &m, 1, n, n, ACTS_NONE)) {
        err_set(&err, "out of %s memory for the prompt's forward pass", m.be->device);
        goto fail;
    }
    ReadRows rr = {m.be, a.layer, rows};
    model_forward(&m, &st, ids, 0, read_rows, &rr);
    forward_state_free(&st);
    double ss = 0, ss_all = 0;
    for (size_t i = 0; i < (size_t)n * C; i++) ss_all += (double)rows[i] * rows[i];
    for (int c = 0; c < C; c++) ss += (double)rows[(size_t)(n - 1) * C + c] * rows[(size_t)(n - 1) * C + c];
    double norm = sqrt(ss), rms = sqrt(ss_all / ((double)n * C));
    double t0 = now_seconds();
    for (int r = 0; r < 2; r++) {
        opt.steer_layer = r ? a.layer : STEER_NONE;
        opt.steer_vec = r ? vec : NULL;
        opt.first_logits = logits;
        if (generate_run(&m, ids, n, a.max_tokens, &opt, run[r].out, &run[r].n, NULL, NULL, &err))
            goto fail;
        if (a.max_tokens > 0) BACKEND_CPU.softmax_forward(run[r].probs, logits, 1, V);
    }
    double dt = now_seconds() - t0;
    int to_stdout_json = a.json && !strcmp(a.json, "-");
    if (!to_stdout_json) {
        fprintf(stderr, "%d prompt tokens; %d + %d generated in %.2fs", n, run[0].n, run[1].n, dt);
        if (sampled) fprintf(stderr, "; sampled, --seed %llu", (unsigned long long)opt.seed);
        fprintf(stderr, "\n");
        printf("Direction: %s (made a unit vector); alpha %g after layer %d\n", dir.what, a.alpha,
               a.layer);
        printf("The residual there: norm %.4g at the last prompt position (alpha / norm %.3g); "
               "RMS %.4g over the prompt (chuk-lazarus's coefficient alpha / RMS = %.3g)\n",
               norm, norm > 0 ? a.alpha / norm : 0.0, rms, rms > 0 ? a.alpha / rms : 0.0);
        const char *names[2] = {"unsteered", "steered"};
        for (int r = 0; r < 2; r++) {
            char *text = gen_text(m.tok, run[r].out, run[r].n);
            printf("\n--- %s\n%s%s\n", names[r], shown ? shown : a.prompt, text);
            free(text);
        }
        if (a.max_tokens > 0) {
            printf("\nFirst token, top %d:\n", k);
            for (int r = 0; r < 2; r++) {
                printf("  %-10s", names[r]);
                cli_print_top(&m, run[r].probs, k);
            }
            for (int r = 0; r < 2; r++) {
                printf("\n%s tokens:\n", names[r]);
                gen_print_tokens(m.tok, run[r].out, run[r].n, sampled);
            }
        }
    }
    if (a.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", m.name);
        cJSON_AddStringToObject(j, "prompt", a.prompt);
        if (shown) cJSON_AddStringToObject(j, "chat_prompt", shown);
        cJSON_AddNumberToObject(j, "layer", a.layer);
        cJSON_AddNumberToObject(j, "alpha", a.alpha);
        cJSON_AddStringToObject(j, "direction", dir.what);
        cJSON_AddNumberToObject(j, "residual_norm", norm);
        cJSON_AddNumberToObject(j, "residual_rms", rms);
        cJSON_AddItemToObject(j, "sampler", gen_sampler_json(&opt.sampler, opt.seed));
        int shown_k = a.max_tokens > 0 ? k : 0;  // no token, no first distribution
        cJSON_AddItemToObject(j, "unsteered", run_json(&m, &run[0], sampled, shown_k));
        cJSON_AddItemToObject(j, "steered", run_json(&m, &run[1], sampled, shown_k));
        rc = cli_write_json(a.json, j, &err);
        cJSON_Delete(j);
        if (rc) goto fail;
    }
    rc = 0;
    goto done;
fail:
    rc = 1;
done:
    if (rc) cli_fail(&err);
    for (int r = 0; r < 2; r++) free(run[r].out), free(run[r].probs);
    free(ids), free(vec), free(logits), free(rows), free(shown);
    direction_free(&dir);
    model_free(&m);
    return rc;
}
