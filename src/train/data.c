// data.c — jsonl files to tokenized examples, and mlx-lm style batches over them.
//
// Reference: mlx-lm v0.32, mlx_lm/tuner/datasets.py (TextDataset, CompletionsDataset,
// CacheDataset), mlx_lm/tuner/trainer.py (iterate_batches, default_loss). Same as mlx-lm:
//   - text lines: ids = tokenizer.encode(text) (BOS from the post-processor), then the EOS id
//     appended unless the last id already is that EOS (mlx compares with eos_token_id, the one
//     configured EOS; so do we: the first id tokenizer_eos_ids reports).
//   - truncation to max_seq_len keeps the first max_seq_len ids (the EOS may be cut).
//   - batches: consecutive runs of batch_size in the sorted order, the remainder dropped;
//     fewer examples than batch_size is an error; training passes visit the batches in a
//     fresh random permutation each pass.
//   - with a chat template (chat_template.h, rendered as transformers does), as mlx-lm's
//     ChatDataset and CompletionsDataset: {"messages": [...], "tools"?} lines are
//     apply_chat_template(messages, tools); {"prompt", "completion", "tools"?} lines are the
//     messages [user: prompt, assistant: completion]. No EOS is appended (the template ends
//     the turn). The template also sees enable_thinking = mlx-lm's has_thinking (the
//     vocabulary has a thinking pair), as mlx-lm's TokenizerWrapper passes it. With
//     mask_prompt, prompt_len is mlx-lm's offset: the length of apply_chat_template(messages[:-1],
//     add_generation_prompt = the last message is the assistant's) for messages, of
//     apply_chat_template([user], add_generation_prompt=True) for prompt/completion.
// Where we deliberately differ:
//   - prompt/completion lines when the tokenizer has no chat template (mlx-lm then fails):
//     encode(prompt) (with BOS), then encode(completion) without special tokens, then EOS as
//     for text. prompt_len (used only with mask_prompt) is the number of prompt ids.
//     "messages" lines without a template are an error saying so.
//   - mlx-lm's mask (steps >= offset && steps <= length) also trains the first padding target
//     of every row (an off-by-one upstream). Target j is trained here iff prompt_len <= j < len.
//   - mlx-lm checks only the first line to pick the format and fails with a KeyError or
//     json error elsewhere; we check every line and name the file and line. Blank lines are
//     skipped (python's json.loads fails on them).
//   - mlx-lm warns about long sequences each time a batch holding one is built; we truncate
//     once at load and print one warning per file with the count.
//   - sorting: mlx-lm's key is CacheDataset.itemlen = len(raw json object), i.e. the number of
//     keys, so for uniform data its "sorted" order is the file order. By default we sort by
//     token length (stable), what the upstream code means to do; file_order = 1 reproduces
//     what it does.
//   - shuffling uses splitmix64 (rng.c), not numpy's MT19937, so the order differs from
//     mlx-lm's for the same seed. mlx-lm also shuffles validation batches (evaluate takes the
//     first val_batches of a random permutation, a different subset each time); with
//     shuffle = 0 we give the same batches in sorted order every time.
//   - padding goes to the longest row of the batch (mlx pads to 1 + a multiple of 32 for
//     Metal's sake; padded positions carry no loss either way).
#include "data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "../tokenizer/chat_template.h"
#include "rng.h"

enum { KIND_TEXT = 1, KIND_COMPLETION = 2, KIND_CHAT = 3 };

static const char *kind_name(int kind) {
    return kind == KIND_TEXT ? "{\"text\": ...}"
         : kind == KIND_CHAT ? "{\"messages\": [...]}" : "{\"prompt\": ..., \"completion\": ...}";
}

// A string field of a line's object: 0 ok, -1 with the error set.
static int get_string(const cJSON *obj, const char *key, const char **out, const char *path,
                      int line, Error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return err_set(err, "%s:%d: missing \"%s\"", path, line, key);
    if (!cJSON_IsString(v) || !v->valuestring)
        return err_set(err, "%s:%d: \"%s\" must be a string", path, line, key);
    *out = v->valuestring;
    return 0;
}

