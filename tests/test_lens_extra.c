// test_lens_extra.c — the lens's additions against the float64 numpy reference
// (tests/make_lens_fixtures.py: KL to final, every position, logit differences), and the tuned
// lens: its gradient against a float64 reference and finite differences, the last layer
// bit-identical to the plain lens, a held-out KL below the plain lens's after training, and
// files made for another model shape refused.
#include "analysis/tuned_lens.h"
#include "model_util.h"
#include "train/data.h"

#define TINY FIXTURE("tiny")
#define LENS FIXTURE("lens")

// ---- the lens at every position against the reference
//
// Lens row r's logits are each within dz_r = f32_path_rel(lens_row_terms) zmax_r of exact
// (test_util.h; sides = 1 against float64). Then: a logit difference is within 2 dz_r; a log
// probability within 2 dz_r (z - logsumexp z); KL(final || r) = sum p_f (lf - lr), computed in
// double from our f32 logits, moves by at most expm1(2 dz_f) sum p_f |lf - lr| (p_f's relative
// error) plus (1 + expm1(2 dz_f)) (2 dz_f + 2 dz_r) (the log probabilities'), plus the double
// sum's own rounding, V 2^-53 of its terms.
static void test_every_position_matches_reference(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    cJSON *j = load_json_fixture(LENS "/lens_ref.json");
    int n, nd;
    int *ids = json_ints(cJSON_GetObjectItem(j, "ids"), &n);
    int *diff = json_ints(cJSON_GetObjectItem(j, "diff"), &nd);
    const cJSON *positions = cJSON_GetObjectItem(j, "positions");
    const int L = m.cfg.n_layers, R = L + 1, C = m.cfg.dim, V = m.cfg.vocab_size;
    assert_int_equal(cJSON_GetArraySize(positions), n);
    float *every = xmalloc(sizeof(float) * (size_t)R * n * C), *rows = xmalloc(sizeof(float) * R * C);
    float *z = xmalloc(sizeof(float) * (size_t)R * V), *p = xmalloc(sizeof(float) * (size_t)R * V);
    Error err = {{0}};
    assert_int_equal(lens_residuals_every(&m, ids, n, every, &err), 0);
    int layers[16];
    for (int r = 0; r < R; r++) layers[r] = r - 1;
    double worst_kl = 0, worst_diff = 0, worst_p = 0;
    int top_checked = 0;
    for (int pos = 0; pos < n; pos++) {
        const cJSON *ref = cJSON_GetArrayItem(positions, pos);
        for (int r = 0; r < R; r++)
            memcpy(rows + (size_t)r * C, every + ((size_t)r * n + pos) * C, sizeof(float) * C);
        LensOpts o = {pos, diff, NULL};
        LensResult res;
        assert_int_equal(lens_run_rows(&m, rows, 5, layers, R, NULL, 0, &o, &res, &err), 0);
        assert_int_equal(res.position, pos);
        lens_unembed_logits(&m, rows, R, z, p);
        double zf = max_abs_f(z + (size_t)L * V, V);
        double dzf = f32_path_rel(lens_row_terms(&m.cfg, L, pos + 1, 0, 0)) * zf;
        for (int r = 0; r < R; r++) {
            double zr = max_abs_f(z + (size_t)r * V, V);
            double dz = f32_path_rel(lens_row_terms(&m.cfg, r, pos + 1, 0, 0)) * zr;
            double kl_ref = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "kl"), r)->valuedouble;
            double kl_abs = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "kl_abs"), r)->valuedouble;
            double d_ref = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "diff"), r)->valuedouble;
            double b_kl = expm1(2 * dzf) * kl_abs + (1 + expm1(2 * dzf)) * (2 * dzf + 2 * dz) +
                          V * 0x1p-53 * (kl_abs + 1);
            const LensLayer *Ly = &res.layers[r];
            assert_int_equal(Ly->layer, r - 1);
            double e_kl = fabs(Ly->kl_to_final - kl_ref), e_d = fabs(Ly->diff - d_ref);
            worst_kl = fmax(worst_kl, e_kl / b_kl), worst_diff = fmax(worst_diff, e_d / (2 * dz));
            if (e_kl > b_kl || e_d > 2 * dz)
                fail_msg("position %d row %d: KL %.9g vs %.9g (bound %.2e), diff %.9g vs %.9g "
                         "(bound %.2e)", pos, r, Ly->kl_to_final, kl_ref, b_kl, Ly->diff, d_ref,
                         2 * dz);
            if (r == L) assert_true(Ly->kl_to_final == 0);
            // the reference's top-5 probabilities, each within lens_prob_bound
            const cJSON *top = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "top"), r);
            const cJSON *top_p = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "top_p"), r);
            double soft = lens_softmax_rel(V, zr);
            for (int k = 0; k < 5; k++) {
                int id = cJSON_GetArrayItem(top, k)->valueint;
                double pr = cJSON_GetArrayItem(top_p, k)->valuedouble;
                double b = lens_prob_bound(pr, dz, soft), e = fabs(p[(size_t)r * V + id] - pr);
                worst_p = fmax(worst_p, e / b);
                if (e > b) fail_msg("position %d row %d token %d: p %.9g vs %.9g (bound %.2e)",
                                    pos, r, id, p[(size_t)r * V + id], pr, b);
            }
            // our top-1 is the reference's wherever its margin exceeds both bounds
            double p1 = cJSON_GetArrayItem(top_p, 0)->valuedouble;
            double p2 = cJSON_GetArrayItem(top_p, 1)->valuedouble;
            if (p1 - p2 > lens_prob_bound(p1, dz, soft) + lens_prob_bound(p2, dz, soft)) {
                assert_int_equal(Ly->top[0].id, cJSON_GetArrayItem(top, 0)->valueint);
                top_checked++;
            }
        }
        lens_result_free(&res);
    }
    printf("  %d positions x %d rows: worst |KL err| / bound %.3f, |diff err| / bound %.3f, "
           "|p err| / bound %.3f; top-1 checked on %d rows\n", n, R, worst_kl, worst_diff,
           worst_p, top_checked);
    free(every), free(rows), free(z), free(p), free(ids), free(diff);
    cJSON_Delete(j);
    model_free(&m);
}

