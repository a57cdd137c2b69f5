/* Target: the cost daemon's checkpoint reader (consumers/cost/checkpoint.c).
 * The checkpoint is written by cbus-cost itself, but it is a binary format
 * with counts and keys read back from disk: a corrupt or planted file in the
 * state directory must be refused with a message, never overflow a table.
 *
 * Input: a mode byte, then the file.  With bit 0 the harness rewrites the
 * trailing CRC-32 to match, so the fuzzer gets past the checksum to the
 * parser behind it.  The file is handed over through a memfd's
 * /proc/self/fd path.  A loaded ledger must then take more events and save
 * again. */
#include "fuzz.h"

#include "checkpoint.h"
#include "ledger.h"
#include "prices.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

static struct cost_price_table *g_tab;
static int g_fd = -1;
static char g_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[256];
    static const char json[] =
        "{\"gpt-4o\":{\"input_cost_per_token\":2.5e-6,\"output_cost_per_token\":1e-5,"
        "\"cache_read_input_token_cost\":1.25e-6},"
        "\"m1\":{\"input_cost_per_token\":1e-6,\"output_cost_per_token\":2e-6}}";
    if (cost_prices_parse(&g_tab, "fuzz.json", json, err, sizeof err))
        abort();
    g_fd = memfd_create("fuzz-ckpt", MFD_CLOEXEC);
    if (g_fd < 0)
        abort();
    snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    size_t len = size - 1;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, len);
    if ((mode & 1) && len >= 4) {
        uint32_t crc = (uint32_t)crc32(0L, buf, (uInt)(len - 4));
        memcpy(buf + len - 4, &crc, 4);
    }
    if (ftruncate(g_fd, 0) || pwrite(g_fd, buf, len, 0) != (ssize_t)len)
        abort();
    free(buf);

    struct cost_ledger l;
    struct cost_ledger_opts o = {.max_models = 64, .max_users = 64, .max_sessions = 64};
    if (cost_ledger_init(&l, g_tab, NULL, &o))
        return 0;
    uint64_t bus_id = 0;
    char err[512];
    err[0] = '\0';
    int r = cost_checkpoint_load(&l, &bus_id, g_path, err, sizeof err);
    FZ_CHECK(r == 0 || r == -EBADMSG || r == -EPROTO || r == -ENOENT || r == -ENOMEM ||
                 r == -EOVERFLOW, /* more entries than max_* (checkpoint.c; not in its header) */
             "load returned %d", r);
    if (r)
        FZ_CHECK(memchr(err, '\0', sizeof err) && (r == -ENOENT || err[0]),
                 "refused without a message (%d)", r);
    else {
        /* A loaded ledger keeps working: count an event, save again. */
        struct cbus_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = CBUS_EV_LLM_END;
        ev.event_id = l.cursor;
        memcpy(ev.model, "gpt-4o", 6);
        memcpy(ev.user, "alice", 5);
        ev.u.usage.input_tokens = 100;
        ev.u.usage.output_tokens = 10;
        ev.u.usage.usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT;
        cost_ledger_apply(&l, &ev);
        struct sbuf b;
        sbuf_init(&b);
        char tmp[] = "/tmp/cbus-fuzz-ckpt.XXXXXX";
        int tfd = mkstemp(tmp);
        if (tfd >= 0) {
            close(tfd);
            FZ_CHECK(cost_checkpoint_save(&l, bus_id, 1, tmp, &b, 0) == 0, "re-save failed");
            unlink(tmp);
        }
        sbuf_free(&b);
    }
    cost_ledger_free(&l);
    return 0;
}
