// evaluate.c — what the experiment measures on one model variant (base, LoRA or full):
// accuracy, the lens averaged over every test problem of each operation, and the seed's prompts.
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

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

// Per-token facts the analysis needs, from each token's decoded text.
typedef struct {
    unsigned char *digit_start;  // (V) text begins with a digit: continues a number
    unsigned char *not_word;     // (V) no letter, or a digit, or special: cannot name a task
} VocabFacts;

// Unicode classes come from PCRE2 (\p{L} letters, \p{N} numerals), as the pre-tokenizer's do.
static int has_class(pcre2_code *re, pcre2_match_data *md, const char *s) {
    return pcre2_match(re, (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL) >= 0;
}

static void vocab_facts(const Model *m, VocabFacts *f) {
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

static cJSON *token_json(const Model *m, int id, double prob) {
    cJSON *o = cJSON_CreateObject();
    char *s = tokenizer_decode(m->tok, &id, 1, 0);
    cJSON_AddStringToObject(o, "token", s);
    cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddNumberToObject(o, "prob", prob);
    free(s);
    return o;
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
static cJSON *seven_prompts(const Model *m, Error *err) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < sizeof SEVEN / sizeof SEVEN[0]; i++) {
        GreedyAnswer g;
        char *full;
        if (greedy_answer(m, SEVEN[i].prompt, &g, &full, err)) {
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "prompt", SEVEN[i].prompt);
        cJSON_AddNumberToObject(o, "correct", SEVEN[i].answer);
        cJSON_AddStringToObject(o, "output", full);
        cJSON_AddStringToObject(o, "answer", g.answer);
        cJSON_AddNumberToObject(o, "prob", g.prob);
        cJSON_AddBoolToObject(o, "is_correct", g.answer[0] && atol(g.answer) == SEVEN[i].answer);
        cJSON_AddItemToArray(arr, o);
        free(full);
    }
    return arr;
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
    if (!rc && forward_state_init(&s, m, B, T, T, 1))  // 1: room for every row's logits
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

static cJSON *exact_match(const Model *m, const VocabFacts *vf, const Problem *probs,
                          const int *sel, int n_sel, ProgressFn progress, void *pctx, Error *err) {
    int *ok = xmalloc(sizeof(int) * (size_t)n_sel);
    double *pc = xmalloc(sizeof(double) * (size_t)n_sel);
    if (forced_match(m, vf, probs, sel, n_sel, ok, pc, progress, pctx, err)) {
        free(ok), free(pc);
        return NULL;
    }
    int correct[N_OPS] = {0}, count[N_OPS] = {0};
    double p_sum[N_OPS] = {0};
    for (int i = 0; i < n_sel; i++) {
        int op = probs[sel[i]].op;
        correct[op] += ok[i], count[op]++, p_sum[op] += pc[i];
    }
    free(ok), free(pc);
    cJSON *o = cJSON_CreateObject();
    int all_c = 0, all_n = 0;
    for (int op = 0; op < N_OPS; op++) {
        cJSON *x = cJSON_AddObjectToObject(o, EXP_OP_NAMES[op]);
        cJSON_AddNumberToObject(x, "n", count[op]);
        cJSON_AddNumberToObject(x, "correct", correct[op]);
        cJSON_AddNumberToObject(x, "accuracy", count[op] ? (double)correct[op] / count[op] : 0);
        cJSON_AddNumberToObject(x, "mean_p_correct", count[op] ? p_sum[op] / count[op] : 0);
        all_c += correct[op], all_n += count[op];
    }
    cJSON *x = cJSON_AddObjectToObject(o, "all");
    cJSON_AddNumberToObject(x, "n", all_n);
    cJSON_AddNumberToObject(x, "correct", all_c);
    cJSON_AddNumberToObject(x, "accuracy", all_n ? (double)all_c / all_n : 0);
    return o;
}

int evaluate_exact_match(const Model *m, const Problem *probs, int n, int *ok, double *p_correct,
                         Error *err) {
    VocabFacts vf;
    vocab_facts(m, &vf);
    int *sel = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) sel[i] = i;
    int rc = forced_match(m, &vf, probs, sel, n, ok, p_correct, NULL, NULL, err);
    free(sel), free(vf.digit_start), free(vf.not_word);
    return rc;
}

// ---- the lens averaged per operation
// mean (N_OPS, L, V): mean lens probability of each token at each layer over the operation's
// problems. Per problem it also records whether the answer's first token is top-1, and its
// probability, at each layer.
typedef struct {
    float *mean;
    double *top1, *p_answer;  // (N_OPS, L)
    int n[N_OPS], known[N_OPS], n_skipped;  // known: problems whose answer token is known
} LensStats;

// The last prompt position's residual after each block, for a batch of prompts right-padded
// to T (causal attention: the padding after a prompt cannot change it): rows (B, L, C), a
// buffer of the model's backend.
typedef struct {
    const Backend *be;
    float *rows;
    const int *last;  // (B) each prompt's last position
    int T, L;
} LastRows;

static void keep_last_rows(void *ctx, int layer, const float *resid, int n, int C) {
    const LastRows *h = ctx;
    if (layer < 0) return;  // the embeddings are not unembedded
    for (int b = 0; b < n / h->T; b++)
        h->be->copy(h->rows + ((size_t)b * h->L + layer) * C,
                    resid + ((size_t)b * h->T + h->last[b]) * C, sizeof(float) * C);
}

// CHUNK prompts a forward pass; the lens of all their layers is one GEMM, and the per-operation
// sums stay on the backend: only argmaxes and the answer's probabilities come back per chunk.
static int lens_stats(const Model *m, const Problem *probs, const int *sel, int n_sel,
                      LensStats *st, ProgressFn progress, void *pctx, Error *err) {
    const Backend *be = m->be;
    const int L = m->cfg.n_layers, C = m->cfg.dim, V = m->cfg.vocab_size;
    st->mean = xcalloc((size_t)N_OPS * L * V, sizeof(float));
    st->top1 = xcalloc((size_t)N_OPS * L, sizeof(double));
    st->p_answer = xcalloc((size_t)N_OPS * L, sizeof(double));
    int **ids = xcalloc((size_t)n_sel, sizeof(int *)), *len = xcalloc((size_t)n_sel, sizeof(int));
    int *target = xcalloc((size_t)n_sel, sizeof(int)), T = 1, rc = 0;
    for (int i = 0; i < n_sel && !rc; i++) {
        const Problem *q = &probs[sel[i]];
        char *ptext = problem_text(q, 0, " "), *atext = problem_text(q, 1, "");
        int *ai = NULL, na;
        rc = encode(m, ptext, &ids[i], &len[i], err) || encode(m, atext, &ai, &na, err);
        if (!rc) target[i] = is_prefix(ids[i], len[i], ai, na) && na > len[i] ? ai[len[i]] : -1;
        if (!rc && len[i] > T) T = len[i];
        free(ai), free(ptext), free(atext);
    }
    ForwardState s;
    int have_state = 0;
    if (!rc && forward_state_init(&s, m, CHUNK, T, T, ACTS_NONE))
        rc = err_set(err, "out of %s memory for a %d x %d lens batch", be->device, CHUNK, T);
    else have_state = !rc;
    const size_t rows_c = (size_t)CHUNK * L * C, rows_v = (size_t)CHUNK * L * V;
    float *buf = rc ? NULL : backend_xalloc(be, sizeof(float) * (2 * rows_c + rows_v + (size_t)N_OPS * L * V + CHUNK * L));
    float *rows = buf, *xn = rows ? rows + rows_c : NULL, *p = xn ? xn + rows_c : NULL;
    float *mean = p ? p + rows_v : NULL;
    int *top_dev = mean ? (int *)(mean + (size_t)N_OPS * L * V) : NULL;
    int *tokens = xcalloc((size_t)CHUNK * T, sizeof(int)), last[CHUNK];
    int *top_host = xmalloc(sizeof(int) * CHUNK * (size_t)L);
    for (int start = 0; start < n_sel && !rc; start += CHUNK) {
        int k = n_sel - start < CHUNK ? n_sel - start : CHUNK, Tc = 1;
        for (int r = 0; r < k; r++) Tc = len[start + r] > Tc ? len[start + r] : Tc;
        for (int r = 0; r < CHUNK; r++) {  // rows past the end repeat the chunk's first prompt
            int i = start + (r < k ? r : 0);
            memset(tokens + (size_t)r * Tc, 0, sizeof(int) * Tc);
            memcpy(tokens + (size_t)r * Tc, ids[i], sizeof(int) * len[i]);
            last[r] = len[i] - 1;
        }
        s.T = Tc, s.pos = 0;
        LastRows h = {be, rows, last, Tc, L};
        model_forward(m, &s, tokens, 0, keep_last_rows, &h);
        lens_unembed_on(m, rows, k * L, p, xn);
        be->argmax_forward(top_dev, p, k * L, V);
        be->download(top_host, top_dev, sizeof(int) * (size_t)k * L);
        for (int r = 0; r < k; r++) {
            int op = probs[sel[start + r]].op, t = target[start + r];
            st->n[op]++;
            if (t < 0) st->n_skipped++;
            else st->known[op]++;
            for (int l = 0; l < L; l++) {
                const float *row = p + ((size_t)r * L + l) * V;
                be->add_inplace(mean + ((size_t)op * L + l) * V, row, V);
                if (t >= 0) {
                    float pt;
                    be->download(&pt, row + t, sizeof pt);
                    st->top1[op * L + l] += top_host[r * L + l] == t;
                    st->p_answer[op * L + l] += pt;
                }
            }
        }
        if (progress) progress(pctx, "lens", start + k, n_sel);
    }
    if (!rc) be->download(st->mean, mean, sizeof(float) * (size_t)N_OPS * L * V);
    free(top_host);
    if (buf) be->free(buf);
    if (have_state) forward_state_free(&s);
    free(tokens);
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

static cJSON *number_array(const double *x, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(x[i]));
    return a;
}

// Classifier signal of operation o at layer l: the probability mass its problems put on word
// tokens (with a letter, no digit, not special) beyond what any other operation's problems put there, sum_t max(0, p_o(t) - max_o' p_o'(t)).
// It is 0 when the lens cannot tell the operations apart. How it is spread over tokens: the
// top token's share of it, and the effective number of tokens exp(entropy of the shares).
static cJSON *classifiers(const Model *m, const VocabFacts *vf, const LensStats *st) {
    const int L = m->cfg.n_layers, V = m->cfg.vocab_size;
    cJSON *ops = cJSON_CreateArray();
    double *signal = xmalloc(sizeof(double) * L), *share = xmalloc(sizeof(double) * L),
           *eff = xmalloc(sizeof(double) * L);
    float *sel = xmalloc(sizeof(float) * V);
    for (int o = 0; o < N_OPS; o++) {
        cJSON *x = cJSON_CreateObject(), *tokens = cJSON_CreateArray();
        cJSON_AddStringToObject(x, "op", EXP_OP_NAMES[o]);
        // the peak is searched in the middle: not layer 0, not the last three (the answer's)
        int lo = L > 5 ? 1 : 0, hi = L > 5 ? L - 3 : L, peak = lo;
        for (int l = 0; l < L; l++) {
            const float *mine = st->mean + ((size_t)o * L + l) * V;
            double total = 0, top = 0, h = 0;
            TokenProb best[TOP_K];
            for (int k = 0; k < TOP_K; k++) best[k] = (TokenProb){-1, 0};
            for (int t = 0; t < V; t++) {  // sel[t]: mine beyond the most any other op gives
                float other = 0;
                for (int o2 = 0; o2 < N_OPS; o2++)
                    if (o2 != o && st->n[o2]) {
                        float v = st->mean[((size_t)o2 * L + l) * V + t];
                        other = v > other ? v : other;
                    }
                float d = vf->not_word[t] ? 0 : mine[t] - other;
                sel[t] = d > 0 ? d : 0;
                if (sel[t] == 0) continue;
                total += d;
                if (d > top) top = d;
                if (d > best[TOP_K - 1].prob) {  // keep the TOP_K most selective tokens
                    int j = TOP_K - 1;
                    while (j > 0 && best[j - 1].prob < d) best[j] = best[j - 1], j--;
                    best[j] = (TokenProb){t, d};
                }
            }
            for (int t = 0; t < V && total > 0; t++)
                if (sel[t] > 0) h -= sel[t] / total * log(sel[t] / total);
            signal[l] = total;
            share[l] = total > 0 ? top / total : 0;
            eff[l] = total > 0 ? exp(h) : 0;
            if (l >= lo && l < hi && signal[l] > signal[peak]) peak = l;
            cJSON *lt = cJSON_CreateArray();
            for (int k = 0; k < TOP_K && best[k].id >= 0; k++) {
                cJSON *tj = token_json(m, best[k].id, mine[best[k].id]);
                cJSON_AddNumberToObject(tj, "selective", best[k].prob);
                cJSON_AddItemToArray(lt, tj);
            }
            cJSON_AddItemToArray(tokens, lt);
        }
        cJSON_AddItemToObject(x, "signal", number_array(signal, L));
        cJSON_AddItemToObject(x, "top1_share", number_array(share, L));
        cJSON_AddItemToObject(x, "effective_tokens", number_array(eff, L));
        cJSON_AddNumberToObject(x, "peak_search_first", lo);
        cJSON_AddNumberToObject(x, "peak_search_last", hi - 1);
        cJSON_AddNumberToObject(x, "peak_layer", peak);
        cJSON_AddNumberToObject(x, "peak_signal", signal[peak]);
        cJSON_AddNumberToObject(x, "peak_depth", (double)peak / L);
        cJSON_AddNumberToObject(x, "peak_top1_share", share[peak]);
        cJSON_AddNumberToObject(x, "peak_effective_tokens", eff[peak]);
        cJSON_AddItemToObject(x, "tokens", tokens);
        cJSON_AddItemToArray(ops, x);
    }
    free(signal), free(share), free(eff), free(sel);
    return ops;
}

// Per operation: the first layer where the answer's first token is top-1 for most problems, and
// the first where its mean probability passes 50%.
static cJSON *crystallization(const Model *m, const LensStats *st) {
    const int L = m->cfg.n_layers;
    cJSON *ops = cJSON_CreateArray();
    for (int o = 0; o < N_OPS; o++) {
        const double *top1 = st->top1 + o * L, *pa = st->p_answer + o * L;
        int first_top1 = -1, first_50 = -1;
        for (int l = 0; l < L; l++) {
            if (first_top1 < 0 && top1[l] > 0.5) first_top1 = l;
            if (first_50 < 0 && pa[l] > 0.5) first_50 = l;
        }
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "op", EXP_OP_NAMES[o]);
        cJSON_AddNumberToObject(x, "n", st->known[o]);
        cJSON_AddNumberToObject(x, "first_top1_layer", first_top1);
        cJSON_AddNumberToObject(x, "first_over_50_layer", first_50);
        cJSON_AddItemToObject(x, "top1_rate", number_array(top1, L));
        cJSON_AddItemToObject(x, "mean_prob", number_array(pa, L));
        cJSON_AddItemToArray(ops, x);
    }
    return ops;
}

