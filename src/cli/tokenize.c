// tokenize.c — `tunelens tokenize --model M --text T [--json]`
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *USAGE =
    "usage: tunelens tokenize --model M --text T [--json]\n"
    "  Encode T exactly as Hugging Face's tokenizer.encode(T) does (BOS included) and print\n"
    "  the ids and pieces; --json prints {\"ids\":[...],\"tokens\":[...]}. M is a .gguf file or\n"
    "  a folder with tokenizer.json (+ tokenizer_config.json); no weights are read.\n";

int cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize", *model_path = NULL, *text = NULL;
    int json = 0, rc;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(f, "--model")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &model_path))) return rc;
        } else if (!strcmp(f, "--text")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &text))) return rc;
        } else if (!strcmp(f, "--json")) {
            json = 1;
        } else {
            return cli_unknown(cmd, f);
        }
    }
    if (!model_path) return cli_missing(cmd, "--model");
    if (!text) return cli_missing(cmd, "--text");
    Error err;
    Tokenizer *tok;
    // the tokenizer alone: a folder needs no weights (nor config.json), a GGUF no tensor checks
    if (tokenizer_load_path(&tok, model_path, &err)) return cli_fail(&err);
    int *ids, n;
    if (tokenizer_encode(tok, text, strlen(text), 1, &ids, &n, &err)) {
        tokenizer_free(tok);
        return cli_fail(&err);
    }
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
    tokenizer_free(tok);
    return 0;
}
