// cli.h — shared pieces of the command-line front end. Exit codes: 0 ok, 1 runtime error
// (bad file, bad data), 2 usage error (unknown flag, bad number).
#pragma once
#include <cjson/cJSON.h>

#include "../model/llama.h"

#define EXIT_USAGE 2

// Command entry points (argv[0] is the command name).
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_lens(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_patch(int argc, char **argv);
int cmd_ablate(int argc, char **argv);
int cmd_steer(int argc, char **argv);
int cmd_tuned_lens(int argc, char **argv);
int cmd_weight_diff(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_export_peft(int argc, char **argv);
int cmd_fuse(int argc, char **argv);
int cmd_experiment(int argc, char **argv);

// Flag parsing: each returns 0 or prints "tunelens CMD: ..." and returns EXIT_USAGE.
int cli_value(const char *cmd, int argc, char **argv, int *i, const char **out);
int cli_int(const char *cmd, int argc, char **argv, int *i, long min, long max, int *out);
int cli_double(const char *cmd, int argc, char **argv, int *i, double min, double max, double *out);
int cli_unknown(const char *cmd, const char *flag);
int cli_missing(const char *cmd, const char *flag);

// "8,10,-1" -> layers (at most max; -1 = the embedding output). 0, or -1 when malformed.
int cli_layer_list(const char *s, int *layers, int max, int *n);

// Prints "tunelens: <message>" to stderr and returns 1.
int cli_fail(const Error *err);

// Load a model (and an adapter, when adapter != NULL), with a line on stderr. path may be a
// Hugging Face id (org/name), found in the hub cache or downloaded (model/hub.h).
int cli_load_model(Model *m, const char *path, const char *adapter, const char *device,
                   Error *err);
// The same, its linear layers then prepared for forward passes in dtype (a ComputeDtype,
// FLAG_DTYPE's field; model_prepare_inference), which the line names.
int cli_load_model_dtype(Model *m, const char *path, const char *adapter, const char *device,
                         int dtype, Error *err);
// What --model names as a path (heap string): a Hugging Face id (org/name) is found in the hub
// cache or downloaded (model/hub.h); NULL with err on failure.
char *cli_resolve_model(const char *model, Error *err);
// Encode text exactly as HF's tokenizer.encode(text) does.
int cli_encode(const Model *m, const char *text, int **ids, int *n, Error *err);

// A token as readable text: decoded, quoted, control characters escaped ('\n' etc.).
// Returns a heap string.
char *cli_token_display(const Tokenizer *t, int id);
// A token's decoded text (heap string), for JSON.
char *cli_token_text(const Tokenizer *t, int id);
// The k most probable tokens of probs (V = the model's vocabulary): a JSON array of
// {id, token, prob}, and a line " TOKEN P%..." on stdout.
cJSON *cli_top_json(const Model *m, const float *probs, int k);
void cli_print_top(const Model *m, const float *probs, int k);
// The one direction of ablate and steer (--token, --direction, --probe): 0, or prints
// "tunelens CMD: ..." and returns EXIT_USAGE when none or several are given.
int cli_one_direction(const char *cmd, const char *token, const char *direction,
                      const char *probe);
// Write JSON atomically ("-" = stdout).
int cli_write_json(const char *path, const cJSON *j, Error *err);
