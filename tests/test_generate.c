// test_generate.c — sampling against mlx-lm 0.32.2's own samplers (tests/fixtures/sampling/
// mlx_sampling.json, by tests/make_sampling_fixtures.py), the draws' frequencies, greedy
// decoding unchanged, and steering against the float64 reference (steer_ref.json).
#include <math.h>

#include "model/generate.h"
#include "model/sample.h"
#include "model_util.h"

#define TINY FIXTURE("tiny")
#define SAMPLING FIXTURE("sampling")

static SamplerConfig case_config(const cJSON *c) {
    SamplerConfig s = SAMPLER_DEFAULTS;
    s.temp = cJSON_GetObjectItem(c, "temp")->valuedouble;
    s.top_p = cJSON_GetObjectItem(c, "top_p")->valuedouble;
    s.min_p = cJSON_GetObjectItem(c, "min_p")->valuedouble;
    s.min_tokens_to_keep = cJSON_GetObjectItem(c, "min_tokens_to_keep")->valueint;
    s.top_k = cJSON_GetObjectItem(c, "top_k")->valueint;
    return s;
}

static float *json_floats(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    float *v = xmalloc(sizeof(float) * (size_t)(*n ? *n : 1));
    int i = 0;
    for (const cJSON *x = arr->child; x; x = x->next) v[i++] = (float)x->valuedouble;
    return v;
}

// make_sampler's chain as sample_distribution runs it: the prefix kept, or -1 (undecided).
static int chain_prefix(const SamplerConfig *c, const float *lp, int V, const int *order, int n) {
    int k = V;
    if (k >= 0 && c->top_p > 0 && c->top_p < 1) k = sample_top_p(lp, V, c->top_p, order, n, k);
    if (k >= 0 && c->min_p != 0)
        k = sample_min_p(lp, V, c->min_p, c->min_tokens_to_keep, order, n, k);
    if (k >= 0 && c->top_k > 0) k = sample_top_k(V, c->top_k, n, k);
    return k;
}

// The finite entries of lp are exactly the ids of want (a JSON array, ascending).
static void assert_kept(const float *lp, int V, const cJSON *want, const char *what) {
    int n, *ids = json_ints(want, &n), k = 0;
    for (int v = 0; v < V; v++) {
        if (!isfinite(lp[v])) continue;
        if (k >= n || ids[k] != v) fail_msg("%s keeps token %d, mlx-lm does not", what, v);
        k++;
    }
    if (k != n) fail_msg("%s keeps %d tokens, mlx-lm %d", what, k, n);
    free(ids);
}

