// flags.c — the table-driven command line: parsing, --help, validation, YAML configs.
#include "flags.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cli.h"

// Strings copied out of a YAML document live as long as the program (reachable from here).
static char **owned;
static size_t n_owned, cap_owned;
static const char *keep(char *s) {
    if (n_owned == cap_owned) {
        cap_owned = cap_owned ? 2 * cap_owned : 16;
        owned = xrealloc(owned, cap_owned * sizeof *owned);
    }
    return owned[n_owned++] = s;
}

void flags_free_kept(void) {
    for (size_t i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    owned = NULL;
    n_owned = cap_owned = 0;
}

static void *field(const FlagSpec *f, void *cfg) { return (char *)cfg + f->offset; }

// "lora or full", "adam, adamw or sgd"
static void choices_text(const FlagSpec *f, char *buf, size_t n) {
    buf[0] = 0;
    int k = 0;
    while (f->choices[k]) k++;
    for (int i = 0; i < k; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s%s", i == 0 ? "" : i == k - 1 ? " or " : ", ", f->choices[i]);
    }
}

int flags_set_seed(const FlagSpec *f, void *cfg, const char *s, char *msg, size_t n) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-') {
        snprintf(msg, n, "expects a non-negative integer, got '%s'", s);
        return -1;
    }
    *(uint64_t *)field(f, cfg) = (uint64_t)v;
    return 0;
}

int flags_set(const FlagSpec *f, void *cfg, const char *s, char *msg, size_t msg_size) {
    char *end;
    switch (f->type) {
    case FLAG_INT: {
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < f->min || v > f->max) {
            snprintf(msg, msg_size, "expects an integer in [%ld, %ld], got '%s'", (long)f->min,
                     (long)f->max, s);
            return -1;
        }
        *(int *)field(f, cfg) = (int)v;
        return 0;
    }
    case FLAG_DOUBLE:
    case FLAG_U64: {
        errno = 0;
        double v = strtod(s, &end);
        if (errno || end == s || *end || !isfinite(v) || v < f->min || v > f->max) {
            snprintf(msg, msg_size, "expects a number in [%g, %g], got '%s'", f->min, f->max, s);
            return -1;
        }
        if (f->type == FLAG_DOUBLE) *(double *)field(f, cfg) = v;
        else *(uint64_t *)field(f, cfg) = (uint64_t)v;
        return 0;
    }
    case FLAG_STRING:
        if (f->set && f->set(f, cfg, s, msg, msg_size)) return -1;
        *(const char **)field(f, cfg) = s;
        return 0;
    case FLAG_SWITCH:
        *(int *)field(f, cfg) = 1;
        return 0;
    case FLAG_ENUM:
        for (int i = 0; f->choices[i]; i++)
            if (!strcmp(s, f->choices[i])) {
                *(int *)field(f, cfg) = i;
                return 0;
            }
        char c[256];
        choices_text(f, c, sizeof c);
        snprintf(msg, msg_size, "must be %s, got '%s'", c, s);
        return -1;
    case FLAG_CUSTOM: return f->set(f, cfg, f->metavar ? s : NULL, msg, msg_size);
    case FLAG_NOTE: return 0;
    }
    return -1;
}

const char *const FLAG_POSITIONS[] = {"last", "all", NULL};

void flags_defaults(const FlagTable *t, void *cfg) {
    char msg[256];
    for (int i = 0; i < t->n; i++) {
        const FlagSpec *f = &t->flags[i];
        if (f->def && f->type != FLAG_SWITCH && f->type != FLAG_NOTE &&
            flags_set(f, cfg, f->def, msg, sizeof msg)) {
            fprintf(stderr, "tunelens %s: bad default of %s: %s\n", t->cmd, f->name, msg);
            abort();  // a table error, caught by every test that runs the command
        }
    }
}

static int matches(const FlagSpec *f, const char *arg, size_t len) {
    if (f->type == FLAG_NOTE) return 0;
    return (strlen(f->name) == len && !strncmp(f->name, arg, len)) ||
           (f->alias && strlen(f->alias) == len && !strncmp(f->alias, arg, len));
}

