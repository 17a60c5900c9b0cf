// evaluate.c — what the experiment measures on one model variant (base, LoRA or full):
// accuracy, the lens averaged over every test problem of each operation, and the seed's prompts.
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "../analysis/hook.h"
#include "../lens/lens.h"
#include "../model/generate.h"
#include "../ops/ops.h"
#include "experiment.h"

const char EXP_OPS[N_OPS + 1] = "+-*";
const char *const EXP_OP_NAMES[N_OPS] = {"addition", "subtraction", "multiplication"};

// The seed's accuracy prompts (its table writes multiplication with 'x') and lens prompts.
static const struct { const char *prompt; long answer; } SEVEN[] = {
    {"7 x 8 =", 56}, {"12 x 5 =", 60}, {"45 x 45 =", 2025}, {"23 + 45 =", 68},
    {"17 + 38 =", 55}, {"89 - 34 =", 55}, {"65 - 28 =", 37},
};
static const char *const LENS_PROMPTS[] = {"89 - 34 = ", "7 * 8 = "};
#define TOP_K 5
#define CHUNK 8  // problems whose lens rows are unembedded in one GEMM

int problems_load(const char *path, Problem **out, int *n, Error *err) {
    char *text;
    size_t len;
    if (read_file(path, &text, &len, err)) return -1;
    int cap = 1024, count = 0, line_no = 0;
    Problem *p = xmalloc(sizeof(Problem) * cap);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        line_no++;
        if (!*line) continue;
        cJSON *j = cJSON_Parse(line);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        Problem q;
        char op, tail;
        if (!cJSON_IsString(t) ||
            sscanf(t->valuestring, "%d %c %d = %ld%c", &q.a, &op, &q.b, &q.answer, &tail) != 4 ||
            !strchr(EXP_OPS, op)) {
            cJSON_Delete(j);
            free(text);
            free(p);
            return err_set(err, "%s:%d: expected {\"text\": \"a op b = c\"} with op one of + - *",
                           path, line_no);
        }
        cJSON_Delete(j);
        q.op = (int)(strchr(EXP_OPS, op) - EXP_OPS);
        if (count == cap) p = xrealloc(p, sizeof(Problem) * (cap *= 2));
        p[count++] = q;
    }
    free(text);
    if (!count) {
        free(p);
        return err_set(err, "%s: no problems", path);
    }
    *out = p;
    *n = count;
    return 0;
}