// Each filter alone and make_sampler's chain keep exactly mlx-lm's tokens; the chain's final
// distribution (softmax(masked * (1/temp))) matches mlx's. Bound: mlx's f32 softmax of the f32
// values x = lp * (1/temp) is within lens_softmax_rel(V, max|x|) of exact, relative to each p;
// our x differ from mlx's by the roundings of logits - logsumexp and of the product (2 u |x|
// each side, 4 u max|x| in all), and our float64 exp adds nothing at this scale.
static void test_filters_match_mlx(void **state) {
    (void)state;
    cJSON *j = load_json_fixture(SAMPLING "/mlx_sampling.json");
    const int V = cJSON_GetObjectItem(j, "V")->valueint;
    float *lp = xmalloc(sizeof(float) * V), *lp0 = xmalloc(sizeof(float) * V);
    int *order = xmalloc(sizeof(int) * V);
    double *dist = xmalloc(sizeof(double) * V);
    const cJSON *c;
    int n_cases = 0, n_partial = 0, n_undecided = 0;
    double worst_ratio = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        int n;
        float *logits = json_floats(cJSON_GetObjectItem(c, "logits"), &n);
        float *mlx_lp = json_floats(cJSON_GetObjectItem(c, "logprobs"), &n);
        assert_int_equal(n, V);
        SamplerConfig s = case_config(c);
        Error err = {{0}};
        assert_int_equal(sampler_check(&s, V, &err), 0);
        sample_logprobs(logits, lp0, V);
        // logits - logsumexp against mlx's: each side's logsumexp within u |lse| (its
        // rounding) + lambda sqrt(V) u (its f32 sum of V exps, relative, so absolute in the
        // log) + u (exp and log), and the subtraction's rounding u |lp|
        double lse = fabs((double)logits[0] - mlx_lp[0]);
        for (int v = 0; v < V; v++) {
            double b = 2 * F32_U * (lse + F32_LAMBDA * sqrt((double)V) + 1 + fabsf(mlx_lp[v]));
            assert_true(fabsf(lp0[v] - mlx_lp[v]) <= b);
        }
        const cJSON *want;
        int n_full = sample_order(lp0, V, -INFINITY, order), k;
        assert_int_equal(n_full, V);
        if ((want = cJSON_GetObjectItem(c, "top_p_kept"))) {
            memcpy(lp, lp0, sizeof(float) * V);
            k = sample_top_p(lp, V, s.top_p, order, V, V);
            sample_keep_prefix(lp, V, order, k);
            assert_kept(lp, V, want, "top-p");
        }
        if ((want = cJSON_GetObjectItem(c, "min_p_kept"))) {
            memcpy(lp, lp0, sizeof(float) * V);
            k = sample_min_p(lp, V, s.min_p, s.min_tokens_to_keep, order, V, V);
            sample_keep_prefix(lp, V, order, k);
            assert_kept(lp, V, want, "min-p");
        }
        if ((want = cJSON_GetObjectItem(c, "top_k_kept"))) {
            memcpy(lp, lp0, sizeof(float) * V);
            k = sample_top_k(V, s.top_k, V, V);
            sample_keep_prefix(lp, V, order, k);
            assert_kept(lp, V, want, "top-k");
        }
        // the chain on a partial sort (the tokens within D of the top): it decides the same
        // prefix as the full sort, or says it cannot (-1)
        int full = chain_prefix(&s, lp0, V, order, V);
        for (float D = 0.25f; D <= 32; D *= 2) {
            int *part = xmalloc(sizeof(int) * V);
            int n_sorted = sample_order(lp0, V, lp0[order[0]] - D, part);
            int got = chain_prefix(&s, lp0, V, part, n_sorted);
            if (got >= 0) {
                assert_int_equal(got, full);
                if (got < V)  // (all V kept: no filter, and no order needed)
                    assert_memory_equal(part, order, sizeof(int) * (size_t)got);
                n_partial++;
            } else n_undecided++;
            free(part);
        }
        sample_distribution(&s, logits, V, dist, lp, order);
        assert_kept(lp, V, cJSON_GetObjectItem(c, "kept"), "the chain");
        double xmax = 0;
        for (int v = 0; v < V; v++)
            if (isfinite(lp[v])) xmax = fmax(xmax, fabs(lp[v] / s.temp));
        double rel = lens_softmax_rel(V, xmax) + 4 * F32_U * xmax, total = 0;
        int v = 0;
        for (const cJSON *x = cJSON_GetObjectItem(c, "probs")->child; x; x = x->next, v++) {
            double p = x->valuedouble, b = p * expm1(2 * rel) + 0x1p-126;
            if (p == 0) assert_true(dist[v] == 0);
            double r = fabs(dist[v] - p) / b;
            worst_ratio = fmax(worst_ratio, r);
            assert_true(r <= 1.0);
            total += dist[v];
        }
        assert_true(fabs(total - 1) < 1e-12);
        free(logits), free(mlx_lp);
        n_cases++;
    }
    printf("  %d cases: kept sets equal to mlx-lm's; distributions within bound (worst |dp| / "
           "bound %.3f); partial sorts: %d decided as the full sort, %d undecided\n", n_cases,
           worst_ratio, n_partial, n_undecided);
    assert_true(n_partial > 0 && n_undecided > 0);
    free(lp), free(lp0), free(order), free(dist);
    cJSON_Delete(j);
}

