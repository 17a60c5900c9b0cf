// weights.c — open a model (HF folder or GGUF), validate every tensor, convert to f32.
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

#include "../formats/json_file.h"
#include "../formats/safetensors.h"
#include "llama.h"

int proj_in_dim(const ModelConfig *c, Proj p) {
    if (p == PROJ_O) return c->n_heads * c->head_dim;
    if (p == PROJ_DOWN) return c->hidden_dim;
    return c->dim;
}

int proj_out_dim(const ModelConfig *c, Proj p) {
    switch (p) {
    case PROJ_Q: return c->n_heads * c->head_dim;
    case PROJ_K:
    case PROJ_V: return c->n_kv_heads * c->head_dim;
    case PROJ_GATE:
    case PROJ_UP: return c->hidden_dim;
    default: return c->dim;
    }
}

// Where each named tensor goes and what shape it must have. The arena is allocated only once
// every shape has been checked (a hostile config cannot make us allocate for tensors that are
// not there): until then a binding knows its offset and the model field to point at it.
typedef struct {
    TensorName name;
    float **dst;   // the model field that gets arena + off
    size_t off;
    int ndim;
    int64_t shape[2];
    int unpermute_heads;  // GGUF q/k rows: interleaved rotary pairs -> HF rotate-half
} Binding;

// GGUF (llama.cpp) stores q/k rows of each head as interleaved pairs (2j, 2j+1); HF keeps
// them as halves (j, j + D/2). w (n_heads*D, in) is rewritten in place to the HF order.
static void unpermute_rotary_rows(float *w, int n_heads, int D, int64_t in) {
    float *tmp = xmalloc(sizeof(float) * (size_t)D * (size_t)in);
    int half = D / 2;
    for (int h = 0; h < n_heads; h++) {
        float *head = w + (int64_t)h * D * in;
        for (int j = 0; j < half; j++)
            for (int s = 0; s < 2; s++)
                memcpy(tmp + (int64_t)(s * half + j) * in, head + (int64_t)(2 * j + s) * in,
                       sizeof(float) * (size_t)in);
        memcpy(head, tmp, sizeof(float) * (size_t)D * (size_t)in);
    }
    free(tmp);
}

// The tensor a binding names, with its shape checked against the config.
static const TensorView *check_binding(const TensorSet *ts, const Binding *b, Error *err) {
    const TensorView *t = tensorset_find(ts, b->name.s);
    if (!t) {
        err_set(err, "missing tensor '%s'", b->name.s);
        return NULL;
    }
    int same = t->ndim == b->ndim;
    for (int d = 0; same && d < b->ndim; d++) same = t->shape[d] == b->shape[d];
    if (!same) {
        char got[96] = "", want[96] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "",
                     (long long)t->shape[d]);
        for (int d = 0; d < b->ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "",
                     (long long)b->shape[d]);
        err_set(err, "%s: tensor '%s' has shape (%s) but the config implies (%s)", t->file,
                b->name.s, got, want);
        return NULL;
    }
    if (!dtype_is_float(t->dtype)) {
        err_set(err, "%s: tensor '%s' has dtype %s; weights must be floating point or quantized",
                t->file, b->name.s, dtype_name(t->dtype));
        return NULL;
    }
    return t;
}

static int convert_binding(const TensorSet *ts, const Binding *b, const ModelConfig *c, Error *err) {
    const TensorView *t = check_binding(ts, b, err);
    if (!t) return -1;
    if (tensor_to_f32(t, *b->dst, err) || tensor_check_finite(t, *b->dst, tensor_numel(t), err))
        return -1;
    if (b->unpermute_heads)
        unpermute_rotary_rows(*b->dst, b->unpermute_heads, c->head_dim, b->shape[1]);
    return 0;
}

// Appends a binding at offset *off of the arena and advances *off past it.
static void add_binding(Binding *list, int *n, const char *name, float **dst, size_t *off,
                        int64_t d0, int64_t d1, int unpermute) {
    Binding *b = &list[(*n)++];
    snprintf(b->name.s, sizeof b->name.s, "%s", name);
    b->dst = dst;
    b->off = *off;
    *off += (size_t)(d0 * (d1 ? d1 : 1));
    b->ndim = d1 ? 2 : 1;
    b->shape[0] = d0;
    b->shape[1] = d1;
    b->unpermute_heads = unpermute;
}