// Which format a line is: completions win when both are present, as in mlx-lm's create_dataset.
static int line_kind(const cJSON *obj, const char *path, int line, Error *err) {
    if (cJSON_HasObjectItem(obj, "prompt") || cJSON_HasObjectItem(obj, "completion")) {
        if (!cJSON_HasObjectItem(obj, "prompt"))
            return err_set(err, "%s:%d: \"completion\" without \"prompt\"", path, line);
        if (!cJSON_HasObjectItem(obj, "completion"))
            return err_set(err, "%s:%d: \"prompt\" without \"completion\"", path, line);
        return KIND_COMPLETION;
    }
    if (cJSON_HasObjectItem(obj, "messages")) return KIND_CHAT;  // before text, as mlx-lm
    if (cJSON_HasObjectItem(obj, "text")) return KIND_TEXT;
    return err_set(err, "%s:%d: missing \"text\", \"messages\" (or \"prompt\" and \"completion\")",
                   path, line);
}

// The chat template of a file's lines: compiled on the first line that needs it, with what
// mlx-lm's TokenizerWrapper adds to every call ({"enable_thinking": has_thinking}).
typedef struct {
    ChatTemplate *ct;
    cJSON *extra;
} ChatCtx;

// apply_chat_template(msgs, tools, add_generation_prompt, **extra) encoded, as mlx-lm's
// datasets call it.
static int chat_ids(const Tokenizer *tok, ChatCtx *cc, const cJSON *msgs, const cJSON *tools,
                    int agp, int **ids, int *n, const char *path, int line, Error *err) {
    if (!cc->ct) {
        if (!(cc->ct = chat_template_compile(tok, err))) return err_wrap(err, "%s:%d", path, line);
        cc->extra = cJSON_CreateObject();
        cJSON_AddBoolToObject(cc->extra, "enable_thinking", chat_template_has_thinking(tok));
    }
    int rc = chat_template_apply_ids(cc->ct, msgs, tools, cc->extra, agp, ids, n, err);
    return rc ? err_wrap(err, "%s:%d", path, line) : 0;
}

// The line's "tools" (absent or null: none); a list of objects, as transformers wants.
static int get_tools(const cJSON *obj, const cJSON **tools, const char *path, int line, Error *err) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "tools");
    *tools = t && !cJSON_IsNull(t) ? t : NULL;
    if (!*tools) return 0;
    if (!cJSON_IsArray(t)) return err_set(err, "%s:%d: \"tools\" must be a list of objects", path, line);
    const cJSON *c;
    cJSON_ArrayForEach(c, t) if (!cJSON_IsObject(c))
        return err_set(err, "%s:%d: \"tools\" must be a list of objects", path, line);
    return 0;
}

// A chat (messages) or prompt/completion line through the tokenizer's chat template, with
// mlx-lm's mask offset. *prompt_len is 0 unless mask_prompt.
static int encode_chat(const cJSON *obj, int kind, const Tokenizer *tok, ChatCtx *cc, int mask_prompt,
                       int **ids, int *n, int *prompt_len, const char *path, int line, Error *err) {
    const cJSON *tools;
    if (get_tools(obj, &tools, path, line, err)) return -1;
    cJSON *msgs;
    if (kind == KIND_CHAT) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "messages");
        if (chat_messages_check(m, err)) return err_wrap(err, "%s:%d", path, line);
        msgs = cJSON_Duplicate(m, 1);
    } else {
        const char *prompt, *completion;
        if (get_string(obj, "prompt", &prompt, path, line, err) ||
            get_string(obj, "completion", &completion, path, line, err))
            return -1;
        msgs = cJSON_CreateArray();
        const char *roles[2] = {"user", "assistant"}, *contents[2] = {prompt, completion};
        for (int i = 0; i < 2; i++) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", roles[i]);
            cJSON_AddStringToObject(m, "content", contents[i]);
            cJSON_AddItemToArray(msgs, m);
        }
    }
    int rc = chat_ids(tok, cc, msgs, tools, 0, ids, n, path, line, err);
    *prompt_len = 0;
    if (!rc && mask_prompt) {
        int count = cJSON_GetArraySize(msgs);
        cJSON *last = cJSON_DetachItemFromArray(msgs, count - 1);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(last, "role");
        int agp = kind == KIND_COMPLETION || !strcmp(role->valuestring, "assistant");
        int *p = NULL, np = 0;
        if (count < 2)
            rc = err_set(err, "%s:%d: --mask-prompt needs at least two messages (the prompt is "
                         "everything before the last one)", path, line);
        else
            rc = chat_ids(tok, cc, msgs, tools, agp, &p, &np, path, line, err);
        free(p);
        cJSON_Delete(last);
        *prompt_len = np;
        if (rc) {
            free(*ids);
            *ids = NULL;
        }
    }
    cJSON_Delete(msgs);
    return rc;
}