// Unicode classes come from PCRE2 (\p{L} letters, \p{N} numerals), as the pre-tokenizer's do.
static int has_class(pcre2_code *re, pcre2_match_data *md, const char *s) {
    return pcre2_match(re, (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL) >= 0;
}

void vocab_facts(const Model *m, VocabFacts *f) {
    int V = m->cfg.vocab_size, code;
    PCRE2_SIZE off;
    pcre2_code *letter = pcre2_compile((PCRE2_SPTR) "\\p{L}", PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_NO_UTF_CHECK, &code, &off, NULL);
    pcre2_code *numeral = pcre2_compile((PCRE2_SPTR) "\\p{N}", PCRE2_ZERO_TERMINATED,
                                        PCRE2_UTF | PCRE2_NO_UTF_CHECK, &code, &off, NULL);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    f->digit_start = xcalloc((size_t)V, 1);
    f->not_word = xcalloc((size_t)V, 1);
    for (int id = 0; id < V; id++) {
        char *s = tokenizer_decode(m->tok, &id, 1, 0);  // valid UTF-8 (U+FFFD for stray bytes)
        f->digit_start[id] = isdigit((unsigned char)s[0]) != 0;
        f->not_word[id] = !has_class(letter, md, s) || has_class(numeral, md, s) ||
                          tokenizer_is_special(m->tok, id);
        free(s);
    }
    pcre2_match_data_free(md);
    pcre2_code_free(letter);
    pcre2_code_free(numeral);
}

void vocab_facts_free(VocabFacts *f) {
    free(f->digit_start), free(f->not_word);
    f->digit_start = f->not_word = NULL;
}

static char *problem_text(const Problem *p, int with_answer, const char *tail) {
    char buf[96];
    if (with_answer) snprintf(buf, sizeof buf, "%d %c %d = %ld", p->a, EXP_OPS[p->op], p->b, p->answer);
    else snprintf(buf, sizeof buf, "%d %c %d =%s", p->a, EXP_OPS[p->op], p->b, tail);
    return xstrdup(buf);
}

static int encode(const Model *m, const char *text, int **ids, int *n, Error *err) {
    if (tokenizer_encode(m->tok, text, strlen(text), 1, ids, n, err)) return -1;
    return model_check_ids(m, *ids, *n, err);
}

static int is_prefix(const int *a, int na, const int *b, int nb) {
    return na <= nb && !memcmp(a, b, sizeof(int) * (size_t)na);
}

static void token_score(const Model *m, int id, double prob, double selective, TokenScore *t) {
    t->token = tokenizer_decode(m->tok, &id, 1, 0);
    t->id = id;
    t->prob = prob;
    t->selective = selective;
}

// ---- greedy answers: the number the output starts with (after spaces), whether it is complete
// (something else, or the end of the text, follows it), and its probability: the product over
// the tokens that spell it. output (may be NULL) gets the decoded continuation.
typedef struct {
    char answer[64];
    int complete;
    double prob;
} GreedyAnswer;

static int greedy_answer(const Model *m, const char *prompt, GreedyAnswer *g, char **output,
                         Error *err) {
    enum { MAX_NEW = 8 };
    int *ids, n, n_out, gen[MAX_NEW];
    GenToken out[MAX_NEW];
    if (encode(m, prompt, &ids, &n, err)) return -1;
    int rc = generate_greedy(m, ids, n, MAX_NEW, out, &n_out, NULL, NULL, err);
    free(ids);
    if (rc) return -1;
    memset(g, 0, sizeof *g);
    g->prob = 1;
    int n_ans = 0;
    for (int k = 0; k < n_out; k++) gen[k] = out[k].id;
    for (int k = 1; k <= n_out; k++) {
        char *text = tokenizer_decode(m->tok, gen, k, 0), *c = text;
        while (*c == ' ') c++;
        size_t d = strspn(c, "0123456789");
        if ((int)d > n_ans || (d == 0 && !*c)) g->prob *= out[k - 1].prob;
        if (d > 0 && d < sizeof g->answer) memcpy(g->answer, c, d), g->answer[d] = 0, n_ans = (int)d;
        int done = (d > 0 && c[d]) || (d == 0 && *c);
        free(text);
        if (done) {
            g->complete = d > 0;
            break;
        }
    }
    if (n_ans && n_out < MAX_NEW) g->complete = 1;  // the model stopped (EOS) after the number
    if (!n_ans) g->prob = 0;
    if (output) *output = tokenizer_decode(m->tok, gen, n_out, 0);
    return 0;
}


// ---- the seed's seven prompts: greedy answer and its probability
static int seven_prompts(const Model *m, EvalResult *e, Error *err) {
    for (size_t i = 0; i < sizeof SEVEN / sizeof SEVEN[0]; i++) {
        GreedyAnswer g;
        char *full;
        if (greedy_answer(m, SEVEN[i].prompt, &g, &full, err)) return -1;
        SeedAnswer *s = &e->seven[e->n_seven++];
        s->prompt = xstrdup(SEVEN[i].prompt);
        s->correct = SEVEN[i].answer;
        s->output = full;
        snprintf(s->answer, sizeof s->answer, "%s", g.answer);
        s->prob = g.prob;
        s->is_correct = g.answer[0] && atol(g.answer) == SEVEN[i].answer;
    }
    return 0;
}

// ---- exact match on the test problems, by teacher forcing: greedy decoding of "a op b ="
// yields the answer's own tokens iff each is the argmax after the ones before it, and the
// number then ends iff the next argmax does not begin with a digit.
typedef struct {
    int *full, n_full, n_prompt;  // "a op b = c" ids; the prompt "a op b =" is its first n_prompt
} Forced;

// ok[i] / p_correct[i]: problem sel[i] solved, and the probability of its answer's tokens.
static int forced_match(const Model *m, const VocabFacts *vf, const Problem *probs,
                        const int *sel, int n_sel, int *ok_out, double *p_out,
                        ProgressFn progress, void *pctx, Error *err) {
    const int V = m->cfg.vocab_size;
    Forced *f = xcalloc((size_t)n_sel, sizeof(Forced));
    int T = 1, rc = 0;
    for (int i = 0; i < n_sel && !rc; i++) {
        char *a = problem_text(&probs[sel[i]], 1, ""), *q = problem_text(&probs[sel[i]], 0, "");
        int *qi = NULL, nq;
        rc = encode(m, a, &f[i].full, &f[i].n_full, err) || encode(m, q, &qi, &nq, err);
        // a tokenizer that merges across "= c" has no teacher-forcing split: decode greedily
        if (!rc && !is_prefix(qi, nq, f[i].full, f[i].n_full)) {
            GreedyAnswer g;
            rc = greedy_answer(m, q, &g, NULL, err);
            ok_out[i] = !rc && g.complete && atol(g.answer) == probs[sel[i]].answer;
            p_out[i] = ok_out[i] ? g.prob : 0;
            f[i].n_full = 0;  // not in the batches below
        }
        if (!rc) f[i].n_prompt = nq;
        if (f[i].n_full > T) T = f[i].n_full;
        free(qi), free(a), free(q);
    }
    // per batch, on the backend: each row's argmax, and -log p(next answer token) on the rows
    // that predict one (cross-entropy with the other rows ignored); only those come back
    const int B = 16, BT = B * T;
    const Backend *be = m->be;
    ForwardState s;
    int have_state = 0;
    if (!rc && forward_state_init_rows(&s, m, B, T, T, ACTS_NONE, BT))  // every row's logits
        rc = err_set(err, "out of memory for a %d x %d evaluation batch", B, T);
    else have_state = !rc;
    float *nll_dev = have_state ? backend_xalloc(be, sizeof(float) * (size_t)BT) : NULL;
    int *top_dev = have_state ? backend_xalloc(be, sizeof(int) * (size_t)BT) : NULL;
    int *tokens = xcalloc((size_t)BT, sizeof(int)), *want = xmalloc(sizeof(int) * (size_t)BT);
    int *top = xmalloc(sizeof(int) * (size_t)BT);
    float *nll = xmalloc(sizeof(float) * (size_t)BT);
    for (int start = 0; start < n_sel && !rc; start += B) {
        for (int i = 0; i < BT; i++) want[i] = -1;
        for (int r = 0; r < B; r++) {  // rows past the end repeat the first problem
            const Forced *x = &f[start + r < n_sel ? start + r : start];
            memset(tokens + (size_t)r * T, 0, sizeof(int) * T);
            memcpy(tokens + (size_t)r * T, x->full, sizeof(int) * x->n_full);
            if (start + r < n_sel)
                for (int j = x->n_prompt - 1; j < x->n_full - 1; j++) want[r * T + j] = x->full[j + 1];
        }
        s.pos = 0;
        model_forward(m, &s, tokens, 1, NULL, NULL);
        be->argmax_forward(top_dev, s.logits, BT, V);
        be->upload(s.targets, want, sizeof(int) * (size_t)BT);
        be->cross_entropy_forward(nll_dev, s.logits, s.targets, BT, V);
        be->download(top, top_dev, sizeof(int) * (size_t)BT);
        be->download(nll, nll_dev, sizeof(float) * (size_t)BT);
        for (int r = 0; r < B && start + r < n_sel; r++) {
            const Forced *x = &f[start + r];
            if (!x->n_full) continue;  // judged by greedy decoding above
            int ok = 1;
            double logp = 0;
            for (int j = x->n_prompt - 1; j < x->n_full - 1; j++) {
                ok &= top[r * T + j] == x->full[j + 1];
                logp -= nll[r * T + j];
            }
            ok &= !vf->digit_start[top[r * T + x->n_full - 1]];
            ok_out[start + r] = ok;
            p_out[start + r] = exp(logp);
        }
        if (progress) progress(pctx, "exact match", start + B < n_sel ? start + B : n_sel, n_sel);
    }
    if (have_state) {
        be->free(nll_dev), be->free(top_dev);
        forward_state_free(&s);
    }
    free(tokens), free(want), free(top), free(nll);
    for (int i = 0; i < n_sel; i++) free(f[i].full);
    free(f);
    return rc;
}

// ok (n_sel) out: each problem's exact match, which the causal tests reuse.
static int exact_match(const Model *m, const VocabFacts *vf, const Problem *probs, const int *sel,
                       int n_sel, ProgressFn progress, void *pctx, EvalResult *e, int *ok,
                       Error *err) {
    double *pc = xmalloc(sizeof(double) * (size_t)n_sel);
    if (forced_match(m, vf, probs, sel, n_sel, ok, pc, progress, pctx, err)) {
        free(pc);
        return -1;
    }
    int correct[N_OPS] = {0}, count[N_OPS] = {0};
    double p_sum[N_OPS] = {0};
    for (int i = 0; i < n_sel; i++) {
        int op = probs[sel[i]].op;
        correct[op] += ok[i], count[op]++, p_sum[op] += pc[i];
    }
    free(pc);
    int all_c = 0, all_n = 0;
    for (int op = 0; op < N_OPS; op++) {
        e->acc[op] = (OpAccuracy){count[op], correct[op],
                                  count[op] ? (double)correct[op] / count[op] : 0,
                                  count[op] ? p_sum[op] / count[op] : 0};
        all_c += correct[op], all_n += count[op];
    }
    e->acc[N_OPS] = (OpAccuracy){all_n, all_c, all_n ? (double)all_c / all_n : 0, NAN};
    return 0;
}

int evaluate_exact_match(const Model *m, const Problem *probs, int n, int *ok, double *p_correct,
                         Error *err) {
    VocabFacts vf;
    vocab_facts(m, &vf);
    int *sel = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) sel[i] = i;
    int rc = forced_match(m, &vf, probs, sel, n, ok, p_correct, NULL, NULL, err);
    free(sel);
    vocab_facts_free(&vf);
    return rc;
}