// ---- the seed's two lens prompts, layer by layer, with the final answer's trajectory
static cJSON *lens_prompts(const Model *m, Error *err) {
    const int L = m->cfg.n_layers, V = m->cfg.vocab_size;
    cJSON *arr = cJSON_CreateArray();
    float *p = xmalloc(sizeof(float) * (size_t)(L + 1) * V);
    for (size_t i = 0; i < sizeof LENS_PROMPTS / sizeof LENS_PROMPTS[0]; i++) {
        int *ids, n;
        if (encode(m, LENS_PROMPTS[i], &ids, &n, err) || lens_layer_probs(m, ids, n, p, err)) {
            free(p);
            cJSON_Delete(arr);
            return NULL;
        }
        free(ids);
        TokenProb final;
        top_k_probs(p + (size_t)L * V, V, 1, &final);
        cJSON *o = cJSON_CreateObject(), *layers = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "prompt", LENS_PROMPTS[i]);
        cJSON_AddItemToObject(o, "final", token_json(m, final.id, final.prob));
        for (int l = 0; l < L; l++) {
            const float *row = p + (size_t)(l + 1) * V;
            TokenProb top[TOP_K];
            top_k_probs(row, V, TOP_K, top);
            cJSON *x = cJSON_CreateObject(), *tj = cJSON_CreateArray();
            cJSON_AddNumberToObject(x, "layer", l);
            for (int k = 0; k < TOP_K; k++) cJSON_AddItemToArray(tj, token_json(m, top[k].id, top[k].prob));
            cJSON_AddItemToObject(x, "top", tj);
            cJSON_AddNumberToObject(x, "final_prob", row[final.id]);
            cJSON_AddNumberToObject(x, "entropy", entropy_nats(row, V));
            cJSON_AddItemToArray(layers, x);
        }
        cJSON_AddItemToObject(o, "layers", layers);
        cJSON_AddItemToArray(arr, o);
    }
    free(p);
    return arr;
}

