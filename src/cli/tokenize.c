// tokenize.c — `tunelens tokenize --model M --text T [--json]`
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *USAGE =
    "usage: tunelens tokenize --model M --text T [--json]\n"
    "  Encode T exactly as Hugging Face's tokenizer.encode(T) does (BOS included) and print\n"
    "  the ids and pieces; --json prints {\"ids\":[...],\"tokens\":[...]}.\n";

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
    Model m;
    if (model_open(&m, model_path, &err)) return cli_fail(&err);  // no weights needed
    int *ids, n;
    if (cli_encode(&m, text, &ids, &n, &err)) {
        model_free(&m);
        return cli_fail(&err);
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON *jids = cJSON_AddArrayToObject(j, "ids"), *jtok = cJSON_AddArrayToObject(j, "tokens");
        for (int i = 0; i < n; i++) {
            cJSON_AddItemToArray(jids, cJSON_CreateNumber(ids[i]));
            cJSON_AddItemToArray(jtok, cJSON_CreateString(tokenizer_piece(m.tok, ids[i])));
        }
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("%d tokens\n", n);
        for (int i = 0; i < n; i++) {
            char *d = cli_token_display(m.tok, ids[i]);
            printf("%6d  %-24s %s\n", ids[i], tokenizer_piece(m.tok, ids[i]), d);
            free(d);
        }
    }
    free(ids);
    model_free(&m);
    return 0;
}
