// tokenize.c — `tunelens tokenize --model M (--text T | --messages FILE.json
// [--add-generation-prompt] [--show-text]) [--json]`
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../tokenizer/chat_template.h"
#include "cli.h"
#include "flags.h"

typedef struct {
    const char *model, *text, *messages;
    int json, add_generation_prompt, show_text;
} TokenizeArgs;

#define O(field) offsetof(TokenizeArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG("--model", NULL, FLAG_STRING, O(model), NULL, 0, 0, NULL, "M",
         "a .gguf file or a folder with tokenizer.json\n(+ tokenizer_config.json); "
         "no weights are read (required)", NULL),
    FLAG("--text", NULL, FLAG_STRING, O(text), NULL, 0, 0, NULL, "T",
         "the text (this or --messages is required)", NULL),
    FLAG("--messages", NULL, FLAG_STRING, O(messages), NULL, 0, 0, NULL, "FILE.json",
         "a conversation: a JSON array of {\"role\", \"content\"},\nor {\"messages\": [...], "
         "\"tools\": [...]}; encoded through\nthe tokenizer's chat template", NULL),
    FLAG("--add-generation-prompt", NULL, FLAG_SWITCH, O(add_generation_prompt), NULL, 0, 0, NULL,
         NULL, "with --messages: end with the assistant's header", NULL),
    FLAG("--show-text", NULL, FLAG_SWITCH, O(show_text), NULL, 0, 0, NULL, NULL,
         "with --messages: print the rendered text too\n(\"text\" in --json)", NULL),
    FLAG("--json", NULL, FLAG_SWITCH, O(json), NULL, 0, 0, NULL, NULL,
         "print {\"ids\":[...],\"tokens\":[...]}", NULL),
};
#undef O

static const FlagTable TABLE = {
    "tokenize",
    "usage: tunelens tokenize --model M --text T [--json]\n"
    "       tunelens tokenize --model M --messages FILE.json [--add-generation-prompt]\n"
    "                         [--show-text] [--json]\n"
    "  Encode T exactly as Hugging Face's tokenizer.encode(T) does (BOS included), or a\n"
    "  conversation as apply_chat_template(messages, tools, add_generation_prompt) does, and\n"
    "  print the ids and pieces.\n",
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

// --messages FILE.json through the chat template: *text is the rendered text (heap).
static int encode_messages(Model *m, const char *path, int agp, char **text, int **ids, int *n,
                           Error *err) {
    *text = NULL, *ids = NULL, *n = 0;
    char *buf;
    size_t len;
    if (read_file(path, &buf, &len, err)) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        int line = 1;
        for (const char *p = buf; end && p < end && p < buf + len; p++) line += *p == '\n';
        free(buf);
        return err_set(err, "%s:%d: invalid JSON", path, line);
    }
    free(buf);
    // a bare list of messages, or an object with "messages" (and "tools") as a data line has
    const cJSON *msgs = root, *tools = NULL;
    int rc = 0;
    if (cJSON_IsObject(root)) {
        msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
        tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
        if (!msgs) rc = err_set(err, "%s: expected a JSON array of messages or {\"messages\": [...]}", path);
        else if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools))
            rc = err_set(err, "%s: \"tools\" must be a list of objects", path);
    }
    if (!rc && chat_messages_check(msgs, err)) rc = err_wrap(err, "%s", path);
    if (!rc && !(*text = chat_template_render_json(m->tok, msgs, tools, NULL, agp, NULL, err)))
        rc = err_wrap(err, "%s", path);
    cJSON_Delete(root);
    if (!rc && tokenizer_encode(m->tok, *text, strlen(*text), 0, ids, n, err))
        rc = err_wrap(err, "%s: the rendered conversation", path);
    if (!rc && m->cfg.vocab_size > 0 && model_check_ids(m, *ids, *n, err)) rc = -1;
    if (rc) {
        free(*text), free(*ids);
        *text = NULL, *ids = NULL;
    }
    return rc;
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
    if (text && a.messages) {
        fprintf(stderr, "tunelens tokenize: --text and --messages do not go together (see tunelens "
                "tokenize --help)\n");
        return EXIT_USAGE;
    }
    if (!a.messages && (a.add_generation_prompt || a.show_text)) {
        fprintf(stderr, "tunelens tokenize: %s needs --messages (see tunelens tokenize --help)\n",
                a.add_generation_prompt ? "--add-generation-prompt" : "--show-text");
        return EXIT_USAGE;
    }
    if (!text && !a.messages) return cli_missing(cmd, "--text (or --messages)");
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
    char *rendered = NULL;
    rc = a.messages ? encode_messages(&m, a.messages, a.add_generation_prompt, &rendered, &ids, &n, &err)
                    : encode_checked(&m, text, &ids, &n, &err);
    if (rc) goto done;
    if (json) {
        cJSON *j = cJSON_CreateObject();
        if (rendered && a.show_text) cJSON_AddStringToObject(j, "text", rendered);
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
        if (rendered && a.show_text) printf("%s\n---\n", rendered);
        printf("%d tokens\n", n);
        for (int i = 0; i < n; i++) {
            char *d = cli_token_display(tok, ids[i]);
            printf("%6d  %-24s %s\n", ids[i], tokenizer_piece(tok, ids[i]), d);
            free(d);
        }
    }
    free(ids);
    free(rendered);
done:
    if (owned) model_free(&m);
    else tokenizer_free(tok);
    free(resolved);
    return rc ? cli_fail(&err) : 0;
}