cJSON *evaluate_variant(const Model *m, const Problem *probs, int n_probs, int per_op,
                        ProgressFn progress, void *pctx, Error *err) {
    double t = now_seconds();
    cJSON *out = cJSON_CreateObject(), *x, *timing = cJSON_CreateObject();
#define LAP(name) (cJSON_AddNumberToObject(timing, name, now_seconds() - t), t = now_seconds())
    VocabFacts vf;
    vocab_facts(m, &vf);
    LAP("vocabulary");
    int *sel = xmalloc(sizeof(int) * (size_t)n_probs), n_sel = 0, taken[N_OPS] = {0};
    for (int i = 0; i < n_probs; i++)
        if (per_op <= 0 || taken[probs[i].op] < per_op) sel[n_sel++] = i, taken[probs[i].op]++;
    LensStats st = {0};
    int ok = 0;
    if (progress) progress(pctx, "seed prompts", 0, 1);
    if (!(x = seven_prompts(m, err))) goto done;
    cJSON_AddItemToObject(out, "seven_prompts", x);
    if (!(x = lens_prompts(m, err))) goto done;
    cJSON_AddItemToObject(out, "lens_prompts", x);
    LAP("seed_prompts");
    if (!(x = exact_match(m, &vf, probs, sel, n_sel, progress, pctx, err))) goto done;
    cJSON_AddItemToObject(out, "test_accuracy", x);
    LAP("exact_match");
    if (lens_stats(m, probs, sel, n_sel, &st, progress, pctx, err)) goto done;
    LAP("lens");
    cJSON_AddNumberToObject(out, "n_layers", m->cfg.n_layers);
    cJSON_AddNumberToObject(out, "lens_problems", n_sel);
    cJSON_AddNumberToObject(out, "lens_answer_unknown", st.n_skipped);
    cJSON_AddItemToObject(out, "classifier", classifiers(m, &vf, &st));
    cJSON_AddItemToObject(out, "crystallization", crystallization(m, &st));
    LAP("analysis");
    cJSON_AddItemToObject(out, "timing_seconds", timing);
    timing = NULL;
    ok = 1;
#undef LAP
done:
    cJSON_Delete(timing);
    free(st.mean), free(st.top1), free(st.p_answer);
    free(sel), free(vf.digit_start), free(vf.not_word);
    if (!ok) cJSON_Delete(out);
    return ok ? out : NULL;
}