// Actual draws: sampler_next on each case's logits N times never picks a removed token, and
// each token's count is within 5 binomial sigmas (sqrt(N p (1 - p))) of N p, plus 1 for the
// count's granularity: a false failure has odds below 6e-7 per token (and the seeded stream
// is fixed, so it either always passes or never). The same seed gives the same draws.
static void test_sampling_frequencies(void **state) {
    (void)state;
    cJSON *j = load_json_fixture(SAMPLING "/mlx_sampling.json");
    const int V = cJSON_GetObjectItem(j, "V")->valueint, N = 50000;
    int *count = xmalloc(sizeof(int) * V);
    float *probs = xmalloc(sizeof(float) * V);
    const cJSON *c;
    double worst = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        int n;
        float *logits = json_floats(cJSON_GetObjectItem(c, "logits"), &n);
        SamplerConfig cfg = case_config(c);
        Sampler s, s2;
        Error err = {{0}};
        assert_int_equal(sampler_init(&s, &cfg, V, 1234, &err), 0);
        assert_int_equal(sampler_init(&s2, &cfg, V, 1234, &err), 0);
        memset(count, 0, sizeof(int) * V);
        for (int i = 0; i < N; i++) {
            float p, sp, p2, sp2;
            int t = sampler_next(&s, logits, probs, &p, &sp);
            if (i < 200) assert_int_equal(sampler_next(&s2, logits, probs, &p2, &sp2), t);
            assert_true(t >= 0 && t < V);
            assert_true(sp > 0);
            count[t]++;
        }
        int v = 0;
        for (const cJSON *x = cJSON_GetObjectItem(c, "probs")->child; x; x = x->next, v++) {
            double p = x->valuedouble, sigma = sqrt(N * p * (1 - p));
            if (p == 0) assert_int_equal(count[v], 0);
            double dev = fabs(count[v] - N * p);
            if (sigma > 0) worst = fmax(worst, dev / sigma);
            assert_true(dev <= 5 * sigma + 1);
        }
        sampler_free(&s), sampler_free(&s2);
        free(logits);
    }
    printf("  %d draws a case: the largest deviation from N p is %.2f sigma (bound 5)\n", N, worst);
    // another seed, another stream
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "cases"), 0);
    int n;
    float *logits = json_floats(cJSON_GetObjectItem(c0, "logits"), &n);
    SamplerConfig cfg = case_config(c0);
    Sampler a, b;
    Error err = {{0}};
    sampler_init(&a, &cfg, V, 1, &err), sampler_init(&b, &cfg, V, 2, &err);
    int same = 0;
    for (int i = 0; i < 100; i++) {
        float p, sp;
        same += sampler_next(&a, logits, probs, &p, &sp) == sampler_next(&b, logits, probs, &p, &sp);
    }
    assert_true(same < 100);
    sampler_free(&a), sampler_free(&b);
    free(logits), free(count), free(probs);
    cJSON_Delete(j);
}

// mlx-lm's ValueErrors: top-k at or above the vocabulary, min-p outside [0, 1], a
// min_tokens_to_keep below 1; a negative temperature. Greedy checks nothing (mlx builds no
// filter).
static void test_sampler_bad_values(void **state) {
    (void)state;
    Error err = {{0}};
    SamplerConfig s = SAMPLER_DEFAULTS;
    s.temp = 1, s.top_k = 40;
    assert_int_equal(sampler_check(&s, 40, &err), -1);
    assert_non_null(strstr(err.msg, "--top-k"));
    s.top_k = 39;
    assert_int_equal(sampler_check(&s, 40, &err), 0);
    s.min_p = 1.5;
    assert_int_equal(sampler_check(&s, 40, &err), -1);
    assert_non_null(strstr(err.msg, "--min-p"));
    s.min_p = 0.1, s.min_tokens_to_keep = 0;
    assert_int_equal(sampler_check(&s, 40, &err), -1);
    s.min_tokens_to_keep = 1, s.temp = -1;
    assert_int_equal(sampler_check(&s, 40, &err), -1);
    s = SAMPLER_DEFAULTS;
    s.top_k = 1000;
    assert_int_equal(sampler_check(&s, 40, &err), 0);
}