// List the tensors that fill the f32 arena, at their offsets (the arena comes later).
static Binding *plan_bindings(Model *m, int gguf, int has_head, int *n_out) {
    const ModelConfig *c = &m->cfg;
    int64_t C = c->dim, V = c->vocab_size;
    m->blocks = xcalloc((size_t)c->n_layers, sizeof(Block));
    Binding *list = xcalloc((size_t)(3 + c->n_layers * (2 + N_PROJ)), sizeof(Binding));
    int n = 0;
    size_t off = 0;
    WeightNames st = gguf ? NAMES_GGUF : NAMES_HF;
    add_binding(list, &n, tn_model(st, TN_EMBED), &m->tok_embd, &off, V, C, 0);
    add_binding(list, &n, tn_model(st, TN_FINAL_NORM), &m->final_norm, &off, C, 0, 0);
    if (has_head)  // (with tie_word_embeddings and a head anyway: untie on load)
        add_binding(list, &n, tn_model(st, TN_HEAD), &m->head, &off, V, C, 0);
    for (int l = 0; l < c->n_layers; l++) {
        Block *b = &m->blocks[l];
        add_binding(list, &n, tn_block(st, l, TN_ATTN_NORM).s, &b->attn_norm, &off, C, 0, 0);
        add_binding(list, &n, tn_block(st, l, TN_FFN_NORM).s, &b->ffn_norm, &off, C, 0, 0);
    }
    // the linear weights last, block by block: those of the frozen blocks below some block are
    // then one range, which model_to_backend_prepared leaves out of the device's arena
    for (int l = 0; l < c->n_layers; l++) {
        Block *b = &m->blocks[l];
        for (int j = 0; j < N_PROJ; j++) {
            int64_t out = proj_out_dim(c, j), in = proj_in_dim(c, j);
            int unpermute = !gguf ? 0 : j == PROJ_Q ? c->n_heads : j == PROJ_K ? c->n_kv_heads : 0;
            add_binding(list, &n, tn_block(st, l, j).s, &b->w[j], &off, out, in, unpermute);
        }
    }
    m->arena_floats = off;
    *n_out = n;
    return list;
}

// Llama has no bias terms; a file that holds one is of another architecture, whose biases would
// be silently dropped.
static int refuse_biases(const TensorSet *ts, Error *err) {
    for (int i = 0; i < ts->n; i++)
        if (tn_is_bias(ts->tensors[i].name))
            return err_set(err, "%s: tensor '%s': bias terms are not supported (Llama without "
                           "biases only; support comes with other architectures later)",
                           ts->tensors[i].file, ts->tensors[i].name);
    return 0;
}

// Check every tensor now; the f32 conversion waits for model_materialize.
static int bind_all(Model *m, const TensorSet *ts, int gguf, const char *source, Error *err) {
    if (refuse_biases(ts, err)) return -1;
    int has_head = tensorset_find(ts, tn_model(gguf ? NAMES_GGUF : NAMES_HF, TN_HEAD)) != NULL;
    if (!has_head && !m->cfg.tie_embeddings) {
        if (gguf) {
            m->cfg.tie_embeddings = 1;
        } else {
            return err_set(err, "%s: tie_word_embeddings is false but there is no lm_head.weight",
                           source);
        }
    }
    int n;
    Binding *list = plan_bindings(m, gguf, has_head, &n);
    for (int i = 0; i < n; i++) {
        if (!check_binding(ts, &list[i], err)) {
            free(list);
            return err_wrap(err, "%s", source);
        }
    }
    // Every binding matched a tensor of its shape: the arena is no bigger than the files' data
    // (times the f32 expansion of their dtypes). More than the machine's memory is refused here,
    // not by the OOM killer halfway through the conversion (with overcommit the malloc succeeds).
    struct sysinfo si;
    double need = (double)m->arena_floats * sizeof(float);
    if (sysinfo(&si) == 0) {
        double have = ((double)si.totalram + (double)si.totalswap) * si.mem_unit;
        if (need > have) {
            free(list);
            return err_set(err, "%s: the weights need %.1f GB as f32 but this machine has %.1f GB "
                           "of memory (RAM + swap)", source, need / 1e9, have / 1e9);
        }
    }
    m->arena = malloc(sizeof(float) * m->arena_floats);
    if (!m->arena) {
        free(list);
        return err_set(err, "%s: not enough memory for %zu MB of f32 weights", source,
                       m->arena_floats * sizeof(float) >> 20);
    }
    for (int i = 0; i < n; i++) *list[i].dst = m->arena + list[i].off;
    if (!has_head) m->head = m->tok_embd;
    m->pending = list;
    m->n_pending = n;
    return 0;
}