// The last position through lens_run_opts is lens_run's, bit for bit; a middle position read
// from lens_residuals_every has a KL of 0 at the last layer; out-of-range positions and layers
// are refused with messages that say the range.
static void test_position_options(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int ids[] = {0, 23, 145, 67, 389};
    const int n = 5, V = m.cfg.vocab_size;
    LensResult a, b;
    Error err = {{0}};
    assert_int_equal(lens_run(&m, ids, n, 5, NULL, 0, NULL, 0, &a, &err), 0);
    LensOpts o = LENS_OPTS_DEFAULT;
    assert_int_equal(lens_run_opts(&m, ids, n, 5, NULL, 0, NULL, 0, &o, &b, &err), 0);
    assert_int_equal(a.n_layers, b.n_layers);
    assert_int_equal(b.position, n - 1);
    for (int l = 0; l < a.n_layers; l++) {
        assert_memory_equal(a.layers[l].top, b.layers[l].top, sizeof(TokenProb) * 5);
        assert_true(a.layers[l].entropy == b.layers[l].entropy);
    }
    lens_result_free(&a), lens_result_free(&b);
    o.position = 2;
    assert_int_equal(lens_run_opts(&m, ids, n, 3, NULL, 0, NULL, 0, &o, &b, &err), 0);
    assert_int_equal(b.position, 2);
    assert_true(b.layers[b.n_layers - 1].kl_to_final == 0);
    lens_result_free(&b);
    o.position = 5;
    assert_int_equal(lens_run_opts(&m, ids, n, 3, NULL, 0, NULL, 0, &o, &b, &err), -1);
    assert_non_null(strstr(err.msg, "positions 0..4"));
    int bad_layer = m.cfg.n_layers;
    o.position = LENS_LAST;
    assert_int_equal(lens_run_opts(&m, ids, n, 3, &bad_layer, 1, NULL, 0, &o, &b, &err), -1);
    assert_non_null(strstr(err.msg, "does not exist"));
    int bad_diff[2] = {0, V};
    o.diff = bad_diff;
    assert_int_equal(lens_run_opts(&m, ids, n, 3, NULL, 0, NULL, 0, &o, &b, &err), -1);
    assert_non_null(strstr(err.msg, "--diff"));
    model_free(&m);
}

