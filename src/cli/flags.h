// flags.h — one table per command drives its parsing (`--flag value`, `--flag=value`, short
// names), `--help`, validation (ranges, enums) and, for `train`, the YAML config loader.
// Every default lives in the table (as the text a user would type), nowhere else.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../common.h"

typedef enum {
    FLAG_INT,     // int field, range [min, max]
    FLAG_DOUBLE,  // double field, finite, range [min, max]
    FLAG_U64,     // uint64_t field, given as a number in [min, max] (a seed)
    FLAG_STRING,  // const char * field (points into argv, the YAML document, or `def`)
    FLAG_SWITCH,  // int field set to 1 by the bare flag (YAML: true/false)
    FLAG_ENUM,    // int field: the index of the value in `choices`
    FLAG_CUSTOM,  // `set` does everything (repeatable flags, lists); no metavar: no value (NULL)
    FLAG_NOTE,    // no flag: a line of help text (`help`) printed in its place
} FlagType;

struct FlagSpec;
// Custom setter / string check: 0, or -1 with msg set to what follows "--flag " in the
// message (e.g. "expects a list of layers, got 'x'"), or starting ": " to follow "--flag".
typedef int (*FlagSetFn)(const struct FlagSpec *f, void *cfg, const char *value, char *msg,
                         size_t msg_size);

typedef struct FlagSpec {
    const char *name;             // long name with its dashes: "--iters"
    const char *alias;            // a second spelling ("-c", "--adapter"), or NULL
    FlagType type;
    size_t offset;                // offsetof(the command's config, field)
    const char *def;              // the default as typed on the command line; NULL: none
    double min, max;              // FLAG_INT, FLAG_DOUBLE, FLAG_U64
    const char *const *choices;   // FLAG_ENUM: NULL-terminated names
    const char *metavar;          // "N", "X", "DIR" (help); NULL for switches
    const char *help;             // '\n' starts a continuation line
    const char *yaml;             // YAML key ("learning_rate", "lora_parameters.rank"); NULL: none
    FlagSetFn set;                // FLAG_CUSTOM: the setter; FLAG_STRING: an optional check
    int list;                     // FLAG_STRING from YAML: a sequence of scalars, joined by ','
} FlagSpec;

// A table entry: name, alias, type, offset, def, min, max, choices, metavar, help, yaml.
#define FLAG(...) {__VA_ARGS__, .set = NULL}
// The flags the model-running commands share, declared once (field: the offset, O(x)).
#define FLAG_MODEL(field)                                                                    \
    FLAG("--model", NULL, FLAG_STRING, field, NULL, 0, 0, NULL, "M",                          \
         "a Hugging Face model folder or a .gguf file (required)", NULL)
#define FLAG_ADAPTER(field)                                                                  \
    FLAG("--adapter", "--adapter-path", FLAG_STRING, field, NULL, 0, 0, NULL, "A",           \
         "an mlx-lm or PEFT adapter folder (or file)", NULL)
#define FLAG_DEVICE(field)                                                                   \
    FLAG("--device", NULL, FLAG_STRING, field, "auto", 0, 0, NULL, "auto|cpu|cuda",          \
         "where the model runs (auto: a CUDA GPU when one answers)", NULL)
// --dtype for the commands that run forward passes only (lens, generate): an int field, a
// ComputeDtype (the index of the value in DTYPE_NAMES; model_prepare_inference).
#define FLAG_DTYPE(field)                                                                    \
    FLAG("--dtype", NULL, FLAG_ENUM, field, "auto", 0, 0, DTYPE_NAMES, "auto|f32|bf16|tf32",  \
         "precision of the matrix products (as `train --dtype`);\nauto: bf16 tensor cores on "   \
         "CUDA unless the weights\nare stored f32, exact f32 on the CPU", NULL)
// --position last|all: an int field, 0 the last position, 1 every position (ablate, patch).
extern const char *const FLAG_POSITIONS[];
#define FLAG_POSITION(field, help_text)                                                      \
    FLAG("--position", NULL, FLAG_ENUM, field, "last", 0, 0, FLAG_POSITIONS, "last|all",     \
         help_text, NULL)
