#include "webhook.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "redact.h"

#define QUEUE_MAX 1024
#define ATTEMPTS  3

struct item {
    struct item *next;
    char body[];
};

struct cost_webhook {
    char *url;
    char *shown;                 /* url as logs may show it (cbus_redact_url) */
    long timeout_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct item *head, *tail;
    unsigned queued;
    int stopping;
    _Atomic uint64_t sent, failed;
};

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static int deliver(struct cost_webhook *w, CURL *curl, const char *body)
{
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    int ok = 0;
    for (int attempt = 0; attempt < ATTEMPTS && !ok; attempt++) {
        curl_easy_reset(curl);
        curl_easy_setopt(curl, CURLOPT_URL, w->url);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, w->timeout_ms);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
        CURLcode rc = curl_easy_perform(curl);
        long status = 0;
        if (rc == CURLE_OK)
            curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (rc == CURLE_OK && status >= 200 && status < 300) {
            ok = 1;
            break;
        }
        int retry = rc != CURLE_OK || status == 429 || status >= 500;
        if (rc != CURLE_OK)
            cbus_log_warn("webhook %s: %s (attempt %d of %d)", w->shown, curl_easy_strerror(rc),
                          attempt + 1, ATTEMPTS);
        else
            cbus_log_warn("webhook %s: HTTP %ld (attempt %d of %d)", w->shown, status, attempt + 1,
                          ATTEMPTS);
        if (!retry)
            break;
        struct timespec ts = {0, 200000000L * (attempt + 1)};
        nanosleep(&ts, NULL);
    }
    curl_slist_free_all(hdr);
    return ok;
}

static void *worker(void *arg)
{
    struct cost_webhook *w = arg;
    CURL *curl = curl_easy_init();
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        struct item *it = w->head;
        if (!it)
            break; /* stopping and drained */
        w->head = it->next;
        if (!w->head)
            w->tail = NULL;
        w->queued--;
        pthread_mutex_unlock(&w->mu);
        int ok = curl && deliver(w, curl, it->body);
        atomic_fetch_add(ok ? &w->sent : &w->failed, 1);
        free(it);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    if (curl)
        curl_easy_cleanup(curl);
    return NULL;
}

int cost_webhook_start(struct cost_webhook **out, const char *url, uint64_t timeout_ns)
{
    struct cost_webhook *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->url = strdup(url);
    size_t sl = CBUS_REDACT_SIZE(strlen(url));
    w->shown = malloc(sl);
    if (!w->url || !w->shown) {
        free(w->url);
        free(w->shown);
        free(w);
        return -ENOMEM;
    }
    cbus_redact_url(w->shown, sl, url);
    w->timeout_ms = (long)(timeout_ns / 1000000u);
    if (w->timeout_ms < 1)
        w->timeout_ms = 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int r = pthread_create(&w->thread, NULL, worker, w);
    if (r) {
        free(w->url);
        free(w->shown);
        free(w);
        return -r;
    }
    *out = w;
    return 0;
}

void cost_webhook_post(struct cost_webhook *w, const char *body)
{
    size_t n = strlen(body);
    struct item *it = malloc(sizeof *it + n + 1);
    pthread_mutex_lock(&w->mu);
    if (!it || w->queued >= QUEUE_MAX) {
        pthread_mutex_unlock(&w->mu);
        free(it);
        atomic_fetch_add(&w->failed, 1);
        cbus_log_warn("webhook queue full: alert dropped");
        return;
    }
    memcpy(it->body, body, n + 1);
    it->next = NULL;
    if (w->tail)
        w->tail->next = it;
    else
        w->head = it;
    w->tail = it;
    w->queued++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void cost_webhook_stop(struct cost_webhook *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->url);
    free(w->shown);
    free(w);
}

void cost_webhook_counts(struct cost_webhook *w, uint64_t *sent, uint64_t *failed)
{
    *sent = w ? atomic_load(&w->sent) : 0;
    *failed = w ? atomic_load(&w->failed) : 0;
}