// ---- the lens over the test problems: residuals from the shared hooked path
int problem_prompts(const Model *m, const Problem *probs, const int *sel, int n, int **ids,
                    int *len, int *target, Error *err) {
    int rc = 0;
    for (int i = 0; i < n; i++) ids[i] = NULL;
    for (int i = 0; i < n && !rc; i++) {
        const Problem *q = &probs[sel ? sel[i] : i];
        char *ptext = problem_text(q, 0, " "), *atext = problem_text(q, 1, "");
        int *ai = NULL, na;
        rc = encode(m, ptext, &ids[i], &len[i], err) || (target && encode(m, atext, &ai, &na, err));
        if (!rc && target) target[i] = is_prefix(ids[i], len[i], ai, na) && na > len[i] ? ai[len[i]] : -1;
        free(ai), free(ptext), free(atext);
    }
    if (rc)
        for (int i = 0; i < n; i++) free(ids[i]), ids[i] = NULL;
    return rc ? -1 : 0;
}

int problem_residuals(const Model *m, const Problem *probs, const int *sel, int n, float *rows,
                      Error *err) {
    // A short last chunk is padded with its first prompt, so that every pass is a batch of
    // CHUNK: a matrix product's bits can depend on its row count, and the experiment's numbers
    // stay those of every earlier version (tests/test_experiment.c compares them).
    const int n_pad = (n + CHUNK - 1) / CHUNK * CHUNK, R = m->cfg.n_layers + 1, C = m->cfg.dim;
    int **ids = xcalloc((size_t)n_pad, sizeof(int *)), *len = xcalloc((size_t)n_pad, sizeof(int));
    int rc = problem_prompts(m, probs, sel, n, ids, len, NULL, err);
    float *extra = n_pad > n ? xmalloc(sizeof(float) * (size_t)n_pad * R * C) : NULL;
    for (int i = n; i < n_pad; i++) ids[i] = ids[n / CHUNK * CHUNK], len[i] = len[n / CHUNK * CHUNK];
    if (!rc) {
        HookBatch hb = {.n = n_pad, .ids = (const int *const *)ids, .len = len, .chunk = CHUNK,
                        .last = extra ? extra : rows};
        rc = hook_run(m, &hb, err);
        if (!rc && extra) memcpy(rows, extra, sizeof(float) * (size_t)n * R * C);
    }
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids), free(len), free(extra);
    return rc;
}