int model_materialize(Model *m, Error *err) {
    const TensorSet *ts = m->is_gguf ? &m->gguf.tensors : &m->tensors;
    Binding *list = m->pending;
    // Bindings are independent; tensor_to_f32 parallelizes inside each one.
    for (int i = 0; i < m->n_pending; i++)
        if (convert_binding(ts, &list[i], &m->cfg, err)) return err_wrap(err, "%s", m->path);
    free(list);
    m->pending = NULL;
    m->n_pending = 0;
    if (m->is_gguf) gguf_close(&m->gguf);
    else tensorset_free(&m->tensors);
    m->is_open_only = 0;
    return 0;
}

static void copy_name(Model *m, const char *path) {
    char *dup = xstrdup(path);
    size_t len = strlen(dup);
    while (len > 1 && dup[len - 1] == '/') dup[--len] = 0;
    snprintf(m->name, sizeof m->name, "%s", basename(dup));
    free(dup);
}

static void finish_config(Model *m) {
    m->inv_freq = xmalloc(sizeof(float) * (size_t)(m->cfg.head_dim / 2));
    config_rope_inv_freq(&m->cfg, m->inv_freq);
    // EOS: the config's ids plus the tokenizer's
    int ids[8];
    int n = tokenizer_eos_ids(m->tok, ids, 8);
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < m->cfg.n_eos; j++) seen |= m->cfg.eos_ids[j] == ids[i];
        if (!seen && m->cfg.n_eos < 8) m->cfg.eos_ids[m->cfg.n_eos++] = ids[i];
    }
    if (m->cfg.bos_id < 0) m->cfg.bos_id = tokenizer_bos_id(m->tok);
}

// A tokenizer may know a few more tokens than the embedding has rows (Llama 3.2's tokenizer.json
// is shared with the vision model's <|image|>); ids past the embedding are refused at encode.
// Far more tokens than rows means the tokenizer belongs to another model.
static int check_tokenizer(Model *m, const char *source, Error *err) {
    int tv = tokenizer_vocab_size(m->tok);
    if (tv > m->cfg.vocab_size + 256)
        return err_set(err, "%s: the tokenizer has %d tokens but the model's embedding only %d rows "
                       "(a tokenizer of another model?)", source, tv, m->cfg.vocab_size);
    return 0;
}