// The direction ablate and steer work with: exactly one of the three (cli_one_direction).
#define FLAG_DIRECTION(token_field, direction_field, probe_field)                            \
    FLAG("--token", NULL, FLAG_STRING, token_field, NULL, 0, 0, NULL, "WORD",                 \
         "the direction the lens reads for WORD (one token):\nits unembedding row times the "  \
         "final norm's weight", NULL),                                                        \
    FLAG("--direction", NULL, FLAG_STRING, direction_field, NULL, 0, 0, NULL, "FILE[:NAME]",  \
         "a vector of the hidden size from a safetensors file\n(NAME: which tensor, when it "  \
         "holds several)", NULL),                                                             \
    FLAG("--probe", NULL, FLAG_STRING, probe_field, NULL, 0, 0, NULL, "PROBES:LABEL",         \
         "a label's direction in a file of probe --save, at\n--layer: (its row - the mean of " \
         "the rows) / std", NULL)
// The same with a setter (FLAG_CUSTOM) or a check (FLAG_STRING), and whether YAML gives a list.
#define FLAG_WITH(set_fn, is_list, ...) {__VA_ARGS__, .set = set_fn, .list = is_list}

typedef struct {
    const char *cmd;              // "train": messages start "tunelens train: "
    const char *usage;            // the usage line(s), printed first by --help
    const FlagSpec *flags;
    int n;
    const char *epilogue;         // notes printed after the flags (NULL: none)
} FlagTable;

#define FLAGS_MAX 64

// What a parse saw: which flags the command line gave (the YAML file skips them).
typedef struct {
    unsigned char given[FLAGS_MAX];
    const char *config;           // the value of a flag named "--config", when given
} FlagState;

// Applies every default of the table to cfg (fields without one are left as they are).
void flags_defaults(const FlagTable *t, void *cfg);
// Parses argv[1..argc-1]. Returns 0; 1 after printing --help to stdout (the caller returns 0);
// or EXIT_USAGE (2) after printing "tunelens CMD: ..." to stderr.
int flags_parse(const FlagTable *t, void *cfg, int argc, char **argv, FlagState *st);
// Sets one flag from text; 0, or -1 with the message tail in msg.
int flags_set(const FlagSpec *f, void *cfg, const char *value, char *msg, size_t msg_size);
// A FLAG_CUSTOM setter for a uint64_t seed at f->offset: any non-negative 64-bit integer.
int flags_set_seed(const FlagSpec *f, void *cfg, const char *value, char *msg, size_t msg_size);
// The --help text.
void flags_help(const FlagTable *t, FILE *out);
// The flag whose YAML key is `key` (NULL when none).
const FlagSpec *flags_by_yaml(const FlagTable *t, const char *key);

// YAML config (mlx_lm.lora's -c/--config): a mapping of flags by their YAML keys; nested
// mappings for keys with a dot ("lora_parameters.rank"). A null value leaves the default.
// Keys the table does not know go to `extra` (returns 1 when it handled the key, 0 when the
// key is unknown, -1 on error with err set). Flags given on the command line (st->given) are
// not changed. Errors name the file, the line and the key; returns 0 or -1.
typedef struct FlagYamlNode FlagYamlNode;  // a yaml_node_t, for `extra`
typedef int (*FlagYamlExtraFn)(void *ctx, void *cfg, const char *file, const char *key,
                               void *doc, void *node, Error *err);
int flags_load_yaml(const FlagTable *t, void *cfg, const char *path, const FlagState *st,
                    FlagYamlExtraFn extra, void *ctx, Error *err);
// Frees the strings YAML configs set (the fuzz harness, between inputs); the configs that
// point at them must not be used after.
void flags_free_kept(void);
// Helpers for `extra`: a node's 1-based line, and its text when it is a plain scalar (NULL
// when it is a mapping or sequence).
int flags_yaml_line(void *node);
const char *flags_yaml_scalar(void *node);
