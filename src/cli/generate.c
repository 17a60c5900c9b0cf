// generate.c — `tunelens generate --model M [--adapter A] --prompt P [--max-tokens N] [--json F]`
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../model/generate.h"
#include "cli.h"
#include "flags.h"

typedef struct {
    const char *device, *model, *adapter, *prompt, *json;
    int max_tokens;
} GenerateArgs;

#define O(field) offsetof(GenerateArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG("--model", NULL, FLAG_STRING, O(model), NULL, 0, 0, NULL, "M",
         "a Hugging Face model folder or a .gguf file (required)", NULL),
    FLAG_ADAPTER(O(adapter)),
    FLAG("--prompt", NULL, FLAG_STRING, O(prompt), NULL, 0, 0, NULL, "P", "the prompt (required)", NULL),
    FLAG("--max-tokens", NULL, FLAG_INT, O(max_tokens), "100", 0, 1 << 20, NULL, "N",
         "tokens to generate at most", NULL),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {\"prompt\":P,\"tokens\":[{\"id\",\"token\",\"prob\"}],\"text\":T}\n"
         "(FILE '-' = stdout)", NULL),
    FLAG_DEVICE(O(device)),
};
#undef O

static const FlagTable TABLE = {
    "generate",
    "usage: tunelens generate --model M [--adapter A] --prompt P [--max-tokens N] [--json FILE]\n"
    "                         [--device auto]\n"
    "  Greedy decoding with a KV cache; stops at EOS. Prints the prompt and continuation (ending\n"
    "  with a newline), the statistics (stderr), then each token with its probability.\n",
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

int cmd_generate(int argc, char **argv) {
    const char *cmd = "generate";
    GenerateArgs a = {0};
    flags_defaults(&TABLE, &a);
    FlagState fs;
    int rc = flags_parse(&TABLE, &a, argc, argv, &fs);
    if (rc) return rc == 1 ? 0 : rc;
    const char *device = a.device, *model_path = a.model, *adapter = a.adapter, *prompt = a.prompt,
               *json_path = a.json;
    int max_tokens = a.max_tokens;
    if (!model_path) return cli_missing(cmd, "--model");
    if (!prompt) return cli_missing(cmd, "--prompt");
    Error err;
    Model m;
    if (cli_load_model(&m, model_path, adapter, device, &err)) return cli_fail(&err);
    int *ids = NULL, n, n_out = 0;
    GenToken *out = xmalloc(sizeof(GenToken) * (size_t)(max_tokens ? max_tokens : 1));
    int to_stdout_json = json_path && !strcmp(json_path, "-");
    Stream st = {m.tok, '\n'};
    if (!to_stdout_json) stream_text(&st, prompt);
    double t0 = now_seconds();
    rc = cli_encode(&m, prompt, &ids, &n, &err) ||
         generate_greedy(&m, ids, n, max_tokens, out, &n_out, to_stdout_json ? NULL : stream_token,
                         &st, &err);
    double dt = now_seconds() - t0;
    if (!to_stdout_json) stream_end(&st);  // also before an error message
    if (rc) goto fail;
    if (!to_stdout_json) {
        // the statistics right under the text (as mlx_lm.generate has them), then the tokens
        fprintf(stderr, "%d prompt tokens, %d generated in %.2fs (%.1f tokens/s)\n", n, n_out, dt,
                dt > 0 ? n_out / dt : 0.0);
        printf("\n");
        for (int i = 0; i < n_out; i++) {
            char *d = cli_token_display(m.tok, out[i].id);
            printf("%4d  %-20s %6.2f%%\n", i + 1, d, 100.0 * out[i].prob);
            free(d);
        }
    }
    if (json_path) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "prompt", prompt);
        cJSON *toks = cJSON_AddArrayToObject(j, "tokens");
        int *gen = xmalloc(sizeof(int) * (size_t)(n_out ? n_out : 1));
        for (int i = 0; i < n_out; i++) {
            cJSON *t = cJSON_CreateObject();
            char *s = cli_token_text(m.tok, out[i].id);
            cJSON_AddNumberToObject(t, "id", out[i].id);
            cJSON_AddStringToObject(t, "token", s);
            cJSON_AddNumberToObject(t, "prob", out[i].prob);
            cJSON_AddItemToArray(toks, t);
            free(s);
            gen[i] = out[i].id;
        }
        char *text = tokenizer_decode(m.tok, gen, n_out, 0);
        cJSON_AddStringToObject(j, "text", text);
        free(text);
        free(gen);
        rc = cli_write_json(json_path, j, &err);
        cJSON_Delete(j);
        if (rc) goto fail;
    }
    free(ids);
    free(out);
    model_free(&m);
    return 0;
fail:
    free(ids);
    free(out);
    model_free(&m);
    return cli_fail(&err);
}