// mean (N_OPS, L, V): mean lens probability of each token at each layer over the operation's
// problems. Per problem it also records whether the answer's first token is top-1, and its
// probability, at each layer.
typedef struct {
    float *mean;
    double *top1, *p_answer;  // (N_OPS, L)
    int n[N_OPS], known[N_OPS], n_skipped;  // known: problems whose answer token is known
} LensStats;

// The residual rows (n_sel, L+1, C) of the problems' prompts come from one hooked pass
// (problem_residuals); CHUNK problems' layers are unembedded in one GEMM, and the per-operation
// sums stay on the backend: only argmaxes and the answer's probabilities come back, in one
// download each per chunk (the probabilities gathered on the backend first).
static int lens_stats(const Model *m, const Problem *probs, const int *sel, int n_sel,
                      const float *resid, LensStats *st, ProgressFn progress, void *pctx,
                      Error *err) {
    const Backend *be = m->be;
    const int L = m->cfg.n_layers, C = m->cfg.dim, V = m->cfg.vocab_size, R = L + 1;
    st->mean = xcalloc((size_t)N_OPS * L * V, sizeof(float));
    st->top1 = xcalloc((size_t)N_OPS * L, sizeof(double));
    st->p_answer = xcalloc((size_t)N_OPS * L, sizeof(double));
    int **ids = xcalloc((size_t)n_sel, sizeof(int *)), *len = xcalloc((size_t)n_sel, sizeof(int));
    int *target = xcalloc((size_t)n_sel, sizeof(int));
    int rc = problem_prompts(m, probs, sel, n_sel, ids, len, target, err);
    const size_t rows_c = (size_t)CHUNK * L * C, rows_v = (size_t)CHUNK * L * V;
    float *buf = rc ? NULL : backend_xalloc(be, sizeof(float) * (2 * rows_c + rows_v + (size_t)N_OPS * L * V + 2 * CHUNK * L));
    float *rows = buf, *xn = rows ? rows + rows_c : NULL, *p = xn ? xn + rows_c : NULL;
    float *mean = p ? p + rows_v : NULL;
    int *top_dev = mean ? (int *)(mean + (size_t)N_OPS * L * V) : NULL;
    float *pt_dev = top_dev ? (float *)(top_dev + CHUNK * L) : NULL;
    int *top_host = xmalloc(sizeof(int) * CHUNK * (size_t)L);
    float *pt_host = xmalloc(sizeof(float) * CHUNK * (size_t)L);
    if (mean) be->upload(mean, st->mean, sizeof(float) * (size_t)N_OPS * L * V);  // zeros
    for (int start = 0; start < n_sel && !rc; start += CHUNK) {
        int k = n_sel - start < CHUNK ? n_sel - start : CHUNK;
        for (int r = 0; r < k; r++)  // the blocks' rows 1..L (the embedding is not unembedded)
            be->upload(rows + (size_t)r * L * C, resid + ((size_t)(start + r) * R + 1) * C,
                       sizeof(float) * (size_t)L * C);
        lens_unembed_on(m, rows, k * L, p, xn);
        be->argmax_forward(top_dev, p, k * L, V);
        for (int r = 0; r < k; r++) {
            int op = probs[sel[start + r]].op, t = target[start + r];
            for (int l = 0; l < L; l++) {
                const float *row = p + ((size_t)r * L + l) * V;
                be->add_inplace(mean + ((size_t)op * L + l) * V, row, V);
                if (t >= 0) be->copy(pt_dev + r * L + l, row + t, sizeof(float));
            }
        }
        be->download(top_host, top_dev, sizeof(int) * (size_t)k * L);
        be->download(pt_host, pt_dev, sizeof(float) * (size_t)k * L);
        for (int r = 0; r < k; r++) {
            int op = probs[sel[start + r]].op, t = target[start + r];
            st->n[op]++;
            if (t < 0) st->n_skipped++;
            else st->known[op]++;
            for (int l = 0; l < L && t >= 0; l++) {
                st->top1[op * L + l] += top_host[r * L + l] == t;
                st->p_answer[op * L + l] += pt_host[r * L + l];
            }
        }
        if (progress) progress(pctx, "lens", start + k, n_sel);
    }
    if (!rc) be->download(st->mean, mean, sizeof(float) * (size_t)N_OPS * L * V);
    free(top_host), free(pt_host);
    if (buf) be->free(buf);
    for (int i = 0; i < n_sel; i++) free(ids[i]);
    free(ids), free(len), free(target);
    if (rc) return -1;
    for (int op = 0; op < N_OPS; op++) {
        if (!st->n[op]) continue;
        for (size_t i = 0; i < (size_t)L * V; i++) st->mean[(size_t)op * L * V + i] /= st->n[op];
        for (int l = 0; l < L && st->known[op]; l++) {
            st->top1[op * L + l] /= st->known[op];
            st->p_answer[op * L + l] /= st->known[op];
        }
    }
    return 0;
}

