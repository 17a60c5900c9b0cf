// probe.c — `tunelens probe`: per layer, a linear probe of a label on the last-position
// residual stream, its held-out accuracy and a shuffled-label control (analysis/probe.h).
#include "../analysis/probe.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flags.h"

#define MAX_LAYERS 1024

typedef struct {
    const char *device, *model, *adapter, *data, *json, *save, *label_key, *text_key;
    double C;
    uint64_t seed;
    int n_layers;                 // 0: every layer
    int layer_list[MAX_LAYERS];
} ProbeArgs;

// --layers: all, or a list
static int set_layers(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    ProbeArgs *a = cfg;
    if (!strcmp(v, "all")) {
        a->n_layers = 0;
        return 0;
    }
    if (cli_layer_list(v, a->layer_list, MAX_LAYERS, &a->n_layers)) {
        a->n_layers = 0;
        snprintf(msg, n, "expects 'all' or a comma-separated list of layer numbers like 8,10, "
                 "got '%s'", v);
        return -1;
    }
    return 0;
}

#define O(field) offsetof(ProbeArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG("--model", NULL, FLAG_STRING, O(model), NULL, 0, 0, NULL, "M",
         "a Hugging Face model folder or a .gguf file (required)", NULL),
    FLAG("--data", NULL, FLAG_STRING, O(data), NULL, 0, 0, NULL, "FILE.jsonl",
         "the examples, one {\"text\": ..., \"label\": ...} a line\n(required)", NULL),
    FLAG("--label-key", NULL, FLAG_STRING, O(label_key), "label", 0, 0, NULL, "KEY",
         "the label's key in each line", NULL),
    FLAG("--text-key", NULL, FLAG_STRING, O(text_key), "text", 0, 0, NULL, "KEY",
         "the text's key in each line", NULL),
    FLAG_WITH(set_layers, 0, "--layers", NULL, FLAG_CUSTOM, 0, "all", 0, 0, NULL, "all|8,10",
              "the layers probed (0-based; -1 = the embedding output)", NULL),
    FLAG_ADAPTER(O(adapter)),
    FLAG("--c", "--C", FLAG_DOUBLE, O(C), "1", 1e-12, 1e12, NULL, "C",
         "scikit-learn's C, the inverse regularisation strength", NULL),
    FLAG_WITH(flags_set_seed, 0, "--seed", NULL, FLAG_CUSTOM, O(seed), "0", 0, 0, NULL, "S",
              "the train/test split and the control's shuffle", NULL),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {model, data, labels, n, n_train, n_test, seed, C,\nlayers:[{layer, accuracy, "
         "control_accuracy,\nselectivity, train_accuracy, iterations,\ncontrol_iterations}], "
         "seconds:{forward, fit,\ncpu_forward, cpu_fit}}\n('-' = stdout)", NULL),
    FLAG("--save", NULL, FLAG_STRING, O(save), NULL, 0, 0, NULL, "PROBES.safetensors",
         "the task probes as safetensors: layer.{l}.weight\n(labels, dim), .bias, .mean, .std "
         "(logits =\nweight @ ((x - mean) / std) + bias); metadata names\nthe labels", NULL),
    FLAG_DEVICE(O(device)),
};
#undef O

static const FlagTable TABLE = {
    "probe",
    "usage: tunelens probe --model M --data FILE.jsonl [--label-key label] [--text-key text]\n"
    "                      [--layers all | 8,10] [--adapter A] [--c C] [--seed S]\n"
    "                      [--json FILE] [--save PROBES.safetensors] [--device auto|cpu|cuda]\n"
    "  FILE.jsonl: one {\"text\": ..., \"label\": ...} object a line (a label may be a string or\n"
    "  a number). Each text is encoded as `lens` encodes a prompt and run through the model in\n"
    "  batches; layer i's feature is the residual stream after block i at the last position\n"
    "  (-1: the embedding output). Per layer a multinomial logistic-regression probe\n"
    "  (scikit-learn's LogisticRegression(C) on standardised features: L2 on the weights,\n"
    "  fitted to convergence by float64 L-BFGS) is trained on a fixed stratified 80/20 split\n"
    "  (--seed, default 0) and scored on the held-out 20%; the control is the same probe on\n"
    "  shuffled labels (Hewitt & Liang): selectivity = accuracy - control accuracy.\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

typedef struct {
    char **text;
    char **label;  // as read (a number as its JSON text)
    int n;
} Examples;

static void examples_free(Examples *e) {
    for (int i = 0; i < e->n; i++) free(e->text[i]), free(e->label[i]);
    free(e->text), free(e->label);
    memset(e, 0, sizeof *e);
}

static int read_examples(const char *path, const char *text_key, const char *label_key,
                         Examples *e, Error *err) {
    char *data = NULL;
    memset(e, 0, sizeof *e);
    if (read_file(path, &data, NULL, err)) return -1;
    int cap = 0, line_no = 0, rc = 0;
    for (char *line = data, *next; line && !rc; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        line_no++;
        const char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (!*p) continue;
        cJSON *j = cJSON_Parse(line);
        if (!j || !cJSON_IsObject(j)) {
            rc = err_set(err, "%s line %d: not a JSON object", path, line_no);
        } else {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, text_key);
            const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, label_key);
            if (!cJSON_IsString(t))
                rc = err_set(err, "%s line %d: no \"%s\" string", path, line_no, text_key);
            else if (!l)
                rc = err_set(err, "%s line %d: no \"%s\" key (the label; --label-key names "
                             "another)", path, line_no, label_key);
            else if (!cJSON_IsString(l) && !cJSON_IsNumber(l) && !cJSON_IsBool(l))
                rc = err_set(err, "%s line %d: \"%s\" must be a string or a number", path,
                             line_no, label_key);
            else {
                if (e->n == cap) {
                    cap = cap ? 2 * cap : 64;
                    e->text = xrealloc(e->text, sizeof(char *) * (size_t)cap);
                    e->label = xrealloc(e->label, sizeof(char *) * (size_t)cap);
                }
                e->text[e->n] = xstrdup(t->valuestring);
                e->label[e->n] = cJSON_IsString(l) ? xstrdup(l->valuestring) : cJSON_PrintUnformatted(l);
                e->n++;
            }
        }
        cJSON_Delete(j);
    }
    free(data);
    if (!rc && e->n == 0) rc = err_set(err, "%s: no examples", path);
    if (rc) examples_free(e);
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cmd_probe(int argc, char **argv) {
    const char *cmd = "probe";
    ProbeArgs a = {0};
    flags_defaults(&TABLE, &a);
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    const char *device = a.device, *model_path = a.model, *adapter = a.adapter,
               *data_path = a.data, *json_path = a.json, *save_path = a.save,
               *label_key = a.label_key, *text_key = a.text_key;
    double C = a.C;
    unsigned long long seed = a.seed;
    int *layer_list = a.layer_list, n_layers = a.n_layers;
    if (!model_path) return cli_missing(cmd, "--model");
    if (!data_path) return cli_missing(cmd, "--data");
    Error err;
    Examples ex;
    if (read_examples(data_path, text_key, label_key, &ex, &err)) return cli_fail(&err);
    // the labels, sorted (as scikit-learn's classes_)
    char **labels = xmalloc(sizeof(char *) * (size_t)ex.n);
    memcpy(labels, ex.label, sizeof(char *) * (size_t)ex.n);
    qsort(labels, (size_t)ex.n, sizeof(char *), cmp_str);
    int K = 0;
    for (int i = 0; i < ex.n; i++)
        if (!K || strcmp(labels[K - 1], labels[i])) labels[K++] = labels[i];
    int *y = xmalloc(sizeof(int) * (size_t)ex.n);
    for (int i = 0; i < ex.n; i++) {
        char **hit = bsearch(&ex.label[i], labels, (size_t)K, sizeof(char *), cmp_str);
        y[i] = (int)(hit - labels);
    }
    // bad data is told before the model loads
    if (K < 2) {
        err_set(&err, "%s: every example has the label '%s': a probe needs at least two labels",
                data_path, labels[0]);
        free(y), free(labels), examples_free(&ex);
        return cli_fail(&err);
    }
    if (ex.n < K) {
        err_set(&err, "%s: %d examples for %d labels: a probe needs at least one example per "
                "label", data_path, ex.n, K);
        free(y), free(labels), examples_free(&ex);
        return cli_fail(&err);
    }
    Model m;
    if (cli_load_model(&m, model_path, adapter, device, &err)) {
        free(y), free(labels), examples_free(&ex);
        return cli_fail(&err);
    }
    int **ids = xcalloc((size_t)ex.n, sizeof(int *)), *len = xcalloc((size_t)ex.n, sizeof(int));
    ProbeResult r = {0};
    rc = 0;
    for (int i = 0; i < ex.n && !rc; i++)
        if ((rc = cli_encode(&m, ex.text[i], &ids[i], &len[i], &err)))
            err_wrap(&err, "%s example %d", data_path, i + 1);
    if (!n_layers) {
        for (int l = 0; l < m.cfg.n_layers && n_layers < MAX_LAYERS; l++) layer_list[n_layers++] = l;
    }
    if (!rc)
        rc = probe_run(&m, (const int *const *)ids, len, y, ex.n, K, layer_list, n_layers, C,
                       seed, &r, &err);
    if (!rc && save_path) {
        rc = probe_save(save_path, &r, (const char *const *)labels, C, seed, &err);
        if (!rc) fprintf(stderr, "Saved %d probes to %s\n", r.n_layers, save_path);
    }
    int json_stdout = json_path && !strcmp(json_path, "-");
    if (!rc && !json_stdout) {
        printf("Probe: %d examples (%d train, %d held out), %d labels:", r.n, r.n_train, r.n_test, K);
        for (int k = 0; k < K; k++) printf("%s '%s'", k ? "," : "", labels[k]);
        printf("; C %g, seed %llu\n\n", C, seed);
        printf("Layer  Accuracy  Control  Selectivity  Train\n");
        for (int i = 0; i < r.n_layers; i++) {
            const ProbeScores *pl = &r.layers[i].s;
            if (pl->layer < 0) printf("  emb");
            else printf("%5d", pl->layer);
            printf("  %8.3f  %7.3f  %11.3f  %5.3f\n", pl->accuracy, pl->control_accuracy,
                   pl->selectivity, pl->train_accuracy);
        }
    }
    if (!rc)
        fprintf(stderr, "Probed %d layers: forward passes %.2fs (CPU %.2fs), fitting %.2fs (CPU "
                "%.2fs)\n", r.n_layers, r.seconds_forward, r.cpu_forward, r.seconds_fit, r.cpu_fit);
    if (!rc && json_path) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", m.path);
        if (adapter) cJSON_AddStringToObject(j, "adapter", adapter);
        cJSON_AddStringToObject(j, "data", data_path);
        cJSON_AddStringToObject(j, "label_key", label_key);
        cJSON *lab = cJSON_AddArrayToObject(j, "labels");
        for (int k = 0; k < K; k++) cJSON_AddItemToArray(lab, cJSON_CreateString(labels[k]));
        cJSON_AddNumberToObject(j, "n", r.n);
        cJSON_AddNumberToObject(j, "n_train", r.n_train);
        cJSON_AddNumberToObject(j, "n_test", r.n_test);
        cJSON_AddNumberToObject(j, "seed", (double)seed);
        cJSON_AddNumberToObject(j, "C", C);
        cJSON *ls = cJSON_AddArrayToObject(j, "layers");
        for (int i = 0; i < r.n_layers; i++) cJSON_AddItemToArray(ls, probe_scores_json(&r.layers[i].s));
        cJSON *sec = cJSON_AddObjectToObject(j, "seconds");
        cJSON_AddNumberToObject(sec, "forward", r.seconds_forward);
        cJSON_AddNumberToObject(sec, "fit", r.seconds_fit);
        cJSON_AddNumberToObject(sec, "cpu_forward", r.cpu_forward);
        cJSON_AddNumberToObject(sec, "cpu_fit", r.cpu_fit);
        rc = cli_write_json(json_path, j, &err);
        cJSON_Delete(j);
    }
    probe_result_free(&r);
    for (int i = 0; i < ex.n; i++) free(ids[i]);
    free(ids), free(len), free(y), free(labels);
    examples_free(&ex);
    model_free(&m);
    return rc ? cli_fail(&err) : 0;
}
