// direction.c — placeholder until ablate's directions land (their own commit replaces this).
#include "direction.h"

#include <stdlib.h>

int direction_load(const Model *m, const DirectionSpec *spec, int layer, Direction *d, Error *err) {
    *d = (Direction){0};
    return err_set(err, "directions are not supported yet");
}

void direction_free(Direction *d) {
    free(d->v);
    free(d->what);
    *d = (Direction){0};
}