// Selectivity of operation o's tokens at one layer: sel[t] = max(0, mine[t] - the most any other
// operation gives t) over word tokens; the total, the largest, and the TOP_K most selective.
// means: N_OPS rows of V (one layer), n: problems per operation (an operation without any is
// left out of the comparison).
static double selectivity(const VocabFacts *vf, const float *const means[N_OPS], const int *n,
                          int o, int V, float *sel, double *top, TokenProb best[TOP_K]) {
    double total = 0;
    *top = 0;
    for (int k = 0; k < TOP_K; k++) best[k] = (TokenProb){-1, 0};
    for (int t = 0; t < V; t++) {  // sel[t]: mine beyond the most any other op gives
        float other = 0;
        for (int o2 = 0; o2 < N_OPS; o2++)
            if (o2 != o && n[o2]) {
                float v = means[o2][t];
                other = v > other ? v : other;
            }
        float d = vf->not_word[t] ? 0 : means[o][t] - other;
        sel[t] = d > 0 ? d : 0;
        if (sel[t] == 0) continue;
        total += d;
        if (d > *top) *top = d;
        if (d > best[TOP_K - 1].prob) {  // keep the TOP_K most selective tokens
            int j = TOP_K - 1;
            while (j > 0 && best[j - 1].prob < d) best[j] = best[j - 1], j--;
            best[j] = (TokenProb){t, d};
        }
    }
    return total;
}