// Tokenize one parsed line into ex. Returns 0 or -1 (err names the file and line).
static int encode_line(Example *ex, const cJSON *obj, int kind, const Tokenizer *tok, int eos,
                       ChatCtx *cc, int mask_prompt, const char *path, int line, Error *err) {
    int *ids = NULL, n = 0, prompt_len = 0;
    int templated = kind == KIND_CHAT || (kind == KIND_COMPLETION && chat_template_present(tok));
    if (kind == KIND_CHAT && !chat_template_present(tok))
        return err_set(err, "%s:%d: chat data (\"messages\") needs a chat template, and the tokenizer has "
                       "none (tokenizer_config.json's chat_template, chat_template.jinja, or a GGUF's "
                       "tokenizer.chat_template)", path, line);
    if (templated) {
        if (encode_chat(obj, kind, tok, cc, mask_prompt, &ids, &n, &prompt_len, path, line, err))
            return -1;
    } else if (kind == KIND_TEXT) {
        const char *text;
        if (get_string(obj, "text", &text, path, line, err)) return -1;
        if (tokenizer_encode(tok, text, strlen(text), 1, &ids, &n, err))
            return err_wrap(err, "%s:%d: \"text\"", path, line);
    } else {
        const char *prompt, *completion;
        if (get_string(obj, "prompt", &prompt, path, line, err) ||
            get_string(obj, "completion", &completion, path, line, err))
            return -1;
        int *c = NULL, nc = 0;
        if (tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n, err))
            return err_wrap(err, "%s:%d: \"prompt\"", path, line);
        if (tokenizer_encode(tok, completion, strlen(completion), 0, &c, &nc, err)) {
            free(ids);
            return err_wrap(err, "%s:%d: \"completion\"", path, line);
        }
        prompt_len = mask_prompt ? n : 0;
        ids = xrealloc(ids, sizeof(int) * (size_t)(n + nc + 1));
        if (nc) memcpy(ids + n, c, sizeof(int) * (size_t)nc);
        n += nc;
        free(c);
    }
    if (!templated && (n == 0 || ids[n - 1] != eos)) {  // the template ends its turns itself
        ids = xrealloc(ids, sizeof(int) * (size_t)(n + 1));
        ids[n++] = eos;
    }
    if (n < 2) {  // only without BOS and with empty text; mlx-lm fails on it too
        free(ids);
        return err_set(err, "%s:%d: the example has %d token, nothing to train on", path, line, n);
    }
    ex->ids = ids;
    ex->len = n;
    ex->prompt_len = prompt_len;
    return 0;
}

static int check_vocab(const Example *ex, const Tokenizer *tok, int vocab_limit, const char *path,
                       int line, Error *err) {
    if (vocab_limit <= 0) return 0;
    for (int i = 0; i < ex->len; i++) {
        if (ex->ids[i] >= vocab_limit) {
            const char *piece = tokenizer_piece(tok, ex->ids[i]);
            return err_set(err,
                           "%s:%d: token %d (%s) is outside the model's vocabulary (%d embedding "
                           "rows)",
                           path, line, ex->ids[i], piece ? piece : "?", vocab_limit);
        }
    }
    return 0;
}

