// data.h — training data: jsonl datasets tokenized as mlx-lm does, and mlx-lm style batches.
#pragma once
#include "../common.h"
#include "../tokenizer/tokenizer.h"

// One tokenized example. Target token j (1 <= j < len) is trained iff j >= prompt_len
// (prompt_len is 0 unless --mask-prompt; then it is the number of prompt tokens).
typedef struct {
    int *ids;
    int len;
    int prompt_len;
} Example;

typedef struct {
    Example *ex;
    int n;
    int n_truncated;  // examples cut to max_seq_len (a warning is printed once per file)
    char *path;       // the file it came from, for messages (heap; NULL = unnamed)
} Dataset;

// Load a jsonl file of {"text": ...}, {"prompt": ..., "completion": ...} or {"messages":
// [{role, content}...]} lines (optionally with "tools"; all lines one kind). Text is encoded as
// HF's tokenizer.encode does (BOS from the post-processor), EOS appended unless already last;
// messages, and prompt/completion when the tokenizer has a chat template, go through the
// template as mlx-lm's ChatDataset / CompletionsDataset do (mask offsets too); longer than
// max_seq_len -> truncated. Errors name the file and line: invalid JSON, missing keys,
// non-string values, bad messages, template errors, invalid UTF-8, empty file, ids >=
// vocab_limit (the model's embedding rows; <= 0: no check), messages without a template.
// mask_prompt needs prompt/completion or chat data. max_seq_len >= 2. data.c lists where we
// differ from mlx-lm (prompt/completion without a chat template, blank lines, the warning).
int dataset_load(Dataset *d, const char *path, const Tokenizer *tok, int vocab_limit,
                 int max_seq_len, int mask_prompt, Error *err);
void dataset_free(Dataset *d);

// A batch: B rows padded to the longest row; inputs = ids[:, :-1], targets = ids[:, 1:]
// with -1 where nothing is trained (padding, masked prompt). n_targets may be 0 (a batch of
// examples whose prompts fill max_seq_len under --mask-prompt).
// Zero-initialize before first use (Batch b = {0}); batch_iter_next allocates once, for the
// longest batch of its dataset, so the buffers keep their addresses from batch to batch.
typedef struct {
    int B, T;         // T = longest row - 1
    int *inputs;      // (B, T), pad id 0 past each row's end
    int *targets;     // (B, T)
    int n_targets;    // targets >= 0
    int *rows;        // (B) dataset index of each row's example
    int cap;          // elements allocated in inputs/targets
} Batch;

// mlx-lm's batching: examples sorted by length, cut into fixed batches of batch_size (the
// remainder dropped), batch order shuffled with a seeded RNG every pass over the data.
// All state is plain data; batch_iter_save/restore move it in and out of a checkpoint.
typedef struct {
    const Dataset *d;
    int batch_size;
    int n_batches;
    int *order;       // sorted example indices (n_batches * batch_size used)
    int *perm;        // batch order of the current pass
    int cursor;       // next position in perm
    uint64_t rng;     // state of the seeded generator (saved in checkpoints)
    int shuffle;      // 0: batches in sorted order (validation/test)
    int file_order;   // 1: batches cut from the file's order instead of the sorted one
} BatchIter;

// Fails with a clear message when the dataset has fewer examples than batch_size.
int batch_iter_init(BatchIter *it, const Dataset *d, int batch_size, uint64_t seed, int shuffle,
                    Error *err);
// As batch_iter_init, but with file_order = 1 the batches are consecutive runs of the file's
// lines. This is what mlx-lm v0.32 really does: its "sort by length" key is
// CacheDataset.itemlen = len(raw json object) = the number of keys, constant for uniform data,
// so its stable sort keeps the file order.
int batch_iter_init_ex(BatchIter *it, const Dataset *d, int batch_size, uint64_t seed,
                       int shuffle, int file_order, Error *err);
// Fill b with the next batch (allocating it on first use); starts a new pass when one ends.
void batch_iter_next(BatchIter *it, Batch *b);
void batch_iter_free(BatchIter *it);
void batch_free(Batch *b);

// Checkpointing. The state is batch_iter_state_words(it) 64-bit words: a tag, batch_size,
// n_batches, shuffle|file_order, cursor, rng, a fingerprint of the tokenized dataset, then
// perm. batch_iter_save returns the number of words written, -1 if max is too small.
// batch_iter_restore needs an iterator initialized on the same data and batch size (it checks
// both, and that perm is a permutation); the next batch is then the one the saved run would
// have produced next, and so on bit for bit.
int batch_iter_state_words(const BatchIter *it);
int batch_iter_save(const BatchIter *it, uint64_t *words, int max);
int batch_iter_restore(BatchIter *it, const uint64_t *words, int n, Error *err);

// `tunelens data math`: arithmetic problems "a op b = c", operands 1..max_operand,
// subtraction never negative, test problems never in train. Writes DIR/{train,valid,test}.jsonl
// atomically (DIR created if missing). ops: a string of + - * (and / for exact integer
// division). Lines read {"text": "89 - 34 = 55"}. Test problems are distinct; valid and train
// are independent draws that avoid every test problem (train may repeat itself and share
// problems with valid, as the experiment's original script did). Each split has its own
// stream derived from seed, so the test set does not change with --train or --valid.
typedef struct {
    int n_train, n_valid, n_test;
    int max_operand;
    const char *ops;
    uint64_t seed;
    int quiet;        // 1: no summary lines on stdout
} MathDataSpec;
// Checks the spec (counts, ops, operand range, enough distinct problems for the test set);
// data_math_write calls it too. The CLI treats its failures as usage errors.
int data_math_check(const MathDataSpec *spec, Error *err);
// Number of distinct problem strings "a op b" the spec's ops and max_operand allow.
int64_t data_math_distinct(const MathDataSpec *spec);
int data_math_write(const char *dir, const MathDataSpec *spec, Error *err);