// Classifier signal of operation o at layer l: the probability mass its problems put on word
// tokens (with a letter, no digit, not special) beyond what any other operation's problems put
// there, sum_t max(0, p_o(t) - max_o' p_o'(t)). It is 0 when the lens cannot tell the
// operations apart. How it is spread over tokens: the top token's share of it, and the
// effective number of tokens exp(entropy of the shares).
static void classifiers(const Model *m, const VocabFacts *vf, const LensStats *st, EvalResult *e) {
    const int L = m->cfg.n_layers, V = m->cfg.vocab_size;
    float *sel = xmalloc(sizeof(float) * V);
    for (int o = 0; o < N_OPS; o++) {
        OpClassifier *c = &e->cls[o];
        c->L = L;
        c->signal = xmalloc(sizeof(double) * L);
        c->top1_share = xmalloc(sizeof(double) * L);
        c->effective_tokens = xmalloc(sizeof(double) * L);
        c->tokens = xcalloc((size_t)L * EXP_TOP_K, sizeof(TokenScore));
        c->n_tokens = xcalloc((size_t)L, sizeof(int));
        // the peak is searched in the middle: not layer 0, not the last three (the answer's)
        int lo = L > 5 ? 1 : 0, hi = L > 5 ? L - 3 : L, peak = lo;
        for (int l = 0; l < L; l++) {
            const float *means[N_OPS];
            for (int o2 = 0; o2 < N_OPS; o2++) means[o2] = st->mean + ((size_t)o2 * L + l) * V;
            double top, h = 0;
            TokenProb best[TOP_K];
            double total = selectivity(vf, means, st->n, o, V, sel, &top, best);
            for (int t = 0; t < V && total > 0; t++)
                if (sel[t] > 0) h -= sel[t] / total * log(sel[t] / total);
            c->signal[l] = total;
            c->top1_share[l] = total > 0 ? top / total : 0;
            c->effective_tokens[l] = total > 0 ? exp(h) : 0;
            if (l >= lo && l < hi && c->signal[l] > c->signal[peak]) peak = l;
            for (int k = 0; k < TOP_K && best[k].id >= 0; k++)
                token_score(m, best[k].id, means[o][best[k].id], best[k].prob,
                            &c->tokens[(size_t)l * EXP_TOP_K + c->n_tokens[l]++]);
        }
        c->peak_search_first = lo;
        c->peak_search_last = hi - 1;
        c->peak_layer = peak;
        c->peak_signal = c->signal[peak];
        c->peak_depth = (double)peak / L;
        c->peak_top1_share = c->top1_share[peak];
        c->peak_effective_tokens = c->effective_tokens[peak];
    }
    free(sel);
}

