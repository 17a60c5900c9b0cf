// tuned_lens.c — `tunelens tuned-lens`: trains a tuned lens (analysis/tuned_lens.h) on a data
// folder's texts and saves its translators; `lens --tuned F` applies them.
#include "../analysis/tuned_lens.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../train/data.h"
#include "cli.h"
#include "flags.h"

typedef struct {
    const char *device, *model, *adapter, *data, *out, *json;
    int iters, batch_tokens, max_tokens, eval_tokens, max_seq_len, init, warmup;
    double ridge;
    double lr;
    uint64_t seed;
} TunedArgs;

static const char *const INITS[] = {"identity", "regression", NULL};

#define O(field) offsetof(TunedArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG_MODEL(O(model)),
    FLAG_ADAPTER(O(adapter)),
    FLAG("--data", NULL, FLAG_STRING, O(data), NULL, 0, 0, NULL, "DIR",
         "a folder with train.jsonl ({\"text\"} or\n{\"prompt\", \"completion\"} lines) and "
         "optionally\nvalid.jsonl (required)", NULL),
    FLAG("--out", NULL, FLAG_STRING, O(out), NULL, 0, 0, NULL, "F.safetensors",
         "where the translators go (required)", NULL),
    FLAG("--iters", NULL, FLAG_INT, O(iters), "12", 0, 100000000, NULL, "N",
         "Adam steps on KL(final || lens)", NULL),
    FLAG("--batch-tokens", NULL, FLAG_INT, O(batch_tokens), "32", 1, 65536, NULL, "B",
         "positions a step (every translator sees them)", NULL),
    FLAG("--warmup", NULL, FLAG_INT, O(warmup), "-1", -1, 100000000, NULL, "N",
         "steps of linear warm-up before the linear decay\n(-1: a fifth of --iters, as "
         "tuned-lens does for Adam)", NULL),
    FLAG("--init", NULL, FLAG_ENUM, O(init), "regression", 0, 0, INITS, "identity|regression",
         "where the translators start: the identity (the\nlogit lens, as tuned-lens), or a "
         "least-squares fit\nof each layer to the final residual", NULL),
    FLAG("--ridge", NULL, FLAG_DOUBLE, O(ridge), "1e-3", 0, 1e6, NULL, "X",
         "--init regression's ridge, relative to the mean\ndiagonal of the Gram matrix", NULL),
    FLAG("--lr", "--learning-rate", FLAG_DOUBLE, O(lr), "1e-4", 1e-12, 10, NULL, "X",
         "Adam's step relative to each translator's output\nscale (--init identity: 0.1 unless "
         "given)", NULL),
    FLAG("--max-tokens", NULL, FLAG_INT, O(max_tokens), "2048", 2, 100000000, NULL, "N",
         "training positions at most (texts in file order); the\nlast eighth (at most 128) "
         "chooses, per layer, between\nthe translator before and after the Adam steps", NULL),
    FLAG("--eval-tokens", NULL, FLAG_INT, O(eval_tokens), "256", 1, 100000000, NULL, "N",
         "held-out positions at most", NULL),
    FLAG("--max-seq-len", NULL, FLAG_INT, O(max_seq_len), "256", 2, 1000000, NULL, "N",
         "longer texts are cut", NULL),
    FLAG_WITH(flags_set_seed, 0, "--seed", NULL, FLAG_CUSTOM, O(seed), "0", 0, 0, NULL, "S",
              "the order of the training positions", NULL),
    FLAG("--json", NULL, FLAG_STRING, O(json), NULL, 0, 0, NULL, "FILE",
         "write {model, out, train_tokens, eval_tokens, seconds,\nlayers:[{layer, kl_plain, "
         "kl_tuned}]} ('-' = stdout)", NULL),
    FLAG_DEVICE(O(device)),
};
#undef O