static int load_gguf(Model *m, const char *path, Error *err) {
    GGUFFile *gp = &m->gguf;  // stays open until model_materialize
    if (gguf_open(gp, path, err)) return -1;
    m->is_gguf = 1;
    int rc = -1;
    if (config_from_gguf(&m->cfg, gp, err)) {
        err_wrap(err, "%s", path);
        goto done;
    }
    if (tokenizer_load_gguf(&m->tok, gp, err)) {
        err_wrap(err, "%s", path);
        goto done;
    }
    if (check_tokenizer(m, path, err) || bind_all(m, &gp->tensors, 1, path, err)) goto done;
    finish_config(m);
    // Llama 3.1+ GGUFs carry llama3 rope scaling as per-frequency divisors.
    const TensorView *rf = tensorset_find(&gp->tensors, "rope_freqs.weight");
    if (rf) {
        int half = m->cfg.head_dim / 2;
        if (tensor_numel(rf) != half) {
            err_set(err, "%s: rope_freqs.weight has %lld values, expected %d", path,
                    (long long)tensor_numel(rf), half);
            goto done;
        }
        float *f = xmalloc(sizeof(float) * (size_t)half);
        if (tensor_to_f32(rf, f, err)) {
            free(f);
            goto done;
        }
        for (int i = 0; i < half; i++) m->inv_freq[i] /= f[i];
        free(f);
    }
    // describe the file by the type that holds most of its values
    int64_t per_type[DT_COUNT] = {0};
    for (int i = 0; i < gp->tensors.n; i++)
        per_type[gp->tensors.tensors[i].dtype] += tensor_numel(&gp->tensors.tensors[i]);
    int main_type = 0;
    for (int t = 1; t < DT_COUNT; t++)
        if (per_type[t] > per_type[main_type]) main_type = t;
    m->stored_dtype = (DType)main_type;
    snprintf(m->weight_dtype, sizeof m->weight_dtype, "GGUF %s",
             dtype_name(main_type));
    rc = 0;
done:
    return rc;
}

// config.json, then tokenizer.json (+ tokenizer_config.json when there is one).
static int load_hf_config_and_tokenizer(Model *m, const char *dir, Error *err) {
    char *cfg = path_join(dir, "config.json"), *tok = path_join(dir, "tokenizer.json"),
         *tok_cfg = path_join(dir, "tokenizer_config.json");
    int rc = -1;
    if (!file_exists(cfg))
        err_set(err, "%s: not a model folder (no config.json) and not a .gguf file", dir);
    else if (config_from_hf_json(&m->cfg, cfg, err) == 0) {
        if (!file_exists(tok))
            err_set(err, "%s: missing tokenizer.json", dir);
        else
            rc = tokenizer_load_json(&m->tok, tok, file_exists(tok_cfg) ? tok_cfg : NULL, err);
    }
    free(cfg), free(tok), free(tok_cfg);
    return rc;
}