int classifier_signal_at(const Model *m, const VocabFacts *vf, const float *rows, const int *y,
                         int n, int layer, double signal[N_OPS], Error *err) {
    const Backend *be = m->be;
    const int L = m->cfg.n_layers, C = m->cfg.dim, V = m->cfg.vocab_size;
    if (layer < 0 || layer >= L) return err_set(err, "layer %d is outside 0..%d", layer, L - 1);
    float *mean = xcalloc((size_t)N_OPS * V, sizeof(float)), *sel = xmalloc(sizeof(float) * V);
    float *x = xmalloc(sizeof(float) * (size_t)CHUNK * C);
    float *buf = backend_xalloc(be, sizeof(float) * ((size_t)CHUNK * (2 * C + V) + (size_t)N_OPS * V));
    float *xd = buf, *xn = buf + (size_t)CHUNK * C, *p = xn + (size_t)CHUNK * C;
    float *md = p + (size_t)CHUNK * V;
    int cnt[N_OPS] = {0};
    be->upload(md, mean, sizeof(float) * (size_t)N_OPS * V);
    for (int start = 0; start < n; start += CHUNK) {
        int k = n - start < CHUNK ? n - start : CHUNK;
        for (int r = 0; r < k; r++)
            memcpy(x + (size_t)r * C, rows + ((size_t)(start + r) * (L + 1) + layer + 1) * C,
                   sizeof(float) * C);
        be->upload(xd, x, sizeof(float) * (size_t)k * C);
        lens_unembed_on(m, xd, k, p, xn);
        for (int r = 0; r < k; r++) {
            be->add_inplace(md + (size_t)y[start + r] * V, p + (size_t)r * V, V);
            cnt[y[start + r]]++;
        }
    }
    be->download(mean, md, sizeof(float) * (size_t)N_OPS * V);
    be->free(buf);
    for (int o = 0; o < N_OPS; o++)
        for (int t = 0; t < V && cnt[o]; t++) mean[(size_t)o * V + t] /= cnt[o];
    const float *means[N_OPS] = {mean, mean + V, mean + 2 * (size_t)V};
    for (int o = 0; o < N_OPS; o++) {
        double top;
        TokenProb best[TOP_K];
        signal[o] = cnt[o] ? selectivity(vf, means, cnt, o, V, sel, &top, best) : NAN;
    }
    free(mean), free(sel), free(x);
    return 0;
}

// Per operation: the first layer where the answer's first token is top-1 for most problems, and
// the first where its mean probability passes 50%.
static void crystallization(const Model *m, const LensStats *st, EvalResult *e) {
    const int L = m->cfg.n_layers;
    for (int o = 0; o < N_OPS; o++) {
        const double *top1 = st->top1 + o * L, *pa = st->p_answer + o * L;
        int first_top1 = -1, first_50 = -1;
        for (int l = 0; l < L; l++) {
            if (first_top1 < 0 && top1[l] > 0.5) first_top1 = l;
            if (first_50 < 0 && pa[l] > 0.5) first_50 = l;
        }
        OpCrystal *c = &e->cry[o];
        *c = (OpCrystal){L, st->known[o], first_top1, first_50, xmalloc(sizeof(double) * L),
                         xmalloc(sizeof(double) * L)};
        memcpy(c->top1_rate, top1, sizeof(double) * L);
        memcpy(c->mean_prob, pa, sizeof(double) * L);
    }
}