int dataset_load(Dataset *d, const char *path, const Tokenizer *tok, int vocab_limit,
                 int max_seq_len, int mask_prompt, Error *err) {
    memset(d, 0, sizeof *d);
    if (max_seq_len < 2) return err_set(err, "%s: max_seq_len %d < 2", path, max_seq_len);
    int eos_ids[8];
    if (tokenizer_eos_ids(tok, eos_ids, 8) < 1)
        return err_set(err, "%s: the tokenizer has no EOS token to end examples with", path);
    int eos = eos_ids[0];

    char *buf;
    size_t size;
    if (read_file(path, &buf, &size, err)) return -1;
    ChatCtx cc = {0};
    int cap = 0, kind = 0, kind_line = 0, rc = 0;
    char *p = buf, *end = buf + size;
    for (int line = 1; p < end; line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *stop = nl ? nl : end, *next = nl ? nl + 1 : end;
        size_t n = (size_t)(stop - p);
        if (memchr(p, 0, n)) {
            rc = err_set(err, "%s:%d: NUL byte in the line", path, line);
            break;
        }
        *stop = 0;  // buf is ours: terminate the line in place
        size_t k = 0;
        while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
        if (k == n) {  // blank line
            p = next;
            continue;
        }
        const char *parse_end = NULL;
        cJSON *obj = cJSON_ParseWithOpts(p, &parse_end, 1);
        if (!obj) {
            size_t at = parse_end && parse_end >= p ? (size_t)(parse_end - p) + 1 : 1;
            rc = err_set(err, "%s:%d: invalid JSON (near column %zu)", path, line, at);
            break;
        }
        if (!cJSON_IsObject(obj)) {
            rc = err_set(err, "%s:%d: expected a JSON object", path, line);
        } else {
            int kd = line_kind(obj, path, line, err);
            if (kd < 0) {
                rc = -1;
            } else if (kind && kd != kind) {
                rc = err_set(err, "%s:%d: a %s line after %s lines (line %d); use one format per file",
                             path, line, kind_name(kd), kind_name(kind), kind_line);
            } else if (kd == KIND_TEXT && mask_prompt) {
                rc = err_set(err, "%s:%d: --mask-prompt needs prompt/completion data (or chat data)", path, line);
            } else {
                if (!kind) kind = kd, kind_line = line;
                if (d->n == cap) {
                    cap = cap ? cap * 2 : 256;
                    d->ex = xrealloc(d->ex, sizeof(Example) * (size_t)cap);
                }
                Example *ex = &d->ex[d->n];
                rc = encode_line(ex, obj, kd, tok, eos, &cc, mask_prompt, path, line, err);
                if (!rc) {
                    d->n++;
                    if (ex->len > max_seq_len) {
                        ex->len = max_seq_len;  // ids keeps its allocation; only len shrinks
                        d->n_truncated++;
                    }
                    if (ex->prompt_len > ex->len) ex->prompt_len = ex->len;
                    rc = check_vocab(ex, tok, vocab_limit, path, line, err);
                }
            }
        }
        cJSON_Delete(obj);
        if (rc) break;
        p = next;
    }
    free(buf);
    chat_template_free(cc.ct);
    cJSON_Delete(cc.extra);
    if (!rc && d->n == 0) rc = err_set(err, "%s: no examples (the file is empty)", path);
    if (rc) {
        dataset_free(d);
        return -1;
    }
    d->path = xstrdup(path);  // for later messages (batching)
    // mlx-lm prints a warning for every batch that holds a long example; one line per file here.
    if (d->n_truncated)
        fprintf(stderr, "tunelens: warning: %s: %d of %d examples are longer than %d tokens and "
                "were truncated\n", path, d->n_truncated, d->n, max_seq_len);
    return 0;
}

