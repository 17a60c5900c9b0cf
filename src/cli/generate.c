// generate.c — `tunelens generate`: greedy or sampled decoding (mlx_lm.generate's sampling
// flags), and the pieces `steer` shares with it (generate.h).
#include "generate.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../train/rng.h"

int gen_set_seed(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    GenSeed *s = (GenSeed *)((char *)cfg + f->offset);
    FlagSpec inner = *f;
    inner.offset = f->offset + offsetof(GenSeed, value);
    if (flags_set_seed(&inner, cfg, v, msg, n)) return -1;
    s->given = 1;
    return 0;
}

uint64_t gen_seed(const GenSeed *s) {
    if (s->given) return s->value;
    // mlx_lm.generate without --seed draws a fresh stream each run; so do we (and print it)
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)getpid() << 32);
    return rng_next(&x) >> 11;  // 53 bits: exact in JSON
}

char *gen_text(const Tokenizer *t, const GenToken *out, int n) {
    int *ids = xmalloc(sizeof(int) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) ids[i] = out[i].id;
    char *text = tokenizer_decode(t, ids, n, 0);
    free(ids);
    return text;
}

cJSON *gen_tokens_json(const Tokenizer *t, const GenToken *out, int n, int sampled) {
    cJSON *toks = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *j = cJSON_CreateObject();
        char *s = cli_token_text(t, out[i].id);
        cJSON_AddNumberToObject(j, "id", out[i].id);
        cJSON_AddStringToObject(j, "token", s);
        cJSON_AddNumberToObject(j, "prob", out[i].prob);
        if (sampled) cJSON_AddNumberToObject(j, "sample_prob", out[i].sample_prob);
        cJSON_AddItemToArray(toks, j);
        free(s);
    }
    return toks;
}

cJSON *gen_sampler_json(const SamplerConfig *c, uint64_t seed) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "temp", c->temp);
    cJSON_AddNumberToObject(j, "top_p", c->top_p);
    cJSON_AddNumberToObject(j, "min_p", c->min_p);
    cJSON_AddNumberToObject(j, "min_tokens_to_keep", c->min_tokens_to_keep);
    cJSON_AddNumberToObject(j, "top_k", c->top_k);
    cJSON_AddNumberToObject(j, "seed", (double)seed);
    return j;
}

void gen_print_tokens(const Tokenizer *t, const GenToken *out, int n, int sampled) {
    for (int i = 0; i < n; i++) {
        char *d = cli_token_display(t, out[i].id);
        if (sampled)
            printf("%4d  %-20s %6.2f%%  (sampled from %6.2f%%)\n", i + 1, d,
                   100.0 * out[i].prob, 100.0 * out[i].sample_prob);
        else
            printf("%4d  %-20s %6.2f%%\n", i + 1, d, 100.0 * out[i].prob);
        free(d);
    }
}

typedef struct {
    const char *device, *model, *adapter, *prompt, *json, *system_prompt;
    int max_tokens, chat, dtype;
    SamplerConfig sampler;
    GenSeed seed;
} GenerateArgs;

#define O(field) offsetof(GenerateArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG_MODEL(O(model)),
    FLAG_ADAPTER(O(adapter)),
    FLAG("--prompt", "-p", FLAG_STRING, O(prompt), NULL, 0, 0, NULL, "P", "the prompt (required)", NULL),
    FLAG("--chat", NULL, FLAG_SWITCH, O(chat), NULL, 0, 0, NULL, NULL,
         "the prompt as a user message through the tokenizer's\nchat template, with the "
         "generation prompt", NULL),
    FLAG("--system-prompt", NULL, FLAG_STRING, O(system_prompt), NULL, 0, 0, NULL, "S",
         "with --chat: a system message before it", NULL),
    GEN_SAMPLING_FLAGS(O),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {\"prompt\":P,\"tokens\":[{\"id\",\"token\",\"prob\"}],\n"
         "\"text\":T}; sampling adds each token's \"sample_prob\"\nand \"sampler\":{temp, top_p, "
         "min_p,\nmin_tokens_to_keep, top_k, seed}; --chat adds\n\"chat_prompt\" (the rendered "
         "text) (FILE '-' = stdout)", NULL),
    FLAG_DTYPE(O(dtype)),
    FLAG_DEVICE(O(device)),
};
#undef O