int flags_parse(const FlagTable *t, void *cfg, int argc, char **argv, FlagState *st) {
    memset(st, 0, sizeof *st);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            flags_help(t, stdout);
            return 1;
        }
        // --flag=value (long names only: a value may itself hold '=')
        const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        int k = 0;
        while (k < t->n && !matches(&t->flags[k], a, len)) k++;
        if (k == t->n) {
            if (eq) {  // name the flag as typed, without its value
                char *name = xstrdup(a);
                name[len] = 0;
                int rc = cli_unknown(t->cmd, name);
                free(name);
                return rc;
            }
            return cli_unknown(t->cmd, a);
        }
        const FlagSpec *f = &t->flags[k];
        const char *value = NULL;
        if (f->type == FLAG_SWITCH || (f->type == FLAG_CUSTOM && !f->metavar)) {
            if (eq) {
                fprintf(stderr, "tunelens %s: %s takes no value, got '%s'\n", t->cmd, f->name, a);
                return EXIT_USAGE;
            }
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 >= argc) {
            fprintf(stderr, "tunelens %s: %s needs a value\n", t->cmd, a);
            return EXIT_USAGE;
        } else {
            value = argv[++i];
        }
        char msg[512];
        if (flags_set(f, cfg, value ? value : "", msg, sizeof msg)) {
            // "--iters expects ...", "--fine-tune-type must be ..."; a message starting with
            // ':' reads "--lora-keys: unknown LoRA key ..."
            fprintf(stderr, "tunelens %s: %s%s%s\n", t->cmd, f->name, msg[0] == ':' ? "" : " ", msg);
            return EXIT_USAGE;
        }
        if (k < FLAGS_MAX) st->given[k] = 1;
        if (!strcmp(f->name, "--config")) st->config = value;
    }
    return 0;
}

const FlagSpec *flags_by_yaml(const FlagTable *t, const char *key) {
    for (int i = 0; i < t->n; i++)
        if (t->flags[i].yaml && !strcmp(t->flags[i].yaml, key)) return &t->flags[i];
    return NULL;
}

// ---- --help

static void print_wrapped_help(FILE *out, const char *lead, const char *help, const char *dflt) {
    // lead is "  --iters N"; the help starts at column 31 (or on its own line when lead is long)
    int col = fprintf(out, "%s", lead);
    const char *h = help ? help : "";
    int first = 1;
    while (first || *h) {
        const char *nl = strchr(h, '\n');
        size_t n = nl ? (size_t)(nl - h) : strlen(h);
        if (!first || col > 30) {
            if (col > 0) fputc('\n', out);
            col = fprintf(out, "%31s", "");
        } else {
            col += fprintf(out, "%*s", 31 - col, "");
        }
        fprintf(out, "%.*s", (int)n, h);
        h += n;
        if (*h == '\n') h++;
        first = 0;
        if (!*h && dflt) {  // "(default X)" ends the last line, or goes on one of its own
            if (n && 31 + n + 11 + strlen(dflt) > 92) fprintf(out, "\n%31s(default %s)", "", dflt);
            else fprintf(out, "%s(default %s)", n ? " " : "", dflt);
        }
    }
    fputc('\n', out);
}

void flags_help(const FlagTable *t, FILE *out) {
    fputs(t->usage, out);
    for (int i = 0; i < t->n; i++) {
        const FlagSpec *f = &t->flags[i];
        if (f->type == FLAG_NOTE) {
            fprintf(out, "%s\n", f->help);
            continue;
        }
        char lead[160];
        int n = snprintf(lead, sizeof lead, "  %s%s%s", f->alias && f->alias[1] != '-' ? f->alias : "",
                         f->alias && f->alias[1] != '-' ? ", " : "", f->name);
        if (f->type == FLAG_ENUM) {
            n += snprintf(lead + n, sizeof lead - n, " ");
            for (int k = 0; f->choices[k] && n < (int)sizeof lead - 1; k++)
                n += snprintf(lead + n, sizeof lead - n, "%s%s", k ? "|" : "", f->choices[k]);
        } else if (f->metavar) {
            snprintf(lead + n, sizeof lead - n, " %s", f->metavar);
        }
        const char *d = f->def && f->type != FLAG_SWITCH && *f->def ? f->def : NULL;
        if (f->def && !*f->def) d = "\"\"";
        print_wrapped_help(out, lead, f->help, d);
    }
    if (t->epilogue) fputs(t->epilogue, out);
}