// model.safetensors.index.json (sharded) or model.safetensors, mapped into ts.
static int load_hf_tensors(TensorSet *ts, const char *dir, Error *err) {
    char *index = path_join(dir, "model.safetensors.index.json"),
         *single = path_join(dir, "model.safetensors");
    int rc;
    if (file_exists(index))
        rc = safetensors_load_index(ts, index, err);
    else if (file_exists(single))
        rc = safetensors_load(ts, single, err);
    else
        rc = err_set(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
    free(index), free(single);
    return rc;
}

static int load_hf_folder(Model *m, const char *dir, Error *err) {
    if (load_hf_config_and_tokenizer(m, dir, err) || check_tokenizer(m, dir, err) ||
        load_hf_tensors(&m->tensors, dir, err) || bind_all(m, &m->tensors, 0, dir, err))
        return -1;
    const TensorView *emb = tensorset_find(&m->tensors, tn_model(NAMES_HF, TN_EMBED));
    m->stored_dtype = emb ? emb->dtype : DT_COUNT;
    snprintf(m->weight_dtype, sizeof m->weight_dtype, "%s",
             emb ? dtype_name(emb->dtype) : "?");
    finish_config(m);
    return 0;
}

int model_open(Model *m, const char *path, Error *err) {
    memset(m, 0, sizeof *m);
    m->be = &BACKEND_CPU;
    m->is_open_only = 1;
    m->path = xstrdup(path);
    copy_name(m, path);
    int rc;
    if (dir_exists(path)) {
        rc = load_hf_folder(m, path, err);
    } else if (file_exists(path)) {
        rc = load_gguf(m, path, err);
    } else {
        rc = err_set(err, "%s: no such model file or folder", path);
    }
    if (rc) model_free(m);
    return rc;
}

int model_load(Model *m, const char *path, Error *err) {
    if (model_open(m, path, err)) return -1;
    if (model_materialize(m, err)) {
        model_free(m);
        return -1;
    }
    return 0;
}

void model_free(Model *m) {
    model_drop_bf16(m);
    free(m->pending);
    if (m->is_open_only) {
        if (m->is_gguf) gguf_close(&m->gguf);
        else tensorset_free(&m->tensors);
    }
    if (m->tok) tokenizer_free(m->tok);
    if (m->be) m->be->free(m->arena), m->be->free(m->adapter_arena);
    for (int i = 0; i < m->n_own_bufs; i++) m->be->free(m->own_bufs[i]);
    free(m->own_bufs);
    free(m->blocks);
    free(m->inv_freq);
    free(m->path);
    memset(m, 0, sizeof *m);
}

// Ranges of an arena, [lo, hi) in floats, ascending and disjoint, that a move leaves behind.
typedef struct {
    size_t lo, hi;
} Span;

// p, a pointer into [from, from + n), to its offset in to with the skipped ranges before it
// taken out (NULL, pointers elsewhere and those inside a skipped range unchanged)
static void rebase(float **p, const float *from, size_t n, float *to, const Span *skip,
                   int n_skip) {
    if (!*p || *p < from || *p >= from + n) return;
    size_t off = (size_t)(*p - from), shift = 0;
    for (int i = 0; i < n_skip; i++) {
        if (off >= skip[i].hi) shift += skip[i].hi - skip[i].lo;
        else if (off >= skip[i].lo) return;
    }
    *p = to + (off - shift);
}

// The arena *arena (n floats, of m->be) to backend be but for the skipped ranges, and every
// pointer into it. The old arena is freed, or handed to *old (its skipped ranges still read
// there: the caller frees it with m->be's free).
static int move_arena(Model *m, const Backend *be, float **arena, size_t n, const Span *skip,
                      int n_skip, float **old, Error *err) {
    if (!*arena) return 0;
    size_t kept = n;
    for (int i = 0; i < n_skip; i++) kept -= skip[i].hi - skip[i].lo;
    float *moved = be->alloc(sizeof(float) * (kept ? kept : 1));
    if (!moved)
        return err_set(err, "%s: not enough %s memory for %.2f GB of f32 weights", m->path,
                       be->device, (double)kept * sizeof(float) / 1e9);
    const float *from = *arena;
    for (size_t at = 0, to = 0, i = 0; at < n; i++) {  // the pieces between the skipped ranges
        const size_t end = i < (size_t)n_skip ? skip[i].lo : n;
        be->upload(moved + to, from + at, sizeof(float) * (end - at));
        to += end - at;
        at = i < (size_t)n_skip ? skip[i].hi : n;
    }
    rebase(&m->tok_embd, from, n, moved, skip, n_skip);
    rebase(&m->final_norm, from, n, moved, skip, n_skip);
    rebase(&m->head, from, n, moved, skip, n_skip);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        Block *b = &m->blocks[l];
        rebase(&b->attn_norm, from, n, moved, skip, n_skip);
        rebase(&b->ffn_norm, from, n, moved, skip, n_skip);
        for (int p = 0; p < N_PROJ; p++) {
            rebase(&b->w[p], from, n, moved, skip, n_skip);
            rebase(&b->lora[p].A, from, n, moved, skip, n_skip);
            rebase(&b->lora[p].B, from, n, moved, skip, n_skip);
            rebase(&b->lora[p].m, from, n, moved, skip, n_skip);
            rebase(&b->lora[p].norm, from, n, moved, skip, n_skip);
        }
    }
    if (old) *old = *arena;
    else m->be->free(*arena);
    *arena = moved;
    return 0;
}

static int movable(const Model *m, const Backend *be, Error *err) {
    if (model_has_linears(m))
        return err_set(err, "weights prepared by the %s backend cannot move to %s", m->be->name,
                       be->name);
    if (model_has_dora(m) && !be->dora_forward)  // (DoRA's ops: ops/cpu/dora.c)
        return err_set(err, "DoRA: the %s backend has no DoRA ops (use --device cpu)", be->name);
    return 0;
}

static void drop_adapter(Model *m);