// Greedy decoding as it was before sampling existed (the loop generate_greedy ran): softmax
// of the last logits, the first largest probability, stop at EOS.
static int old_greedy(const Model *m, const int *ids, int n, int max_new, GenToken *out) {
    const int V = m->cfg.vocab_size;
    ForwardState s;
    assert_int_equal(forward_state_init(&s, m, 1, n, n + max_new, 0), 0);
    float *probs = xmalloc(sizeof(float) * V);
    int n_out = 0, next;
    model_forward(m, &s, ids, 0, NULL, NULL);
    s.T = 1;
    for (int i = 0; i < max_new; i++) {
        m->be->download(probs, s.logits, sizeof(float) * (size_t)V);
        BACKEND_CPU.softmax_forward(probs, probs, 1, V);
        next = 0;
        for (int v = 1; v < V; v++)
            if (probs[v] > probs[next]) next = v;
        if (model_is_eos(m, next)) break;
        out[n_out++] = (GenToken){next, probs[next], 1.0f};
        if (i + 1 < max_new) model_forward(m, &s, &next, 0, NULL, NULL);
    }
    free(probs);
    forward_state_free(&s);
    return n_out;
}

// temp 0 is the old greedy decoding bit for bit (ids and probabilities), and transformers'
// greedy ids (tests/fixtures/tiny/reference.json).
static void test_greedy_unchanged(void **state) {
    (void)state;
    cJSON *ref = load_json_fixture(TINY "/reference.json");
    Model m = load_ok(TINY, NULL);
    const cJSON *c;
    int n_prompts = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "prompts")) {
        int n_ids, n_want, n_out, n_old, n_def;
        int *ids = json_ints(cJSON_GetObjectItem(c, "ids"), &n_ids);
        int *want = json_ints(cJSON_GetObjectItem(c, "greedy"), &n_want);
        GenToken out[12], old[12], def[12];
        Error err = {{0}};
        GenerateOptions o = GENERATE_DEFAULTS;
        o.seed = 99;  // unused when greedy
        assert_int_equal(generate_run(&m, ids, n_ids, 12, &o, out, &n_out, NULL, NULL, &err), 0);
        assert_int_equal(generate_greedy(&m, ids, n_ids, 12, def, &n_def, NULL, NULL, &err), 0);
        n_old = old_greedy(&m, ids, n_ids, 12, old);
        assert_int_equal(n_out, n_want);
        assert_int_equal(n_out, n_old);
        assert_int_equal(n_out, n_def);
        for (int i = 0; i < n_out; i++) {
            assert_int_equal(out[i].id, want[i]);
            assert_memory_equal(&out[i], &old[i], sizeof(GenToken));
            assert_memory_equal(&out[i], &def[i], sizeof(GenToken));
        }
        free(ids), free(want);
        n_prompts++;
    }
    printf("  %d prompts: temp 0 = the earlier greedy loop bit for bit = transformers' ids\n",
           n_prompts);
    model_free(&m);
    cJSON_Delete(ref);
}

// Sampling through the whole model: a seed gives the same tokens again; each token's
// sample_prob is at most 1 and its prob is the model's softmax (equal to greedy's for the
// first token, whose logits are the same).
static void test_sampled_generation(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    int ids[] = {0, 23, 145, 67};
    GenToken a[16], b[16], g[16];
    int na, nb, ng;
    Error err = {{0}};
    GenerateOptions o = GENERATE_DEFAULTS;
    o.sampler.temp = 0.9, o.sampler.top_p = 0.95, o.sampler.top_k = 50, o.seed = 7;
    assert_int_equal(generate_run(&m, ids, 4, 16, &o, a, &na, NULL, NULL, &err), 0);
    assert_int_equal(generate_run(&m, ids, 4, 16, &o, b, &nb, NULL, NULL, &err), 0);
    assert_int_equal(generate_greedy(&m, ids, 4, 16, g, &ng, NULL, NULL, &err), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof(GenToken) * (size_t)na);
    for (int i = 0; i < na; i++) assert_true(a[i].sample_prob > 0 && a[i].sample_prob <= 1);
    if (na && ng && a[0].id == g[0].id) assert_true(a[0].prob == g[0].prob);
    o.sampler.top_k = m.cfg.vocab_size;  // mlx-lm's rule: below the vocabulary
    assert_int_equal(generate_run(&m, ids, 4, 16, &o, a, &na, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "--top-k"));
    model_free(&m);
}