// ---- the tuned lens's loss and gradient
//
// A float64 reference of the same loss on the same f32 inputs: t = h + W h + b,
// xn = t / rms(t) * g, z = head xn, loss = mean_r KL(softmax(zf_r) || softmax(z_r)); its
// gradient by the chain rule, itself checked against central differences of the float64 loss.
static double ref_loss(const Model *m, const double *W, const double *b, const float *h,
                       const float *zf, int n, double *dW, double *db) {
    const int C = m->cfg.dim, V = m->cfg.vocab_size;
    double total = 0;
    double *t = malloc(sizeof(double) * C), *xn = malloc(sizeof(double) * C);
    double *z = malloc(sizeof(double) * V), *dxn = malloc(sizeof(double) * C);
    double *dt = malloc(sizeof(double) * C);
    for (int r = 0; r < n; r++) {
        const float *x = h + (size_t)r * C, *zr = zf + (size_t)r * V;
        double ss = 0;
        for (int i = 0; i < C; i++) {
            double s = x[i] + b[i];
            for (int k = 0; k < C; k++) s += W[(size_t)i * C + k] * x[k];
            t[i] = s, ss += s * s;
        }
        double rstd = 1 / sqrt(ss / C + m->cfg.norm_eps);
        for (int i = 0; i < C; i++) xn[i] = t[i] * rstd * m->final_norm[i];
        double mz = -INFINITY, mf = -INFINITY, sz = 0, sf = 0;
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int i = 0; i < C; i++) s += (double)m->head[(size_t)v * C + i] * xn[i];
            z[v] = s, mz = fmax(mz, s), mf = fmax(mf, zr[v]);
        }
        for (int v = 0; v < V; v++) sz += exp(z[v] - mz), sf += exp(zr[v] - mf);
        double lz = mz + log(sz), lf = mf + log(sf), kl = 0;
        for (int i = 0; i < C; i++) dxn[i] = 0;
        for (int v = 0; v < V; v++) {
            double pf = exp(zr[v] - lf), q = exp(z[v] - lz);
            kl += pf * ((zr[v] - lf) - (z[v] - lz));
            double g = (q - pf) / n;
            for (int i = 0; i < C; i++) dxn[i] += g * m->head[(size_t)v * C + i];
        }
        total += kl / n;
        if (!dW) continue;
        // rmsnorm backward: dt = rstd (g dxn) - t rstd^3 / C sum(g dxn t)
        double dot = 0;
        for (int i = 0; i < C; i++) dot += m->final_norm[i] * dxn[i] * t[i];
        for (int i = 0; i < C; i++)
            dt[i] = rstd * m->final_norm[i] * dxn[i] - t[i] * rstd * rstd * rstd * dot / C;
        for (int i = 0; i < C; i++) {
            db[i] += dt[i];
            for (int k = 0; k < C; k++) dW[(size_t)i * C + k] += dt[i] * x[k];
        }
    }
    free(t), free(xn), free(z), free(dxn), free(dt);
    return total;
}