// ---- the seed's two lens prompts, layer by layer, with the final answer's trajectory
static int lens_prompts(const Model *m, EvalResult *e, Error *err) {
    const int L = m->cfg.n_layers, V = m->cfg.vocab_size;
    float *p = xmalloc(sizeof(float) * (size_t)(L + 1) * V);
    for (size_t i = 0; i < sizeof LENS_PROMPTS / sizeof LENS_PROMPTS[0]; i++) {
        int *ids, n;
        if (encode(m, LENS_PROMPTS[i], &ids, &n, err) || lens_layer_probs(m, ids, n, p, err)) {
            free(p);
            return -1;
        }
        free(ids);
        TokenProb final;
        top_k_probs(p + (size_t)L * V, V, 1, &final);
        LensTrace *t = &e->lens[e->n_lens++];
        t->prompt = xstrdup(LENS_PROMPTS[i]);
        token_score(m, final.id, final.prob, NAN, &t->final);
        t->layers = xcalloc((size_t)L, sizeof(LensRow));
        t->n_layers = L;
        for (int l = 0; l < L; l++) {
            const float *row = p + (size_t)(l + 1) * V;
            TokenProb top[TOP_K];
            top_k_probs(row, V, TOP_K, top);
            LensRow *r = &t->layers[l];
            r->layer = l;
            for (int k = 0; k < TOP_K; k++) token_score(m, top[k].id, top[k].prob, NAN, &r->top[r->n_top++]);
            r->final_prob = row[final.id];
            r->entropy = entropy_nats(row, V);
        }
    }
    free(p);
    return 0;
}

int evaluate_variant(const Model *m, const Problem *probs, int n_probs, const EvalOptions *opt,
                     ProgressFn progress, void *pctx, EvalResult *e, Error *err) {
    const int L = m->cfg.n_layers, C = m->cfg.dim;
    double t = now_seconds();
    memset(e, 0, sizeof *e);
    e->timing = (EvalTiming){NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    e->seconds = e->load_seconds = NAN;
    e->n_layers = L;
#define LAP(field) (e->timing.field = now_seconds() - t, t = now_seconds())
    VocabFacts vf;
    vocab_facts(m, &vf);
    LAP(vocabulary);
    int *sel = xmalloc(sizeof(int) * (size_t)n_probs), n_sel = 0, taken[N_OPS] = {0};
    for (int i = 0; i < n_probs; i++)
        if (opt->per_op <= 0 || taken[probs[i].op] < opt->per_op)
            sel[n_sel++] = i, taken[probs[i].op]++;
    int *y = xmalloc(sizeof(int) * (size_t)n_sel), *ok = xmalloc(sizeof(int) * (size_t)(n_sel ? n_sel : 1));
    for (int i = 0; i < n_sel; i++) y[i] = probs[sel[i]].op;
    LensStats st = {0};
    float *resid = NULL;
    int rc = -1;
    if (progress) progress(pctx, "seed prompts", 0, 1);
    if (seven_prompts(m, e, err) || lens_prompts(m, e, err)) goto done;
    LAP(seed_prompts);
    if (exact_match(m, &vf, probs, sel, n_sel, progress, pctx, e, ok, err)) goto done;
    LAP(exact_match);
    resid = malloc(sizeof(float) * (size_t)n_sel * (L + 1) * C);
    if (!resid) {
        err_set(err, "out of memory for %d x %d residual rows", n_sel, L + 1);
        goto done;
    }
    if (progress) progress(pctx, "lens", 0, n_sel);
    if (problem_residuals(m, probs, sel, n_sel, resid, err) ||
        lens_stats(m, probs, sel, n_sel, resid, &st, progress, pctx, err))
        goto done;
    LAP(lens);
    e->lens_problems = n_sel;
    e->lens_answer_unknown = st.n_skipped;
    classifiers(m, &vf, &st, e);
    crystallization(m, &st, e);
    LAP(analysis);
    if (opt->probe_stride > 0) {
        if (progress) progress(pctx, "probes", 0, 1);
        if (op_probes(resid, y, n_sel, L, C, opt->probe_stride, opt->seed, &e->probes, err)) goto done;
        LAP(probes);
    }
    if (opt->causal_per_op > 0) {
        if (progress) progress(pctx, "causal tests", 0, 1);
        if (causal_tests(m, probs, sel, n_sel, ok, resid, opt->causal_per_op, opt->seed, e, err))
            goto done;
        LAP(causal);
    }
    rc = 0;
#undef LAP
done:
    free(resid);
    free(st.mean), free(st.top1), free(st.p_answer);
    free(sel), free(y), free(ok);
    vocab_facts_free(&vf);
    if (rc) eval_result_free(e);
    return rc;
}