// Steering against the float64 reference: alpha * d/|d| added after block L at every
// position. The first steered token's distribution ends the same chain of sums as the lens's
// last row over the prompt (lens_row_terms(L, T)) plus the vector's rounding and its add (2
// terms), against a float64 reference (sides = 1): each probability within lens_prob_bound.
// The greedy steered continuation (KV cache, the new tokens steered too) is the reference's
// (which re-runs the whole steered sequence each step). alpha 0 is plain generation, bit for
// bit, greedy and sampled.
static void steer_matches_reference(const Backend *be) {
    Model m = load_on(TINY, NULL, be);
    const int L = m.cfg.n_layers, V = m.cfg.vocab_size, C = m.cfg.dim;
    cJSON *j = load_json_fixture(SAMPLING "/steer_ref.json");
    float *logits = xmalloc(sizeof(float) * V), *probs = xmalloc(sizeof(float) * V);
    float *vec = xmalloc(sizeof(float) * C);
    double worst_ratio = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        int n, nd, n_want, n_out, n_plain;
        int *ids = json_ints(cJSON_GetObjectItem(c, "prompt"), &n);
        int *want = json_ints(cJSON_GetObjectItem(c, "greedy"), &n_want);
        float *d = json_floats(cJSON_GetObjectItem(c, "direction"), &nd);
        assert_int_equal(nd, C);
        double alpha = cJSON_GetObjectItem(c, "alpha")->valuedouble;
        int layer = cJSON_GetObjectItem(c, "layer")->valueint;
        Error err = {{0}};
        assert_int_equal(steer_vector(d, C, alpha, vec, &err), 0);
        GenerateOptions o = GENERATE_DEFAULTS;
        o.steer_layer = layer, o.steer_vec = vec, o.first_logits = logits;
        GenToken out[8], plain[8];
        assert_int_equal(generate_run(&m, ids, n, n_want, &o, out, &n_out, NULL, NULL, &err), 0);
        assert_int_equal(n_out, n_want);
        for (int i = 0; i < n_out; i++) assert_int_equal(out[i].id, want[i]);
        BACKEND_CPU.softmax_forward(probs, logits, 1, V);
        double zmax = max_abs_f(logits, (size_t)V);
        double dz = f32_path_rel(lens_row_terms(&m.cfg, L, n, 0, 2)) * zmax;
        double soft = lens_softmax_rel(V, zmax), ratio = 0;
        int v = 0;
        for (const cJSON *x = cJSON_GetObjectItem(c, "first_probs")->child; x; x = x->next, v++) {
            double diff = fabs(x->valuedouble - probs[v]);
            double b = lens_prob_bound(x->valuedouble, dz, soft);
            if (!(diff / b <= ratio)) ratio = isnan(diff) ? INFINITY : diff / b;
        }
        assert_int_equal(v, V);
        printf("  %s steer layer %2d alpha %+.1f: first token's distribution vs float64 worst |dp| / "
               "bound %.3f; greedy continuation %d tokens = the reference's\n", be->name, layer, alpha,
               ratio, n_out);
        assert_true(ratio <= 1.0);
        worst_ratio = fmax(worst_ratio, ratio);
        if (alpha == 0) {
            for (int t = 0; t < 2; t++) {  // greedy, then sampled with one seed
                GenerateOptions p = GENERATE_DEFAULTS;
                if (t) p.sampler.temp = 1.0, p.seed = 5;
                o.sampler = p.sampler, o.seed = p.seed, o.first_logits = NULL;
                assert_int_equal(generate_run(&m, ids, n, 8, &o, out, &n_out, NULL, NULL, &err), 0);
                assert_int_equal(generate_run(&m, ids, n, 8, &p, plain, &n_plain, NULL, NULL, &err), 0);
                assert_int_equal(n_out, n_plain);
                assert_memory_equal(out, plain, sizeof(GenToken) * (size_t)n_out);
            }
        }
        free(ids), free(want), free(d);
    }
    // bad input: a layer out of range, a zero direction
    int ids[] = {0, 5, 9};
    GenToken out[4];
    int n_out;
    Error err = {{0}};
    GenerateOptions o = GENERATE_DEFAULTS;
    o.steer_layer = L, o.steer_vec = vec;
    assert_int_equal(generate_run(&m, ids, 3, 4, &o, out, &n_out, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "does not exist"));
    o.steer_layer = -2;
    assert_int_equal(generate_run(&m, ids, 3, 4, &o, out, &n_out, NULL, NULL, &err), -1);
    memset(vec, 0, sizeof(float) * C);
    assert_int_equal(steer_vector(vec, C, 1.0, vec, &err), -1);
    assert_non_null(strstr(err.msg, "zero"));
    free(logits), free(probs), free(vec);
    cJSON_Delete(j);
    model_free(&m);
}