static void test_tuned_gradient(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int C = m.cfg.dim, V = m.cfg.vocab_size, L = m.cfg.n_layers, R = L + 1;
    const int ids[] = {0, 23, 145, 67, 389, 101};
    const int n = 6, layer_row = 2;  // lens layer 1
    float *every = xmalloc(sizeof(float) * (size_t)R * n * C);
    Error err = {{0}};
    assert_int_equal(lens_residuals_every(&m, ids, n, every, &err), 0);
    float *h = every + (size_t)layer_row * n * C;  // (n, C) rows of lens layer 1
    float *zf = xmalloc(sizeof(float) * (size_t)n * V);
    lens_unembed_logits(&m, every + (size_t)L * n * C, n, zf, NULL);
    rng_seed(16);
    float *W = rand_floats((size_t)C * C, 0.05f), *b = rand_floats(C, 0.1f);
    float *dW = calloc((size_t)C * C, sizeof(float)), *db = calloc(C, sizeof(float));
    double loss = tuned_lens_loss(&m, W, b, h, zf, n, dW, db);
    double *Wd = malloc(sizeof(double) * C * C), *bd = malloc(sizeof(double) * C);
    double *gW = calloc((size_t)C * C, sizeof(double)), *gb = calloc(C, sizeof(double));
    for (int i = 0; i < C * C; i++) Wd[i] = W[i];
    for (int i = 0; i < C; i++) bd[i] = b[i];
    double ref = ref_loss(&m, Wd, bd, h, zf, n, gW, gb);
    // the reference's gradient against central differences of its loss (float64: steps of
    // 1e-5 leave a truncation error ~1e-10 and a rounding error ~1e-11 relative)
    double fd_worst = 0, gmax = 0;
    for (int i = 0; i < C * C; i++) gmax = fmax(gmax, fabs(gW[i]));
    for (int i = 0; i < C; i++) gmax = fmax(gmax, fabs(gb[i]));
    for (int k = 0; k < 24; k++) {
        int i = (k * 997) % (C * C);
        double eps = 1e-5, keep = Wd[i];
        Wd[i] = keep + eps;
        double up = ref_loss(&m, Wd, bd, h, zf, n, NULL, NULL);
        Wd[i] = keep - eps;
        double dn = ref_loss(&m, Wd, bd, h, zf, n, NULL, NULL);
        Wd[i] = keep;
        fd_worst = fmax(fd_worst, fabs((up - dn) / (2 * eps) - gW[i]));
        int j = k % C;
        keep = bd[j];
        bd[j] = keep + eps;
        up = ref_loss(&m, Wd, bd, h, zf, n, NULL, NULL);
        bd[j] = keep - eps;
        dn = ref_loss(&m, Wd, bd, h, zf, n, NULL, NULL);
        bd[j] = keep;
        fd_worst = fmax(fd_worst, fabs((up - dn) / (2 * eps) - gb[j]));
    }
    printf("  float64 gradient vs central differences: max |diff| %.2e (gradient scale %.2e)\n",
           fd_worst, gmax);
    assert_true(fd_worst <= 1e-6 * gmax);
    // ours (f32) against the float64 reference. The chain: W h (C terms), the norm (C), the
    // head (C), the softmax's normalizer (V); back: the head (V), the norm (C), the sum over the
    // rows (n). Each value is within f32_path_rel(terms) of its tensor's scale (gmax); the loss
    // within loss_round_bound of the logits' scale.
    double terms = 4.0 * C + 2.0 * V + n;
    double bound = f32_path_rel(terms) * gmax, worst = 0;
    for (int i = 0; i < C * C; i++) worst = fmax(worst, fabs(dW[i] - gW[i]));
    for (int i = 0; i < C; i++) worst = fmax(worst, fabs(db[i] - gb[i]));
    double zmax = max_abs_f(zf, (size_t)n * V);
    double lbound = loss_round_bound(f32_path_rel(3.0 * C + V), zmax, n);
    printf("  loss %.9g vs float64 %.9g (bound %.2e); gradient max |diff| %.2e (bound %.2e)\n",
           loss, ref, lbound, worst, bound);
    assert_true(fabs(loss - ref) <= lbound);
    assert_true(worst <= bound);
    free(every), free(zf), free(W), free(b), free(dW), free(db), free(Wd), free(bd), free(gW),
        free(gb);
    model_free(&m);
}

// Every position of a jsonl file's texts (train's tokenization).
static float *text_residuals(const Model *m, const char *path, int64_t *N) {
    Dataset d;
    Error err = {{0}};
    if (dataset_load(&d, path, m->tok, m->cfg.vocab_size, 64, 0, &err)) fail_msg("%s", err.msg);
    const int **ids = malloc(sizeof(int *) * d.n);
    int *len = malloc(sizeof(int) * d.n);
    for (int i = 0; i < d.n; i++) ids[i] = d.ex[i].ids, len[i] = d.ex[i].len;
    float *res;
    if (tuned_lens_residuals(m, d.n, (const int *const *)ids, len, 8, &res, N, &err))
        fail_msg("%s", err.msg);
    free(ids), free(len);
    dataset_free(&d);
    return res;
}