static const FlagTable TABLE = {
    "tuned-lens",
    "usage: tunelens tuned-lens --model M --data DIR --out F.safetensors [--adapter A]\n"
    "                           [--iters N] [--batch-tokens B] [--lr X] [--max-tokens N]\n"
    "                           [--eval-tokens N] [--seed S] [--json FILE]\n"
    "                           [--device auto|cpu|cuda]\n"
    "  Trains a tuned lens (Belrose et al. 2023): per lens layer (-1 = the embeddings, up to\n"
    "  the second-to-last block) an affine translator h -> h + W h + b, initialised to the\n"
    "  identity, before the final norm and head, minimising KL(final || lens) at every\n"
    "  position of DIR/train.jsonl with Adam. The last layer has no translator. Reports the\n"
    "  held-out KL per layer for the plain and the tuned lens (DIR/valid.jsonl, or the last\n"
    "  tenth of train.jsonl's texts when there is none). `lens --tuned F` applies the file.\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

// Token ids of a dataset's first texts, up to max positions (the last text cut to fit).
typedef struct {
    const int **ids;
    int *len, n;
    int64_t tokens;
} Texts;

static void texts_take(Texts *t, const Dataset *d, int from, int to, int64_t max) {
    t->ids = xmalloc(sizeof(int *) * (size_t)(to - from + 1));
    t->len = xmalloc(sizeof(int) * (size_t)(to - from + 1));
    t->n = 0, t->tokens = 0;
    for (int i = from; i < to && t->tokens < max; i++) {
        int len = d->ex[i].len;
        if (t->tokens + len > max) len = (int)(max - t->tokens);
        t->ids[t->n] = d->ex[i].ids, t->len[t->n++] = len;
        t->tokens += len;
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int cmd_tuned_lens(int argc, char **argv) {
    const char *cmd = "tuned-lens";
    TunedArgs a = {0};
    flags_defaults(&TABLE, &a);
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    if (!a.model) return cli_missing(cmd, "--model");
    if (!a.data) return cli_missing(cmd, "--data");
    if (!a.out) return cli_missing(cmd, "--out");
    Error err;
    char *train_path = path_join(a.data, "train.jsonl"), *valid_path = path_join(a.data, "valid.jsonl");
    if (!file_exists(train_path)) {
        err_set(&err, "%s: no such file (--data needs a folder with train.jsonl)", train_path);
        free(train_path), free(valid_path);
        return cli_fail(&err);
    }
    double t0 = now_s();
    Model m;
    Dataset dtr = {0}, dva = {0};
    Texts ttr = {0}, tva = {0};
    float *rtr = NULL, *rva = NULL;
    TunedLens t = {0};
    double *plain = NULL, *tuned = NULL;
    int have_model = 0, have_valid = file_exists(valid_path);
    if (cli_load_model(&m, a.model, a.adapter, a.device, &err)) goto fail;
    have_model = 1;
    const int L = m.cfg.n_layers, C = m.cfg.dim;
    if (dataset_load(&dtr, train_path, m.tok, m.cfg.vocab_size, a.max_seq_len, 0, &err))
        goto fail;
    if (have_valid) {
        if (dataset_load(&dva, valid_path, m.tok, m.cfg.vocab_size, a.max_seq_len, 0, &err))
            goto fail;
        texts_take(&ttr, &dtr, 0, dtr.n, a.max_tokens);
        texts_take(&tva, &dva, 0, dva.n, a.eval_tokens);
    } else {
        if (dtr.n < 2) {
            err_set(&err, "%s: 1 text, and no valid.jsonl beside it: a held-out slice needs at "
                    "least 2 texts", train_path);
            goto fail;
        }
        int hold = dtr.n / 10 > 0 ? dtr.n / 10 : 1;
        texts_take(&ttr, &dtr, 0, dtr.n - hold, a.max_tokens);
        texts_take(&tva, &dtr, dtr.n - hold, dtr.n, a.eval_tokens);
    }
    fprintf(stderr, "Training positions: %lld from %d texts; held-out: %lld from %d texts (%s)\n",
            (long long)ttr.tokens, ttr.n, (long long)tva.tokens, tva.n,
            have_valid ? "valid.jsonl" : "the last tenth of train.jsonl");
    int64_t Ntr, Nva;
    double t1 = now_s();
    if (tuned_lens_residuals(&m, ttr.n, (const int *const *)ttr.ids, ttr.len, 8, &rtr, &Ntr, &err) ||
        tuned_lens_residuals(&m, tva.n, (const int *const *)tva.ids, tva.len, 8, &rva, &Nva, &err))
        goto fail;
    double t2 = now_s();
    fprintf(stderr, "Residuals of every position: %.1f s\n", t2 - t1);
    plain = xcalloc((size_t)L + 1, sizeof(double));
    tuned = xcalloc((size_t)L + 1, sizeof(double));
    tuned_lens_eval(&m, NULL, rva, Nva, plain);
    tuned_lens_init(&t, L, C);
    int lr_given = 0;
    for (int i = 0; i < TABLE.n; i++) lr_given |= st.given[i] && !strcmp(FLAGS[i].name, "--lr");
    double lr = a.init == 0 && !lr_given ? 0.1 : a.lr;
    // the last eighth of the training positions (at most 128) is kept out of the steps: it
    // chooses, per layer, the translator before or after them
    int64_t Ndev = Ntr / 8 < 128 ? Ntr / 8 : 128, Nfit = Ntr - Ndev;
    const float *rdev = rtr + (size_t)Nfit * (L + 1) * C;
    TunedTrainConfig tc = {.iters = a.iters, .batch_tokens = a.batch_tokens, .lr = lr,
                           .seed = a.seed, .quiet = 0,
                           .warmup = a.warmup >= 0 ? a.warmup : a.iters / 5};
    double t3 = now_s();
    if (a.init == 1) {
        if (tuned_lens_fit_linear(&m, &t, rtr, Nfit, a.ridge, &err)) goto fail;
        fprintf(stderr, "Least-squares start: %.1f s\n", now_s() - t3);
    }
    if (a.iters > 0 && Ndev == 0) {  // too few positions to keep any out
        if (tuned_lens_train(&m, &t, rtr, Ntr, &tc, &err)) goto fail;
    } else if (a.iters > 0) {
        TunedLens before;
        tuned_lens_init(&before, L, C);
        memcpy(before.weight, t.weight, sizeof(float) * (size_t)L * C * C);
        memcpy(before.bias, t.bias, sizeof(float) * (size_t)L * C);
        if (tuned_lens_train(&m, &t, rtr, Nfit, &tc, &err)) {
            tuned_lens_free(&before);
            goto fail;
        }
        double *kb = xcalloc((size_t)L + 1, sizeof(double)), *ka = xcalloc((size_t)L + 1, sizeof(double));
        tuned_lens_eval(&m, &before, rdev, Ndev, kb);
        tuned_lens_eval(&m, &t, rdev, Ndev, ka);
        int kept = 0;
        double mb = 0, ma = 0;
        for (int r = 0; r < L; r++) mb += kb[r] / L, ma += ka[r] / L;
        for (int r = 0; r < L; r++) {
            if (ka[r] <= kb[r]) {
                kept++;
                continue;
            }
            memcpy(t.weight + (size_t)r * C * C, before.weight + (size_t)r * C * C,
                   sizeof(float) * (size_t)C * C);
            memcpy(t.bias + (size_t)r * C, before.bias + (size_t)r * C, sizeof(float) * C);
        }
        fprintf(stderr, "On %lld training positions kept out of the steps, KL %.4f before the "
                "Adam steps, %.4f after (mean over the layers); they lowered it at %d of %d "
                "layers, and the others keep their translator from before\n", (long long)Ndev,
                mb, ma, kept, L);
        free(kb), free(ka);
        tuned_lens_free(&before);
    }
    double t4 = now_s();
    tuned_lens_eval(&m, &t, rva, Nva, tuned);
    t.kl_plain = plain, t.kl_tuned = tuned, t.model = xstrdup(a.model);
    if (tuned_lens_save(&t, a.out, &err)) goto fail;
    double t5 = now_s();
    int json_stdout = a.json && !strcmp(a.json, "-");
    if (!json_stdout) {
        printf("Held-out KL(final || lens), nats, over %lld positions:\n", (long long)Nva);
        printf("Layer     plain     tuned\n");
        for (int r = 0; r <= L; r++) {
            if (r == 0) printf("  emb");
            else printf("%5d", r - 1);
            printf("  %8.4f  %8.4f\n", plain[r], tuned[r]);
        }
        double mp = 0, mt = 0;
        for (int r = 0; r < L; r++) mp += plain[r] / L, mt += tuned[r] / L;
        printf("Mean over the %d translated layers: plain %.4f, tuned %.4f\n", L, mp, mt);
        printf("Saved %s (forward %.1f s, training %.1f s, total %.1f s)\n", a.out, t2 - t1,
               t4 - t3, t5 - t0);
    }
    if (a.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", m.path);
        if (a.adapter) cJSON_AddStringToObject(j, "adapter", a.adapter);
        cJSON_AddStringToObject(j, "out", a.out);
        cJSON_AddNumberToObject(j, "train_tokens", (double)Ntr);
        cJSON_AddNumberToObject(j, "eval_tokens", (double)Nva);
        cJSON_AddNumberToObject(j, "iters", a.iters);
        cJSON_AddNumberToObject(j, "seconds", t5 - t0);
        cJSON *ls = cJSON_AddArrayToObject(j, "layers");
        for (int r = 0; r <= L; r++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddNumberToObject(x, "layer", r - 1);
            cJSON_AddNumberToObject(x, "kl_plain", plain[r]);
            cJSON_AddNumberToObject(x, "kl_tuned", tuned[r]);
            cJSON_AddItemToArray(ls, x);
        }
        rc = cli_write_json(a.json, j, &err);
        cJSON_Delete(j);
        if (rc) goto fail;
    }
    rc = 0;
    goto done;
fail:
    rc = cli_fail(&err);
done:
    t.kl_plain = t.kl_tuned = NULL;
    tuned_lens_free(&t);
    free(plain), free(tuned), free(rtr), free(rva);
    free(ttr.ids), free(ttr.len), free(tva.ids), free(tva.len);
    dataset_free(&dtr);
    if (have_valid) dataset_free(&dva);
    if (have_model) model_free(&m);
    free(train_path), free(valid_path);
    return rc;
}
