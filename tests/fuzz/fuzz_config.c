/* Target: the daemons' INI parser (consumers/daemon/config.c) and its typed
 * value parsers, on arbitrary text.  A config file is the operator's, but a
 * daemon must still answer a broken one with FILE:LINE and exit 2, never a
 * crash; the value parsers also read command-line flags.
 *
 * Checks beyond "no crash": every entry's line lies within the text, every
 * error message is a NUL-terminated string that names the file. */
#include "fuzz.h"

#include "config.h"

#include <stdlib.h>

static const char *const choices[] = {"keep", "hash", "drop", "otlp", "msgpack", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    unsigned lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';

    struct cbus_cfg cfg;
    char err[256];
    err[0] = '\0';
    int r = cbus_cfg_parse(&cfg, "fuzz.ini", text, err, sizeof err);
    FZ_CHECK(r == 0 || r < 0, "parse returned %d", r);
    if (r) {
        FZ_CHECK(memchr(err, '\0', sizeof err) && !strncmp(err, "fuzz.ini", 8),
                 "error message does not name the file: %.40s", err);
        free(text);
        return 0;
    }
    for (size_t i = 0; i < cfg.count; i++) {
        const struct cbus_cfg_entry *e = &cfg.entries[i];
        FZ_CHECK(e->section && e->key && e->value, "entry %zu has a NULL string", i);
        FZ_CHECK(e->line >= 1 && e->line <= lines, "entry line %u of %u", e->line, lines);
        uint64_t u;
        double d;
        int b;
        unsigned c;
        /* Each parser either accepts or fills err naming the file. */
        if (cbus_cfg_u64(&cfg, e, 1, 1000000, &u, err, sizeof err))
            FZ_CHECK(!strncmp(err, "fuzz.ini:", 9), "u64 message: %.40s", err);
        else
            FZ_CHECK(u >= 1 && u <= 1000000, "u64 out of range %llu", (unsigned long long)u);
        if (!cbus_cfg_double(&cfg, e, -1.0, 1e9, &d, err, sizeof err))
            FZ_CHECK(d >= -1.0 && d <= 1e9, "double out of range");
        cbus_cfg_bool(&cfg, e, &b, err, sizeof err);
        cbus_cfg_duration_ns(&cfg, e, &u, err, sizeof err);
        cbus_cfg_size(&cfg, e, &u, err, sizeof err);
        if (!cbus_cfg_choice(&cfg, e, choices, &c, err, sizeof err))
            FZ_CHECK(c < 5, "choice index %u", c);
        cbus_cfg_error(&cfg, e, err, sizeof err, "%s", e->value);
    }
    cbus_cfg_free(&cfg);

    /* The flag parsers on the raw text as one value. */
    uint64_t v;
    cbus_parse_duration_ns(text, &v);
    cbus_parse_size(text, &v);
    free(text);
    return 0;
}