// Training lowers the held-out KL at every translated layer; the last layer is the plain
// lens's, bit for bit; a saved and reloaded lens gives the same lens; a file for another shape
// is refused, naming the key and both shapes.
static void test_tuned_lens_trains(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int L = m.cfg.n_layers, C = m.cfg.dim;
    int64_t Ntr, Nva;
    float *tr = text_residuals(&m, LENS "/train.jsonl", &Ntr);
    float *va = text_residuals(&m, LENS "/valid.jsonl", &Nva);
    TunedLens t;
    tuned_lens_init(&t, L, C);
    double *plain = calloc(L + 1, sizeof(double)), *tuned = calloc(L + 1, sizeof(double));
    double *zero = calloc(L + 1, sizeof(double));
    tuned_lens_eval(&m, NULL, va, Nva, plain);
    tuned_lens_eval(&m, &t, va, Nva, zero);  // zero translators: the plain lens
    TunedTrainConfig cfg = {.iters = 100, .batch_tokens = 32, .lr = 0.1, .warmup = 20, .seed = 1,
                            .quiet = 1};
    Error err = {{0}};
    assert_int_equal(tuned_lens_train(&m, &t, tr, Ntr, &cfg, &err), 0);
    tuned_lens_eval(&m, &t, va, Nva, tuned);
    // the least-squares start (--init regression) lowers it too
    TunedLens ls;
    tuned_lens_init(&ls, L, C);
    double *fit = calloc(L + 1, sizeof(double));
    assert_int_equal(tuned_lens_fit_linear(&m, &ls, tr, Ntr, 1e-3, &err), 0);
    tuned_lens_eval(&m, &ls, va, Nva, fit);
    for (int r = 0; r < L; r++) {
        printf("    layer %2d: least-squares start %.4f\n", r - 1, fit[r]);
        assert_true(fit[r] < plain[r]);
    }
    free(fit);
    tuned_lens_free(&ls);
    printf("  %lld train / %lld held-out positions; held-out KL(final || lens), plain -> tuned:\n",
           (long long)Ntr, (long long)Nva);
    for (int r = 0; r <= L; r++) {
        printf("    layer %2d: %.4f -> %.4f\n", r - 1, plain[r], tuned[r]);
        // zero translators: h + 0 h + 0 is h in f32, so the very same KL
        assert_true(fabs(zero[r] - plain[r]) <= 1e-12 * (1 + plain[r]));
        if (r < L) assert_true(tuned[r] < plain[r]);
        else assert_true(tuned[r] == 0 && plain[r] == 0);
    }
    // the lens of a prompt: the last layer the same bits with and without the tuned lens
    const int ids[] = {0, 23, 145, 67, 389};
    LensResult a, b;
    LensOpts o = LENS_OPTS_DEFAULT;
    assert_int_equal(lens_run_opts(&m, ids, 5, 5, NULL, 0, NULL, 0, &o, &a, &err), 0);
    o.tuned = &t;
    assert_int_equal(lens_run_opts(&m, ids, 5, 5, NULL, 0, NULL, 0, &o, &b, &err), 0);
    const LensLayer *la = &a.layers[L - 1], *lb = &b.layers[L - 1];
    assert_memory_equal(la->top, lb->top, sizeof(TokenProb) * 5);
    assert_true(la->entropy == lb->entropy && lb->kl_to_final == 0);
    assert_memory_equal(&a.final, &b.final, sizeof(TokenProb));
    int moved = 0;  // and the translated layers are not
    for (int l = 0; l < L - 1; l++) moved += a.layers[l].entropy != b.layers[l].entropy;
    assert_true(moved > 0);
    lens_result_free(&a);
    // save and load: the same lens
    char dir[64];
    tmp_dir_make(dir, sizeof dir, "tunedlens");
    const char *path = tmp_join(dir, "lens.safetensors");
    t.kl_plain = plain, t.kl_tuned = tuned;
    assert_int_equal(tuned_lens_save(&t, path, &err), 0);
    t.kl_plain = t.kl_tuned = NULL;
    TunedLens u;
    assert_int_equal(tuned_lens_load(&u, path, &m.cfg, &err), 0);
    assert_memory_equal(u.weight, t.weight, sizeof(float) * (size_t)L * C * C);
    assert_memory_equal(u.bias, t.bias, sizeof(float) * (size_t)L * C);
    o.tuned = &u;
    assert_int_equal(lens_run_opts(&m, ids, 5, 5, NULL, 0, NULL, 0, &o, &a, &err), 0);
    for (int l = 0; l < L; l++) assert_true(a.layers[l].entropy == b.layers[l].entropy);
    lens_result_free(&a), lens_result_free(&b);
    tuned_lens_free(&u);
    // another shape: width 32, or fewer layers
    TunedLens s;
    tuned_lens_init(&s, L, 32);
    const char *p2 = tmp_join(dir, "narrow.safetensors");
    assert_int_equal(tuned_lens_save(&s, p2, &err), 0);
    assert_int_equal(tuned_lens_load(&u, p2, &m.cfg, &err), -1);
    printf("  narrow: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "layer.-1.weight has shape (32, 32), the model needs (64, 64)"));
    tuned_lens_free(&s);
    tuned_lens_init(&s, L - 1, C);
    assert_int_equal(tuned_lens_save(&s, p2, &err), 0);
    assert_int_equal(tuned_lens_load(&u, p2, &m.cfg, &err), -1);
    printf("  shallow: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "no tensor layer.2.weight"));
    tuned_lens_free(&s);
    tuned_lens_init(&s, L + 1, C);
    assert_int_equal(tuned_lens_save(&s, p2, &err), 0);
    assert_int_equal(tuned_lens_load(&u, p2, &m.cfg, &err), -1);
    printf("  deep: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "layer.3.weight"));
    tuned_lens_free(&s);
    tmp_dir_remove(dir);
    tuned_lens_free(&t);
    free(plain), free(tuned), free(zero), free(tr), free(va);
    model_free(&m);
}

// The least-squares start solves its normal equations: for translator r and output o, with
// x = [h 1], y the final row at unit RMS and a = [W + I, b]'s row o,
//   sum_n x_n (x_n . a - y_no) + lambda a = 0,   lambda = ridge tr(X^T X) / (C + 1),
// checked in float64 on the same f32 residuals. Our X^T X and X^T Y are f32 sums over the N
// positions (each entry within f32_path_rel(N) of the sum of its terms' magnitudes); a solution
// of perturbed equations leaves a residual of at most |dP| + |dG| |a| (first order), and storing
// W = A - I in f32 adds u (|a_j| + 1) per coefficient, through G.
static void test_least_squares_start(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int L = m.cfg.n_layers, R = L + 1, C = m.cfg.dim, K = C + 1;
    int64_t N;
    float *res = text_residuals(&m, LENS "/train.jsonl", &N);
    TunedLens t;
    tuned_lens_init(&t, L, C);
    Error err = {{0}};
    const double ridge = 1e-3;
    assert_int_equal(tuned_lens_fit_linear(&m, &t, res, N, ridge, &err), 0);
    double worst = 0, rel = f32_path_rel((double)N);
    double *x = malloc(sizeof(double) * K), *a = malloc(sizeof(double) * K);
    double *g = malloc(sizeof(double) * K), *bound = malloc(sizeof(double) * K);
    for (int r = 0; r < L; r++) {
        double tr = 0;
        for (int64_t n = 0; n < N; n++) {
            const float *h = res + ((size_t)n * R + r) * C;
            for (int j = 0; j < C; j++) tr += (double)h[j] * h[j];
            tr += 1;
        }
        for (int o = 0; o < C; o += 9) {
            for (int j = 0; j < C; j++) a[j] = (double)t.weight[((size_t)r * C + o) * C + j] + (o == j);
            a[C] = t.bias[(size_t)r * C + o];
            double lambda = ridge * tr / K;
            for (int i = 0; i < K; i++) g[i] = lambda * a[i], bound[i] = 0;
            for (int64_t n = 0; n < N; n++) {
                const float *h = res + ((size_t)n * R + r) * C, *f = res + ((size_t)n * R + L) * C;
                double ss = 0, xa = 0, xabs = 0;
                for (int j = 0; j < C; j++) ss += (double)f[j] * f[j];
                float inv = (float)(1 / sqrt(ss / C + m.cfg.norm_eps));
                double y = (double)(f[o] * inv);
                for (int j = 0; j < C; j++) x[j] = h[j];
                x[C] = 1;
                for (int j = 0; j < K; j++) xa += x[j] * a[j], xabs += fabs(x[j]) * (fabs(a[j]) + F32_U * (fabs(a[j]) + 1));
                for (int i = 0; i < K; i++) {
                    g[i] += x[i] * (xa - y);
                    bound[i] += fabs(x[i]) * (rel * (fabs(y) + xabs) + F32_U * xabs);
                }
            }
            for (int i = 0; i < K; i++) worst = fmax(worst, fabs(g[i]) / bound[i]);
        }
    }
    printf("  normal equations of the least-squares start: worst |residual| / bound %.3f\n", worst);
    assert_true(worst <= 1);
    free(x), free(a), free(g), free(bound), free(res);
    tuned_lens_free(&t);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_position_matches_reference),
        cmocka_unit_test(test_position_options),
        cmocka_unit_test(test_tuned_gradient),
        cmocka_unit_test(test_tuned_lens_trains),
        cmocka_unit_test(test_least_squares_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
