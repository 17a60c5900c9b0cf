// tokenize.c — `tunelens tokenize --model M --text T [--json]`
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flags.h"

typedef struct {
    const char *model, *text;
    int json;
} TokenizeArgs;

#define O(field) offsetof(TokenizeArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG("--model", NULL, FLAG_STRING, O(model), NULL, 0, 0, NULL, "M",
         "a .gguf file or a folder with tokenizer.json\n(+ tokenizer_config.json); "
         "no weights are read (required)", NULL),
    FLAG("--text", NULL, FLAG_STRING, O(text), NULL, 0, 0, NULL, "T", "the text (required)", NULL),
    FLAG("--json", NULL, FLAG_SWITCH, O(json), NULL, 0, 0, NULL, NULL,
         "print {\"ids\":[...],\"tokens\":[...]}", NULL),
};
#undef O

static const FlagTable TABLE = {
    "tokenize",
    "usage: tunelens tokenize --model M --text T [--json]\n"
    "  Encode T exactly as Hugging Face's tokenizer.encode(T) does (BOS included) and print\n"
    "  the ids and pieces.\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

// A folder without weights: tokenize reads its tokenizer files alone (config.json optional).
static int tokenizer_only(const char *path) {
    if (!dir_exists(path)) return 0;
    char *one = path_join(path, "model.safetensors"), *index = path_join(path, "model.safetensors.index.json");
    int none = !file_exists(one) && !file_exists(index);
    free(one);
    free(index);
    return none;
}

// The tokenizer of a weightless folder, and from its config.json (when there is one) the
// embedding size that ids are checked against, as for every model: *vocab 0 when unknown.
static int open_tokenizer_only(const char *path, Tokenizer **tok, int *vocab, Error *err) {
    *vocab = 0;
    if (tokenizer_load_path(tok, path, err)) return -1;
    char *cfg_path = path_join(path, "config.json");
    ModelConfig cfg;
    int rc = file_exists(cfg_path) ? config_from_hf_json(&cfg, cfg_path, err) : 0;
    if (!rc && file_exists(cfg_path)) *vocab = cfg.vocab_size;
    free(cfg_path);
    if (rc) tokenizer_free(*tok), *tok = NULL;
    return rc;
}

// Encode as every command does: BOS per the post-processor, ids checked against the embedding.
static int encode_checked(Model *m, const char *text, int **ids, int *n, Error *err) {
    if (m->cfg.vocab_size > 0) return cli_encode(m, text, ids, n, err);
    return tokenizer_encode(m->tok, text, strlen(text), 1, ids, n, err);
}

int cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize";
    TokenizeArgs a = {0};
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    const char *model_path = a.model, *text = a.text;
    int json = a.json;
    if (!model_path) return cli_missing(cmd, "--model");
    if (!text) return cli_missing(cmd, "--text");
    Error err;
    char *resolved = cli_resolve_model(model_path, &err);  // org/name: from the hub cache
    if (!resolved) return cli_fail(&err);
    model_path = resolved;
    // A model is opened without reading its weights (model_open); a folder that has none is
    // read from its tokenizer files and config.json into a Model holding just those (freed as
    // a tokenizer, not as a model).
    Model m = {0};
    int owned = !tokenizer_only(model_path), vocab = 0;
    if (owned ? model_open(&m, model_path, &err)
              : open_tokenizer_only(model_path, &m.tok, &vocab, &err)) {
        free(resolved);
        return cli_fail(&err);
    }
    if (!owned) m.cfg.vocab_size = vocab, m.path = (char *)model_path;
    Tokenizer *tok = m.tok;
    int *ids, n;
    rc = encode_checked(&m, text, &ids, &n, &err);
    if (rc) goto done;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON *jids = cJSON_AddArrayToObject(j, "ids"), *jtok = cJSON_AddArrayToObject(j, "tokens");
        for (int i = 0; i < n; i++) {
            cJSON_AddItemToArray(jids, cJSON_CreateNumber(ids[i]));
            cJSON_AddItemToArray(jtok, cJSON_CreateString(tokenizer_piece(tok, ids[i])));
        }
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("%d tokens\n", n);
        for (int i = 0; i < n; i++) {
            char *d = cli_token_display(tok, ids[i]);
            printf("%6d  %-24s %s\n", ids[i], tokenizer_piece(tok, ids[i]), d);
            free(d);
        }
    }
    free(ids);
done:
    if (owned) model_free(&m);
    else tokenizer_free(tok);
    free(resolved);
    return rc ? cli_fail(&err) : 0;
}