static const FlagTable TABLE = {
    "generate",
    "usage: tunelens generate --model M [--adapter A] --prompt P [--max-tokens N] [--json FILE]\n"
    "                         [--chat [--system-prompt S]] [--temp T] [--top-p P] [--min-p M]\n"
    "                         [--min-tokens-to-keep N] [--top-k K] [--seed S] [--dtype auto]\n"
    "                         [--device auto]\n"
    "  Decoding with a KV cache; stops at EOS. Greedy when --temp is 0 (the default); otherwise\n"
    "  mlx_lm.generate's sampler: log-probabilities, then top-p, min-p and top-k in that order,\n"
    "  then a draw from softmax(logprobs / T). Prints the prompt and continuation (ending with\n"
    "  a newline), the statistics (stderr), then each token with its probability under the\n"
    "  model (softmax at temperature 1, before any filter) and, when sampling, under the\n"
    "  distribution it was drawn from. --chat: as mlx_lm.generate, the prompt goes in as a\n"
    "  user message (after --system-prompt's system message) through the tokenizer's chat\n"
    "  template with add_generation_prompt, encoded without adding special tokens again; the\n"
    "  rendered prompt is printed.\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

// The text as it streams; last is its final character, so that it can end with a newline.
typedef struct {
    const Tokenizer *tok;
    char last;
} Stream;

static void stream_text(Stream *st, const char *s) {
    fputs(s, stdout);
    fflush(stdout);
    if (*s) st->last = s[strlen(s) - 1];
}

static void stream_token(void *ctx, int id, float prob) {
    Stream *st = ctx;
    char *s = cli_token_text(st->tok, id);
    stream_text(st, s);
    free(s);
}

// Close the streamed text with a newline (unless it has one) before anything else is printed:
// the statistics line goes to stderr, which a terminal or 2>&1 interleaves with stdout.
static void stream_end(Stream *st) {
    if (st->last != '\n') fputs("\n", stdout);
    fflush(stdout);
    st->last = '\n';
}

int gen_check_chat(const char *cmd, const char *system_prompt, int chat) {
    if (!system_prompt || chat) return 0;
    fprintf(stderr, "tunelens %s: --system-prompt goes through the chat template: add --chat\n",
            cmd);
    return EXIT_USAGE;
}

int gen_prompt_ids(const Model *m, int chat, const char *system_prompt, const char *prompt,
                   int **ids, int *n, char **chat_text, Error *err) {
    if (!chat) return cli_encode(m, prompt, ids, n, err);
    if (generate_chat_prompt(m, system_prompt, prompt, ids, n, err)) return -1;
    *chat_text = tokenizer_decode(m->tok, *ids, *n, 0);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *cmd = "generate";
    GenerateArgs a = {0};
    flags_defaults(&TABLE, &a);
    FlagState fs;
    int rc = flags_parse(&TABLE, &a, argc, argv, &fs);
    if (rc) return rc == 1 ? 0 : rc;
    const char *json_path = a.json;
    int max_tokens = a.max_tokens, sampled = a.sampler.temp > 0;
    if (!a.model) return cli_missing(cmd, "--model");
    if (!a.prompt) return cli_missing(cmd, "--prompt");
    if ((rc = gen_check_chat(cmd, a.system_prompt, a.chat))) return rc;
    GenerateOptions opt = GENERATE_DEFAULTS;
    opt.sampler = a.sampler;
    opt.seed = gen_seed(&a.seed);
    Error err;
    Model m;
    if (cli_load_model_dtype(&m, a.model, a.adapter, a.device, a.dtype, &err)) return cli_fail(&err);
    int *ids = NULL, n = 0, n_out = 0;
    char *chat_text = NULL;
    GenToken *out = xmalloc(sizeof(GenToken) * (size_t)(max_tokens ? max_tokens : 1));
    int to_stdout_json = json_path && !strcmp(json_path, "-");
    Stream st = {m.tok, '\n'};
    rc = sampler_check(&opt.sampler, m.cfg.vocab_size, &err) ||
         gen_prompt_ids(&m, a.chat, a.system_prompt, a.prompt, &ids, &n, &chat_text, &err);
    if (rc) goto fail;
    if (!to_stdout_json) stream_text(&st, a.chat ? chat_text : a.prompt);
    double t0 = now_seconds();
    rc = generate_run(&m, ids, n, max_tokens, &opt, out, &n_out,
                      to_stdout_json ? NULL : stream_token, &st, &err);
    double dt = now_seconds() - t0;
    if (!to_stdout_json) stream_end(&st);  // also before an error message
    if (rc) goto fail;
    if (!to_stdout_json) {
        // the statistics right under the text (as mlx_lm.generate has them), then the tokens
        fprintf(stderr, "%d prompt tokens, %d generated in %.2fs (%.1f tokens/s)", n, n_out, dt,
                dt > 0 ? n_out / dt : 0.0);
        if (sampled) fprintf(stderr, "; sampled, --seed %llu", (unsigned long long)opt.seed);
        fprintf(stderr, "\n");
        printf("\n");
        gen_print_tokens(m.tok, out, n_out, sampled);
    }
    if (json_path) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "prompt", a.prompt);
        if (a.chat) cJSON_AddStringToObject(j, "chat_prompt", chat_text);
        cJSON_AddItemToObject(j, "tokens", gen_tokens_json(m.tok, out, n_out, sampled));
        char *text = gen_text(m.tok, out, n_out);
        cJSON_AddStringToObject(j, "text", text);
        free(text);
        if (sampled)  // greedy JSON stays as it was
            cJSON_AddItemToObject(j, "sampler", gen_sampler_json(&opt.sampler, opt.seed));
        rc = cli_write_json(json_path, j, &err);
        cJSON_Delete(j);
        if (rc) goto fail;
    }
    free(ids);
    free(out);
    free(chat_text);
    model_free(&m);
    return 0;
fail:
    free(ids);
    free(out);
    free(chat_text);
    model_free(&m);
    return cli_fail(&err);
}