// The adapter's arena after the base weights' (on be now): on failure the adapter is dropped
// (host memory still) and m is be's, without it.
static int move_adapter(Model *m, const Backend *be, Error *err) {
    int rc = move_arena(m, be, &m->adapter_arena, m->adapter_floats, NULL, 0, NULL, err);
    if (rc) drop_adapter(m);
    m->be = be;
    return rc;
}

int model_to_backend(Model *m, const Backend *be, Error *err) {
    if (be == m->be) return 0;
    if (movable(m, be, err) || move_arena(m, be, &m->arena, m->arena_floats, NULL, 0, NULL, err) ||
        move_adapter(m, be, err))
        return -1;
    be->sync();
    return 0;
}

// Whether every value of x is a bf16 value (its low 16 bits zero): a table whose bf16 copy is
// exactly it (a bf16 model's embedding), which only that copy may then hold.
static int bf16_exact(const float *x, size_t n) {
    uint32_t low = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        low |= u & 0xffffu;
    }
    return low == 0;
}

// The frozen blocks' linear weights (below plan->frozen_below) as one range of the arena
// (plan_bindings puts the linear weights last, block by block), and the tied embedding table
// when only its handle will be read and a bf16 handle is exactly it (head_rows_only, a backend
// that reads a handle's rows, bf16 values): what model_to_backend_prepared leaves on the host.
// Returns how many ranges (0: the arena is not laid out so, everything moves).
static int planned_skips(const Model *m, const Backend *be, const LinearPlan *plan, Span *skip) {
    const ModelConfig *c = &m->cfg;
    const float *a = m->arena;
    const size_t n = m->arena_floats;
    const int frozen = plan->frozen_below < c->n_layers ? plan->frozen_below : c->n_layers;
    if (frozen <= 0 || !a) return 0;
    size_t lo = (size_t)(m->blocks[0].w[0] - a), hi, sum = 0;
    hi = frozen < c->n_layers ? (size_t)(m->blocks[frozen].w[0] - a) : n;
    for (int l = 0; l < frozen; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const float *w = m->blocks[l].w[p];
            if (!w || w < a + lo || w >= a + hi) return 0;
            sum += (size_t)proj_out_dim(c, p) * (size_t)proj_in_dim(c, p);
        }
    if (lo > hi || hi > n || sum != hi - lo) return 0;  // something else between them
    int k = 0;
    const size_t VC = (size_t)c->vocab_size * (size_t)c->dim;
    if (plan->head_rows_only && be->linear_rows && plan->dtype == DTYPE_BF16 &&
        m->head == m->tok_embd && m->tok_embd == a && VC <= lo && bf16_exact(a, VC))
        skip[k++] = (Span){0, VC};
    skip[k++] = (Span){lo, hi};
    return k;
}

int model_to_backend_prepared(Model *m, const Backend *be, const LinearPlan *plan, Error *err) {
    Span skip[2];
    const int n_skip = be == m->be ? 0 : planned_skips(m, be, plan, skip);
    if (n_skip == 0)
        return model_to_backend(m, be, err) ||
                       model_prepare_linears(m, plan->dtype, plan->first_backward,
                                             plan->frozen_below, err)
                   ? -1
                   : 0;
    float *host = NULL;
    const float *host_end = m->arena + m->arena_floats;
    if (movable(m, be, err) || move_arena(m, be, &m->arena, m->arena_floats, skip, n_skip, &host, err))
        return -1;
    // the skipped weights go up one at a time, each released for its handle (on failure the
    // pointers still into the host arena are cleared: the adapter's move too may fail first)
    int rc = move_adapter(m, be, err) || model_prepare_planned(m, plan, host, host_end, err);
    if (rc) {
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int p = 0; p < N_PROJ; p++) {
                float **w = &m->blocks[l].w[p];
                if (*w >= host && *w < host_end) *w = NULL;
            }
        if (m->head >= host && m->head < host_end) m->head = NULL;
        if (m->tok_embd >= host && m->tok_embd < host_end) m->tok_embd = NULL;
    }
    BACKEND_CPU.free(host);
    be->sync();
    return rc ? -1 : 0;
}

