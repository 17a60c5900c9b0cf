// fuzz_yaml_config.c — `train -c FILE.yaml` on an arbitrary file: libyaml's parse, then the
// flag table's loader (unknown keys, wrong types, ranges, lr_schedule, optimizer_config).
// Whatever it accepts must hold only values every flag allows; a refusal must say why.
#include <stdlib.h>

#include "cli/flags.h"
#include "fuzz_util.h"
#include "train/trainer.h"

int fuzz_yaml_config(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("config.yaml", data, size);
    TrainConfig c;
    train_config_defaults(&c);
    Error err = {{0}};
    if (train_config_load_yaml(&c, path, &err) != 0) {
        FUZZ_CHECK(err.msg[0]);
    } else {
        FUZZ_CHECK(c.iters >= 1 && c.batch_size >= 1 && c.rank >= 1 && c.num_layers >= -1);
        FUZZ_CHECK(c.dropout >= 0 && c.dropout <= 0.999 && c.learning_rate >= 0 && c.learning_rate <= 1e3);
        FUZZ_CHECK(c.fine_tune >= FT_LORA && c.fine_tune <= FT_DORA);
        FUZZ_CHECK(c.optimizer == OPT_ADAM || c.optimizer == OPT_ADAMW || c.optimizer == OPT_SGD);
        FUZZ_CHECK((int)c.dtype >= 0 && (int)c.dtype <= 3 && c.warmup >= 0);
        FUZZ_CHECK(c.grad_accumulation_steps >= 1 && c.max_seq_length >= 2);
        unsigned mask;
        if (c.lora_keys) FUZZ_CHECK(lora_keys_parse(c.lora_keys, &mask, &err) == 0);
    }
    flags_free_kept();
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_yaml_config(data, size); }
#endif