void dataset_free(Dataset *d) {
    for (int i = 0; i < d->n; i++) free(d->ex[i].ids);
    free(d->ex);
    free(d->path);
    d->ex = NULL;
    d->path = NULL;
    d->n = d->n_truncated = 0;
}

// ---------------------------------------------------------------------------------------------
// batches

// Sort keys: length in the high half, index in the low half. Ties in length fall back to
// the index, which makes qsort (not stable by itself) give the stable order.
static int by_key(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void new_pass(BatchIter *it) {
    for (int i = 0; i < it->n_batches; i++) it->perm[i] = i;
    if (it->shuffle) rng_shuffle_int(&it->rng, it->perm, it->n_batches);
    it->cursor = 0;
}

int batch_iter_init_ex(BatchIter *it, const Dataset *d, int batch_size, uint64_t seed,
                       int shuffle, int file_order, Error *err) {
    memset(it, 0, sizeof *it);
    if (batch_size < 1) return err_set(err, "batch size %d < 1", batch_size);
    if (d->n < batch_size)
        return err_set(err, "dataset %s has %d examples, fewer than the batch size %d",
                       d->path ? d->path : "(unnamed)", d->n, batch_size);
    it->d = d;
    it->batch_size = batch_size;
    it->n_batches = d->n / batch_size;
    it->shuffle = shuffle ? 1 : 0;
    it->file_order = file_order ? 1 : 0;
    it->rng = seed;
    it->order = xmalloc(sizeof(int) * (size_t)d->n);
    for (int i = 0; i < d->n; i++) it->order[i] = i;
    if (!file_order) {
        uint64_t *key = xmalloc(sizeof(uint64_t) * (size_t)d->n);
        for (int i = 0; i < d->n; i++) key[i] = (uint64_t)d->ex[i].len << 32 | (uint32_t)i;
        qsort(key, (size_t)d->n, sizeof(uint64_t), by_key);
        for (int i = 0; i < d->n; i++) it->order[i] = (int)(key[i] & 0xffffffffu);
        free(key);
    }
    it->perm = xmalloc(sizeof(int) * (size_t)it->n_batches);
    new_pass(it);
    return 0;
}

int batch_iter_init(BatchIter *it, const Dataset *d, int batch_size, uint64_t seed, int shuffle,
                    Error *err) {
    return batch_iter_init_ex(it, d, batch_size, seed, shuffle, 0, err);
}

void batch_iter_next(BatchIter *it, Batch *b) {
    if (it->cursor >= it->n_batches) new_pass(it);
    const Dataset *d = it->d;
    const int B = it->batch_size;
    const int *rows = it->order + (size_t)it->perm[it->cursor++] * (size_t)B;
    if (!b->inputs) {  // first use: room for the longest possible batch of this dataset
        int max_len = 2;
        for (int i = 0; i < d->n; i++)
            if (d->ex[i].len > max_len) max_len = d->ex[i].len;
        b->cap = B * (max_len - 1);
        b->inputs = xmalloc(sizeof(int) * (size_t)b->cap);
        b->targets = xmalloc(sizeof(int) * (size_t)b->cap);
    }
    int T = 1;
    for (int r = 0; r < B; r++)
        if (d->ex[rows[r]].len - 1 > T) T = d->ex[rows[r]].len - 1;
    if (B * T > b->cap) {  // a Batch reused with another dataset's iterator
        b->cap = B * T;
        b->inputs = xrealloc(b->inputs, sizeof(int) * (size_t)b->cap);
        b->targets = xrealloc(b->targets, sizeof(int) * (size_t)b->cap);
    }
    if (B != b->B) b->rows = xrealloc(b->rows, sizeof(int) * (size_t)B);
    b->B = B;
    b->T = T;
    b->n_targets = 0;
    for (int r = 0; r < B; r++) {
        const Example *ex = &d->ex[rows[r]];
        int *in = b->inputs + (size_t)r * T, *tg = b->targets + (size_t)r * T;
        b->rows[r] = rows[r];
        for (int t = 0; t < T; t++) {
            int j = t + 1;  // position of the target token in the example
            in[t] = j < ex->len ? ex->ids[t] : 0;
            tg[t] = (j < ex->len && j >= ex->prompt_len) ? ex->ids[j] : -1;
            b->n_targets += tg[t] >= 0;
        }
    }
}

void batch_iter_free(BatchIter *it) {
    free(it->order);
    free(it->perm);
    memset(it, 0, sizeof *it);
}

void batch_free(Batch *b) {
    free(b->inputs);
    free(b->targets);
    free(b->rows);
    memset(b, 0, sizeof *b);
}

// ---------------------------------------------------------------------------------------------
// checkpoint state

#define STATE_TAG 0x544c424931ULL  // "TLBI1"
#define STATE_HEADER 7

// FNV-1a over the tokenized data in iteration order, so a resume on changed data is refused.
static uint64_t fingerprint(const BatchIter *it) {
    uint64_t h = 0xcbf29ce484222325ULL;
#define MIX(v) (h = (h ^ (uint64_t)(uint32_t)(v)) * 0x100000001b3ULL)
    MIX(it->d->n);
    for (int i = 0; i < it->n_batches * it->batch_size; i++) {
        const Example *ex = &it->d->ex[it->order[i]];
        MIX(it->order[i]);
        MIX(ex->len);
        MIX(ex->prompt_len);
        for (int k = 0; k < ex->len; k++) MIX(ex->ids[k]);
    }
#undef MIX
    return h;
}

int batch_iter_state_words(const BatchIter *it) { return STATE_HEADER + it->n_batches; }

int batch_iter_save(const BatchIter *it, uint64_t *words, int max) {
    int n = batch_iter_state_words(it);
    if (!words || max < n) return -1;
    words[0] = STATE_TAG;
    words[1] = (uint64_t)it->batch_size;
    words[2] = (uint64_t)it->n_batches;
    words[3] = (uint64_t)(it->shuffle | it->file_order << 1);
    words[4] = (uint64_t)it->cursor;
    words[5] = it->rng;
    words[6] = fingerprint(it);
    for (int i = 0; i < it->n_batches; i++) words[STATE_HEADER + i] = (uint64_t)it->perm[i];
    return n;
}

int batch_iter_restore(BatchIter *it, const uint64_t *words, int n, Error *err) {
    if (n < STATE_HEADER || words[0] != STATE_TAG)
        return err_set(err, "batch iterator state: not a saved state (%d words)", n);
    if (words[1] != (uint64_t)it->batch_size || words[2] != (uint64_t)it->n_batches)
        return err_set(err, "batch iterator state: saved with batch size %llu and %llu batches, "
                       "now %d and %d", (unsigned long long)words[1],
                       (unsigned long long)words[2], it->batch_size, it->n_batches);
    if (words[3] != (uint64_t)(it->shuffle | it->file_order << 1))
        return err_set(err, "batch iterator state: saved with other shuffle/order settings");
    if (n != batch_iter_state_words(it))
        return err_set(err, "batch iterator state: %d words, expected %d", n,
                       batch_iter_state_words(it));
    if (words[4] > (uint64_t)it->n_batches)
        return err_set(err, "batch iterator state: cursor %llu out of range",
                       (unsigned long long)words[4]);
    if (words[6] != fingerprint(it))
        return err_set(err, "batch iterator state: the data differ from the data it was saved "
                       "with");
    char *seen = xcalloc((size_t)it->n_batches, 1);
    int ok = 1;
    for (int i = 0; i < it->n_batches && ok; i++) {
        uint64_t v = words[STATE_HEADER + i];
        ok = v < (uint64_t)it->n_batches && !seen[v];
        if (ok) seen[v] = 1;
    }
    free(seen);
    if (!ok) return err_set(err, "batch iterator state: the batch order is not a permutation");
    for (int i = 0; i < it->n_batches; i++) it->perm[i] = (int)words[STATE_HEADER + i];
    it->cursor = (int)words[4];
    it->rng = words[5];
    return 0;
}
