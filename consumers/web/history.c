/* The history: the newest events and their JSON, for the streams to read
 * (web.h).  Entries and bytes are two rings; an entry leaves when its slot
 * or its bytes are needed again.  The JSON of a batch is copied in under the
 * lock (it was rendered before), so the HTTP thread waits at most one memcpy
 * of a batch. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "web.h"

static uint64_t pow2(uint64_t v)
{
    uint64_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

int web_hist_init(struct web_hist *h, uint64_t cap, uint64_t bcap)
{
    memset(h, 0, sizeof *h);
    if (cap < 16 || cap > (UINT64_C(1) << 24) || bcap < 65536 || bcap > (UINT64_C(1) << 32))
        return -EINVAL;
    h->cap = pow2(cap);
    h->bcap = pow2(bcap);
    h->e = calloc(h->cap, sizeof *h->e);
    h->b = malloc(h->bcap);
    if (!h->e || !h->b) {
        free(h->e);
        free(h->b);
        h->e = NULL;
        h->b = NULL;
        return -ENOMEM;
    }
    pthread_mutex_init(&h->mu, NULL);
    h->oldest = 1;
    atomic_store_explicit(&h->head, 1, memory_order_relaxed);
    return 0;
}

void web_hist_free(struct web_hist *h)
{
    if (!h->e)
        return;
    pthread_mutex_destroy(&h->mu);
    free(h->e);
    free(h->b);
    h->e = NULL;
    h->b = NULL;
}

static void ring_put(struct web_hist *h, const char *src, uint32_t n)
{
    uint64_t at = h->bhead & (h->bcap - 1);
    uint64_t first = h->bcap - at < n ? h->bcap - at : n;
    memcpy(h->b + at, src, first);
    memcpy(h->b, src + first, n - first);
    h->bhead += n;
}

void web_hist_append(struct web_hist *h, const struct cbus_event *ev, int n, const char *json,
                     const uint32_t *lens)
{
    pthread_mutex_lock(&h->mu);
    uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
    for (int i = 0; i < n; i++) {
        uint32_t len = lens[i];
        if (len > h->bcap / 4) /* never for an event without its body: ~2 KiB at most */
            len = 0;
        /* Room: an entry slot and len bytes. */
        while (h->oldest < head &&
               (head - h->oldest >= h->cap ||
                h->e[h->oldest & (h->cap - 1)].boff + h->bcap < h->bhead + len))
            h->oldest++;
        struct web_hist_ent *e = &h->e[head & (h->cap - 1)];
        e->seq = head;
        e->boff = h->bhead;
        e->blen = len;
        e->ev = ev[i];
        ring_put(h, json, len);
        json += lens[i];
        head++;
    }
    /* RELEASE: the entries above are written.  Pairs with the ACQUIRE loads of
     * head in sse.c (a client deciding whether to sleep; the entries
     * themselves are read under mu). */
    atomic_store_explicit(&h->head, head, memory_order_release);
    pthread_mutex_unlock(&h->mu);
}

void web_hist_json(const struct web_hist *h, const struct web_hist_ent *e, struct sbuf *b)
{
    uint64_t at = e->boff & (h->bcap - 1);
    uint64_t first = h->bcap - at < e->blen ? h->bcap - at : e->blen;
    sbuf_add(b, h->b + at, first);
    sbuf_add(b, h->b, e->blen - first);
}