// ---- YAML (libyaml's document API: every node carries its line)

int flags_yaml_line(void *node) { return (int)((yaml_node_t *)node)->start_mark.line + 1; }

const char *flags_yaml_scalar(void *node) {
    yaml_node_t *n = node;
    return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = (const char *)n->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

// YAML 1.1 booleans, as PyYAML's SafeLoader (mlx-lm's) reads them: 1 true, 0 false, -1 neither.
static int yaml_bool(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return -1;
    static const char *const T[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *const F[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    const char *s = (const char *)n->data.scalar.value;
    for (int i = 0; i < 9; i++) {
        if (!strcmp(s, T[i])) return 1;
        if (!strcmp(s, F[i])) return 0;
    }
    return -1;
}

static const char *kind_name(const yaml_node_t *n) {
    if (n->type == YAML_MAPPING_NODE) return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE) return "a list";
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return "a quoted string";
    return "a scalar";
}

static const char *expected(const FlagSpec *f) {
    switch (f->type) {
    case FLAG_INT: return "an integer";
    case FLAG_DOUBLE:
    case FLAG_U64: return "a number";
    case FLAG_SWITCH: return "true or false";
    case FLAG_STRING: return f->list ? "a string or a list of strings" : "a string";
    default: return "a string";
    }
}

typedef struct {
    const FlagTable *t;
    void *cfg;
    const char *file;
    const FlagState *st;
    FlagYamlExtraFn extra;
    void *ctx;
    yaml_document_t *doc;
} YamlLoad;

static int set_from_node(YamlLoad *L, const FlagSpec *f, const char *key, yaml_node_t *v,
                         Error *err) {
    int line = flags_yaml_line(v);
    if (is_null(v)) return 0;  // mlx-lm: None means "use the default"
    if (f->type == FLAG_SWITCH) {
        int b = yaml_bool(v);
        if (b < 0)
            return err_set(err, "%s:%d: %s: expected true or false, got %s%s%s%s", L->file, line, key,
                           v->type == YAML_SCALAR_NODE ? "'" : "",
                           v->type == YAML_SCALAR_NODE ? (const char *)v->data.scalar.value : kind_name(v),
                           v->type == YAML_SCALAR_NODE ? "'" : "", "");
        *(int *)field(f, L->cfg) = b;
        return 0;
    }
    char *text = NULL;
    if (v->type == YAML_SEQUENCE_NODE && f->list) {
        size_t len = 0;
        text = xstrdup("");
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
            yaml_node_t *e = yaml_document_get_node(L->doc, *it);
            if (!e || e->type != YAML_SCALAR_NODE) {
                free(text);
                return err_set(err, "%s:%d: %s: expected a list of strings, got %s in the list", L->file,
                               e ? flags_yaml_line(e) : line, key, e ? kind_name(e) : "nothing");
            }
            size_t l = strlen((const char *)e->data.scalar.value);
            text = xrealloc(text, len + l + 2);
            if (len) text[len++] = ',';
            memcpy(text + len, e->data.scalar.value, l + 1);
            len += l;
        }
    } else if (v->type != YAML_SCALAR_NODE) {
        return err_set(err, "%s:%d: %s: expected %s, got %s", L->file, line, key, expected(f), kind_name(v));
    } else {
        int numeric = f->type == FLAG_INT || f->type == FLAG_DOUBLE || f->type == FLAG_U64;
        if (numeric && v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
            return err_set(err, "%s:%d: %s: expected %s, got a quoted string '%s'", L->file, line, key,
                           expected(f), (const char *)v->data.scalar.value);
        if (!numeric && yaml_bool(v) >= 0 && f->type != FLAG_STRING)
            return err_set(err, "%s:%d: %s: expected %s, got '%s'", L->file, line, key, expected(f),
                           (const char *)v->data.scalar.value);
        text = xstrdup((const char *)v->data.scalar.value);
    }
    char msg[512];
    if (flags_set(f, L->cfg, text, msg, sizeof msg)) {
        free(text);
        return err_set(err, "%s:%d: %s: %s", L->file, line, key, msg[0] == ':' ? msg + 2 : msg);
    }
    keep(text);
    return 0;
}

// Is `prefix` ("lora_parameters") a section of the table's dotted keys?
static int is_section(const FlagTable *t, const char *prefix) {
    size_t n = strlen(prefix);
    for (int i = 0; i < t->n; i++)
        if (t->flags[i].yaml && !strncmp(t->flags[i].yaml, prefix, n) && t->flags[i].yaml[n] == '.')
            return 1;
    return 0;
}

static int load_mapping(YamlLoad *L, yaml_node_t *map, const char *prefix, Error *err) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(L->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(L->doc, p->value);
        if (!k || !v) return err_set(err, "%s: malformed YAML document", L->file);
        if (k->type != YAML_SCALAR_NODE)
            return err_set(err, "%s:%d: a key must be a string, got %s", L->file, flags_yaml_line(k),
                           kind_name(k));
        char key[256];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", (const char *)k->data.scalar.value);
        const FlagSpec *f = flags_by_yaml(L->t, key);
        if (f) {
            int idx = (int)(f - L->t->flags);
            if (idx < FLAGS_MAX && L->st && L->st->given[idx]) continue;  // the command line wins
            if (set_from_node(L, f, key, v, err)) return -1;
            continue;
        }
        if (is_section(L->t, key)) {
            if (is_null(v)) continue;
            if (v->type != YAML_MAPPING_NODE)
                return err_set(err, "%s:%d: %s: expected a mapping, got %s", L->file, flags_yaml_line(v),
                               key, kind_name(v));
            if (load_mapping(L, v, key, err)) return -1;
            continue;
        }
        int rc = L->extra ? L->extra(L->ctx, L->cfg, L->file, key, L->doc, v, err) : 0;
        if (rc < 0) return -1;
        if (rc == 0)
            return err_set(err, "%s:%d: unknown key '%s' (see tunelens %s --help for the flags; YAML "
                           "keys are their long names with '_')", L->file, flags_yaml_line(k), key,
                           L->t->cmd);
    }
    return 0;
}

int flags_load_yaml(const FlagTable *t, void *cfg, const char *path, const FlagState *st,
                    FlagYamlExtraFn extra, void *ctx, Error *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(err, "%s: cannot open the config file: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(fp);
        return err_set(err, "out of memory while reading %s", path);
    }
    yaml_parser_set_input_file(&parser, fp);
    int rc = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = err_set(err, "%s:%d:%d: invalid YAML: %s%s%s", path, (int)parser.problem_mark.line + 1,
                     (int)parser.problem_mark.column + 1, parser.problem ? parser.problem : "syntax error",
                     parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        fclose(fp);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    YamlLoad L = {t, cfg, path, st, extra, ctx, &doc};
    if (!root || is_null(root)) {
        // an empty file: nothing to set, as mlx-lm would... except it fails on None.items()
        rc = err_set(err, "%s: the config file is empty (expected a mapping of flags, e.g. "
                          "'iters: 100')", path);
    } else if (root->type != YAML_MAPPING_NODE) {
        rc = err_set(err, "%s:%d: expected a mapping of flags (key: value), got %s", path,
                     flags_yaml_line(root), kind_name(root));
    } else {
        rc = load_mapping(&L, root, "", err);
    }
    // a second document in the file is refused as PyYAML's yaml.load refuses it
    if (!rc) {
        yaml_document_t more;
        if (!yaml_parser_load(&parser, &more)) {
            rc = err_set(err, "%s:%d:%d: invalid YAML: %s", path, (int)parser.problem_mark.line + 1,
                         (int)parser.problem_mark.column + 1,
                         parser.problem ? parser.problem : "syntax error");
        } else {
            if (yaml_document_get_root_node(&more))
                rc = err_set(err, "%s:%d: expected a single YAML document, found a second one", path,
                             (int)more.start_mark.line + 1);
            yaml_document_delete(&more);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(fp);
    return rc;
}