static void test_steer_matches_reference(void **state) { steer_matches_reference(&BACKEND_CPU); }

// The same on the CUDA backend (its products in exact f32, the default; skipped without a GPU).
static void test_cuda_steer_matches_reference(void **state) {
    const Backend *be = cuda_or_skip();
    if (be) steer_matches_reference(be);
}

// --chat's prompt: SmolLM2-Instruct's ids from transformers' apply_chat_template (chat_smollm2.json:
// with and without a system message, an empty one, non-ASCII text, a special-token string in
// the prompt). Without a template: an error saying so.
static void test_chat_prompt_matches_transformers(void **state) {
    (void)state;
    Error err = {{0}};
    int *ids, n;
    Model tiny = load_ok(TINY, NULL);
    assert_int_equal(generate_chat_prompt(&tiny, NULL, "hi", &ids, &n, &err), -1);
    assert_non_null(strstr(err.msg, "has no chat template"));
    model_free(&tiny);
    cJSON *j = load_json_fixture(SAMPLING "/chat_smollm2.json");
    const char *path = cJSON_GetObjectItem(j, "model")->valuestring;
    if (!have_cached(path)) {
        printf("  skipped: %s is not downloaded (tests/setup.sh)\n", path);
        cJSON_Delete(j);
        return;
    }
    Model m;
    if (model_open(&m, path, &err)) fail_msg("%s", err.msg);
    const cJSON *c;
    int k = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        const cJSON *sys = cJSON_GetObjectItem(c, "system");
        const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        int n_want, *want = json_ints(cJSON_GetObjectItem(c, "ids"), &n_want);
        if (generate_chat_prompt(&m, cJSON_IsString(sys) ? sys->valuestring : NULL, prompt, &ids,
                                 &n, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(n, n_want);
        assert_memory_equal(ids, want, sizeof(int) * (size_t)n);
        free(ids), free(want);
        k++;
    }
    printf("  %d chat prompts: SmolLM2's ids = transformers' apply_chat_template's\n", k);
    model_free(&m);
    cJSON_Delete(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filters_match_mlx),
        cmocka_unit_test(test_sampling_frequencies),
        cmocka_unit_test(test_sampler_bad_values),
        cmocka_unit_test(test_greedy_unchanged),
        cmocka_unit_test(test_sampled_generation),
        cmocka_unit_test(test_steer_matches_reference),
        cmocka_unit_test(test_cuda_steer_matches_reference),
        cmocka_unit_test(test_chat_prompt_matches_transformers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