// The adapter's arena (a buffer of m->be) and the blocks' pointers into it.
static void drop_adapter(Model *m) {
    if (m->be) m->be->free(m->adapter_arena);
    m->adapter_arena = NULL;
    m->adapter_floats = 0;
    for (int l = 0; m->blocks && l < m->cfg.n_layers; l++)
        memset(m->blocks[l].lora, 0, sizeof m->blocks[l].lora);
}

void model_detach_adapter(Model *m) {
    drop_adapter(m);
    // the handles give the adapter's room back: the products are the base model's again, from
    // the weights as prepared (out of memory, the room stays: unused, harmless for a forward)
    Error ignored;
    if (m->be && model_has_linears(m)) model_reserve_lora(m, &ignored);
}

int model_adapter_to_backend(Model *m, Error *err) {
    const Backend *be = m->be;
    m->be = &BACKEND_CPU;  // the arena's owner until it moves
    return move_adapter(m, be, err);
}

int model_attach_lora(Model *m, const char *dir, Error *err) {
    if (m->adapter_arena) return err_set(err, "%s: the model has an adapter already", dir);
    // LoRA only: a full fine-tune writes the (device) weights, DoRA's norms read released ones
    char *cfg_path = path_join(dir, "adapter_config.json");
    cJSON *cfg = file_exists(cfg_path) ? json_read_object(cfg_path, err) : NULL;
    const cJSON *t = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "fine_tune_type") : NULL;
    int lora = cJSON_IsString(t) && !strcmp(t->valuestring, "lora");
    cJSON_Delete(cfg);
    free(cfg_path);
    if (!lora) return err_set(err, "%s: not an mlx-lm LoRA adapter (fine_tune_type \"lora\")", dir);
    const Backend *be = m->be;
    m->be = &BACKEND_CPU;  // the adapter's arena is read on the host, then moved
    int rc = model_load_adapter(m, dir, err);
    if (rc) drop_adapter(m);  // (host memory still)
    m->be = be;
    if (rc || model_adapter_to_backend(m, err)) return -1;
    if (model_has_dora(m)) {
        model_detach_adapter(m);
        return err_set(err, "%s: a DoRA adapter cannot be attached to a loaded model", dir);
    }
    return 0;
}

// model_load + the adapter, then the move (infer NULL: model_to_backend, else prepared for
// inference in *infer on the way); on failure nothing stays allocated
static int load_and_move(Model *m, const char *path, const char *adapter, const Backend *be,
                         const ComputeDtype *infer, Error *err) {
    if (model_load(m, path, err)) return -1;
    const int L = m->cfg.n_layers;
    const LinearPlan plan = {infer ? model_inference_dtype_on(m, be, *infer) : DTYPE_F32, L, L, 0};
    if ((adapter && model_load_adapter(m, adapter, err)) ||
        (infer ? model_to_backend_prepared(m, be, &plan, err) : model_to_backend(m, be, err))) {
        model_free(m);
        return -1;
    }
    return 0;
}

int model_load_on(Model *m, const char *path, const char *adapter, const Backend *be,
                  Error *err) {
    return load_and_move(m, path, adapter, be, NULL, err);
}

int model_load_for_inference(Model *m, const char *path, const char *adapter, const Backend *be,
                             ComputeDtype want, Error *err) {
    return load_and_move(m, path, adapter, be, &want, err);
}

int model_check_ids(const Model *m, const int *ids, int n, Error *err) {
    for (int i = 0; i < n; i++) {
        if (ids[i] >= 0 && ids[i] < m->cfg.vocab_size) continue;
        const char *piece = tokenizer_piece(m->tok, ids[i]);
        return err_set(err, "%s%s: token %d of the input is id %d ('%s'), outside the model's "
                       "%d-row embedding (the tokenizer has %d tokens: another model's?)", m->path,
                       m->is_gguf ? "" : "/tokenizer.json", i, ids[i], piece ? piece : "?",
                       m->cfg.vocab_size, tokenizer_vocab_size(m->tok));
    }
    return 0;
}
