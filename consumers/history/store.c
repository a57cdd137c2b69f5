#include "store.h"

#include "files.h"
#include "money.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCHEMA_VERSION 4

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v);"
    /* one row: the bus position past the last committed batch, and counters */
    "CREATE TABLE IF NOT EXISTS cursor(id INTEGER PRIMARY KEY CHECK (id = 1),"
    " bus_id INTEGER NOT NULL, lanes INTEGER NOT NULL, pos BLOB NOT NULL,"
    " events INTEGER NOT NULL, messages INTEGER NOT NULL, duplicates INTEGER NOT NULL,"
    " skipped INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS conversations(id TEXT PRIMARY KEY, title TEXT, user TEXT,"
    " tenant TEXT, agent TEXT, created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,"
    " state TEXT NOT NULL DEFAULT 'active', messages INTEGER NOT NULL DEFAULT 0,"
    " input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,"
    /* pico-dollars, exact (consumers/events/prices.c); NULL: nothing priced */
    " cost_pico INTEGER, last_msg TEXT);"
    "CREATE INDEX IF NOT EXISTS conv_user ON conversations(user, updated_ns);"
    "CREATE INDEX IF NOT EXISTS conv_updated ON conversations(updated_ns);"
    /* seq: the order messages arrived in (the thread's order); AUTOINCREMENT:
     * never reused after a delete, so a new row is always above fts_seq */
    /* ids are unique within their conversation (frameworks number messages
     * per conversation) */
    "CREATE TABLE IF NOT EXISTS messages(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,"
    " conv TEXT NOT NULL, role TEXT NOT NULL, kind TEXT NOT NULL, name TEXT,"
    " text TEXT NOT NULL, raw BLOB, parent TEXT, model TEXT, input_tokens INTEGER,"
    " output_tokens INTEGER, ts_ns INTEGER NOT NULL, run_id TEXT, trace_id TEXT,"
    " metadata TEXT, hash INTEGER NOT NULL, cost_pico INTEGER, UNIQUE (conv, id));"
    /* one index for both a conversation's thread (its seq order: a sort of
     * the conversation's rows) and the content keys: one fewer to keep up
     * per message */
    "CREATE INDEX IF NOT EXISTS msg_hash ON messages(conv, hash);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(text, content='messages', detail=none, columnsize=0,"
    " content_rowid='seq');"
    /* The search index is written after the rows, by hist_store_index() in
     * transactions of its own (the daemon when idle, and every search before
     * it reads): tokenising is about half of what a message costs to store,
     * and a burst should not wait for it.  meta 'fts_seq' is the highest seq
     * indexed; a deleted row leaves the index only if it was in it. */
    "INSERT OR IGNORE INTO meta(k, v) VALUES ('fts_seq', 0);"
    "CREATE TRIGGER IF NOT EXISTS msg_ad AFTER DELETE ON messages"
    " WHEN old.seq <= (SELECT v FROM meta WHERE k = 'fts_seq') BEGIN"
    " INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.seq, old.text);"
    " END;";

enum {
    ST_CONV_TOUCH,
    ST_MSG_INSERT,
    ST_CONV_LAST,
    ST_CONV_AFTER_MSG,
    ST_COUNT_HASH,
    ST_ADD_USAGE,
    ST_CURSOR_PUT,
    ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_CONV_TOUCH] =
        "INSERT INTO conversations(id, user, tenant, agent, created_ns, updated_ns)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(id) DO UPDATE SET"
        " updated_ns = max(updated_ns, excluded.updated_ns),"
        " user = coalesce(user, excluded.user), tenant = coalesce(tenant, excluded.tenant),"
        " agent = coalesce(agent, excluded.agent)",
    [ST_MSG_INSERT] =
        "INSERT INTO messages(id, conv, role, kind, name, text, raw, parent, model,"
        " input_tokens, output_tokens, ts_ns, run_id, trace_id, metadata, hash, cost_pico)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        " ON CONFLICT(conv, id) DO NOTHING",
    [ST_CONV_LAST] = "SELECT last_msg FROM conversations WHERE id = ?1",
    [ST_CONV_AFTER_MSG] =
        "UPDATE conversations SET messages = messages + ?2, last_msg = coalesce(?3, last_msg),"
        " updated_ns = max(updated_ns, ?4), input_tokens = input_tokens + ?5,"
        " output_tokens = output_tokens + ?6,"
        " cost_pico = CASE WHEN ?7 THEN coalesce(cost_pico, 0) + ?8 ELSE cost_pico END"
        " WHERE id = ?1",
    [ST_COUNT_HASH] = "SELECT count(*) FROM messages WHERE conv = ?1 AND hash = ?2",
    [ST_ADD_USAGE] =
        "UPDATE conversations SET input_tokens = input_tokens + ?2,"
        " output_tokens = output_tokens + ?3,"
        " cost_pico = CASE WHEN ?4 THEN coalesce(cost_pico, 0) + ?5 ELSE cost_pico END"
        " WHERE id = ?1",
    [ST_CURSOR_PUT] =
        "INSERT OR REPLACE INTO cursor(id, bus_id, lanes, pos, events, messages, duplicates,"
        " skipped) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
};

/* What a batch changes of a conversation, kept in memory and written once
 * at commit (one UPDATE per conversation per batch instead of three
 * statements per message): its last message (the default parent), the
 * messages and tokens added, the latest time, and which keys the row has
 * been given. */
#define CONV_CACHE 512
struct conv_ent {
    char id[HIST_ID_MAX + 24];
    char last[HIST_ID_MAX + 24];
    uint64_t updated_ns;
    int64_t dmsgs, din, dout, dcost;
    int priced;               /* dcost counts: a priced call was added */
    unsigned keys;            /* bit 0 user, 1 tenant, 2 agent: given to the row */
    int used, dirty;
};

struct hist_store {
    sqlite3 *db;
    const struct cost_price_table *prices; /* NULL: no cost */
    struct conv_ent *cache;   /* CONV_CACHE entries, open addressing */
    unsigned cached;
    sqlite3_stmt *st[ST__COUNT];
    unsigned flags;
    int in_tx;
    struct hist_counts counts, counts_at_begin;
    struct sbuf clean;     /* a text made valid UTF-8 */
    char errmsg[256];
};

static int flush_convs(struct hist_store *s);
static void drop_convs(struct hist_store *s);

static int code_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW: return 0;
    case SQLITE_FULL: return -ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return -EBUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return -EBADMSG;
    case SQLITE_NOMEM: return -ENOMEM;
    case SQLITE_READONLY: return -EROFS;
    case SQLITE_CANTOPEN: return -EACCES;
    default: return -EIO;
    }
}

static int fail(struct hist_store *s, int rc)
{
    snprintf(s->errmsg, sizeof s->errmsg, "%s", sqlite3_errmsg(s->db));
    return code_of(rc);
}

const char *hist_store_errmsg(const struct hist_store *s)
{
    return s ? s->errmsg : "no store";
}

/* FNV-1a over n bytes of p, on from h (FNV_BASIS to start). */
#define FNV_BASIS UINT64_C(0xcbf29ce484222325)
static uint64_t fnv1a(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

uint64_t hist_msg_hash(const char *role, const char *text, size_t len)
{
    /* the role, its NUL (so "user"+"x" is not "use"+"rx"), the text */
    uint64_t h = fnv1a(FNV_BASIS, role ? role : "", role ? strlen(role) + 1 : 1);
    return fnv1a(h, text, len);
}

static int exec(struct hist_store *s, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return code_of(rc);
    }
    return 0;
}

/* Ends the transaction; wrote: it changed rows, so with fsync on the
 * commit waits for the disk (cbus_test_slow_disk: a test's slow one). */
static int commit_tx(struct hist_store *s, int wrote)
{
    if (wrote && (s->flags & HIST_STORE_FSYNC))
        cbus_test_slow_disk();
    return exec(s, "COMMIT");
}

static void load_counts(struct hist_store *s)
{
    sqlite3_stmt *q;
    memset(&s->counts, 0, sizeof s->counts);
    if (sqlite3_prepare_v2(s->db, "SELECT events, messages, duplicates, skipped FROM cursor",
                           -1, &q, NULL) != SQLITE_OK)
        return;
    if (sqlite3_step(q) == SQLITE_ROW) {
        s->counts.events = (uint64_t)sqlite3_column_int64(q, 0);
        s->counts.messages = (uint64_t)sqlite3_column_int64(q, 1);
        s->counts.duplicates = (uint64_t)sqlite3_column_int64(q, 2);
        s->counts.skipped = (uint64_t)sqlite3_column_int64(q, 3);
    }
    sqlite3_finalize(q);
}

/* The writer's side of opening: WAL and durability settings, the schema
 * created if new, and the statements it runs per event prepared once. */
static int open_writer(struct hist_store *s, const char *path, char *err, size_t errlen)
{
    /* WAL: readers (the CLI, the HTTP thread) never block the writer.
     * NORMAL: a commit survives a crash of the process, FULL also power
     * loss (an fsync per commit). */
    int r = exec(s, "PRAGMA journal_mode=WAL");
    if (!r)
        r = exec(s, (s->flags & HIST_STORE_FSYNC) ? "PRAGMA synchronous=FULL"
                                                  : "PRAGMA synchronous=NORMAL");
    /* 32 MiB of page cache: a batch's index pages stay in memory */
    if (!r)
        r = exec(s, "PRAGMA cache_size=-32768");
    if (!r)
        r = exec(s, "BEGIN IMMEDIATE");
    if (!r)
        r = exec(s, schema);
    if (!r) {
        char v[96];
        snprintf(v, sizeof v, "INSERT OR IGNORE INTO meta(k, v) VALUES ('schema', %d)",
                 SCHEMA_VERSION);
        r = exec(s, v);
    }
    if (!r)
        r = exec(s, "COMMIT");
    if (r) {
        snprintf(err, errlen, "%s: %s", path, s->errmsg);
        exec(s, "ROLLBACK");
        return r;
    }
    for (int i = 0; i < ST__COUNT; i++) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                                    NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
            return code_of(rc);
        }
    }
    return 0;
}

/* A reader of a file that is not a store, or of another schema, says so
 * at once. */
static int check_schema(struct hist_store *s, const char *path, char *err, size_t errlen)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(s->db, "SELECT v FROM meta WHERE k = 'schema'", -1, &q, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: not a cbus-history store (%s)", path, sqlite3_errmsg(s->db));
        return -EPROTO;
    }
    rc = sqlite3_step(q);
    int ver = rc == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
    sqlite3_finalize(q);
    if (ver != SCHEMA_VERSION) {
        snprintf(err, errlen, "%s: store schema %d, this cbus-history reads %d", path, ver,
                 SCHEMA_VERSION);
        return -EPROTO;
    }
    return 0;
}

int hist_store_open(struct hist_store **out, const char *path, unsigned flags, char *err,
                    size_t errlen)
{
    *out = NULL;
    struct hist_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    /* No memory statistics: otherwise every SQLite allocation takes a global
     * mutex (measured: a few % of the store's CPU).  Only possible before
     * the library is initialised; later calls fail harmlessly. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    s->flags = flags;
    sbuf_init(&s->clean);
    s->cache = calloc(CONV_CACHE, sizeof *s->cache);
    if (!s->cache) {
        free(s);
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    int oflags = (flags & HIST_STORE_RDONLY) ? SQLITE_OPEN_READONLY
                                             : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = sqlite3_open_v2(path, &s->db, oflags | SQLITE_OPEN_NOMUTEX, NULL);
    int r;
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        r = code_of(rc);
        goto err_close;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 5000);
    r = (flags & HIST_STORE_RDONLY) ? 0 : open_writer(s, path, err, errlen);
    if (!r)
        r = check_schema(s, path, err, errlen);
    if (r)
        goto err_close;
    load_counts(s);
    *out = s;
    return 0;
err_close:
    hist_store_close(s);
    return r;
}

void hist_store_close(struct hist_store *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    sbuf_free(&s->clean);
    free(s->cache);
    free(s);
}

int hist_store_cursor(struct hist_store *s, uint64_t *bus_id, struct cbus_position *pos)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(s->db, "SELECT bus_id, lanes, pos FROM cursor WHERE id = 1", -1,
                                &q, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc);
    rc = sqlite3_step(q);
    int r = -ENOENT;
    if (rc == SQLITE_ROW) {
        memset(pos, 0, sizeof *pos);
        *bus_id = (uint64_t)sqlite3_column_int64(q, 0);
        int64_t lanes = sqlite3_column_int64(q, 1);
        const void *blob = sqlite3_column_blob(q, 2);
        int n = sqlite3_column_bytes(q, 2);
        /* The file is ours, but check it as any input: a lane count the bus
         * cannot have, or a blob of another length, is refused. */
        if (lanes < 1 || lanes > CBUS_MAX_LANES || n != (int)(lanes * 8) || !blob) {
            snprintf(s->errmsg, sizeof s->errmsg, "cursor row is malformed (lanes %" PRId64
                     ", %d bytes)", lanes, n);
            r = -EBADMSG;
        } else {
            pos->lanes = (uint32_t)lanes;
            memcpy(pos->pos, blob, (size_t)n);
            r = 0;
        }
    } else if (rc != SQLITE_DONE) {
        r = fail(s, rc);
    }
    sqlite3_finalize(q);
    return r;
}

int hist_store_counts(struct hist_store *s, struct hist_counts *out)
{
    *out = s->counts;
    return 0;
}

int hist_store_begin(struct hist_store *s)
{
    if (s->in_tx)
        return 0;
    int r = exec(s, "BEGIN IMMEDIATE");
    if (r)
        return r;
    s->in_tx = 1;
    s->counts_at_begin = s->counts;
    /* Another connection (the CLI, the API) may have changed rows since the
     * last batch (forget, rename): read them again. */
    drop_convs(s);
    return 0;
}

static int step_done(struct hist_store *s, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    int r = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? 0 : fail(s, rc);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r;
}

int hist_store_commit(struct hist_store *s, uint64_t bus_id, const struct cbus_position *pos)
{
    if (!s->in_tx)
        return -EINVAL;
    int r = flush_convs(s);
    if (r)
        return r;
    sqlite3_stmt *st = s->st[ST_CURSOR_PUT];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)bus_id);
    sqlite3_bind_int64(st, 2, pos->lanes);
    sqlite3_bind_blob(st, 3, pos->pos, (int)(pos->lanes * sizeof pos->pos[0]), SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)s->counts.events);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)s->counts.messages);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)s->counts.duplicates);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)s->counts.skipped);
    r = step_done(s, st);
    if (!r)
        r = commit_tx(s, 1);
    if (!r)
        s->in_tx = 0;
    return r;
}

void hist_store_rollback(struct hist_store *s)
{
    if (!s->in_tx)
        return;
    if (sqlite3_get_autocommit(s->db) == 0)
        exec(s, "ROLLBACK");
    s->in_tx = 0;
    drop_convs(s);
    s->counts = s->counts_at_begin;
}

void hist_store_set_prices(struct hist_store *s, const struct cost_price_table *t)
{
    s->prices = t;
}

const struct cost_price_table *hist_store_prices(const struct hist_store *s)
{
    return s->prices;
}

void hist_store_skip(struct hist_store *s)
{
    s->counts.skipped++;
}

static void bind_opt(sqlite3_stmt *st, int i, const char *v)
{
    if (v && *v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static uint64_t str_hash(const char *p)
{
    return fnv1a(FNV_BASIS, p, strlen(p));
}

/* Writes the cached changes of every conversation.  Entries stay (their
 * last message is still right); deltas go to zero. */
static int flush_convs(struct hist_store *s)
{
    for (unsigned i = 0; s->cache && i < CONV_CACHE && s->cached; i++) {
        struct conv_ent *e = &s->cache[i];
        if (!e->used || !e->dirty)
            continue;
        sqlite3_stmt *st = s->st[ST_CONV_AFTER_MSG];
        sqlite3_bind_text(st, 1, e->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, e->dmsgs);
        bind_opt(st, 3, e->last);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)e->updated_ns);
        sqlite3_bind_int64(st, 5, e->din);
        sqlite3_bind_int64(st, 6, e->dout);
        sqlite3_bind_int(st, 7, e->priced);
        sqlite3_bind_int64(st, 8, e->dcost);
        int r = step_done(s, st);
        if (r)
            return r;
        e->dmsgs = e->din = e->dout = e->dcost = 0;
        e->priced = 0;
        e->dirty = 0;
    }
    return 0;
}

/* Forgets the cache (rollback: the rows it described are gone). */
static void drop_convs(struct hist_store *s)
{
    if (s->cache)
        memset(s->cache, 0, CONV_CACHE * sizeof *s->cache);
    s->cached = 0;
}

/* The cache entry of conv, or NULL (not cached: *slot is where it goes). */
static struct conv_ent *conv_find(struct hist_store *s, const char *conv, unsigned *slot)
{
    unsigned i = (unsigned)(str_hash(conv) % CONV_CACHE);
    for (unsigned n = 0; n < CONV_CACHE; n++, i = (i + 1) % CONV_CACHE) {
        struct conv_ent *e = &s->cache[i];
        if (!e->used) {
            *slot = i;
            return NULL;
        }
        if (!strcmp(e->id, conv))
            return e;
    }
    *slot = CONV_CACHE;
    return NULL;
}

static unsigned keys_of(const char *user, const char *tenant, const char *agent)
{
    return (user && *user ? 1u : 0) | (tenant && *tenant ? 2u : 0) | (agent && *agent ? 4u : 0);
}

/* The conversation's entry, creating the row (and reading its last
 * message) the first time a batch touches it. */
static int conv_get(struct hist_store *s, const char *conv, uint64_t ts_ns, const char *user,
                    const char *tenant, const char *agent, struct conv_ent **out)
{
    if (strlen(conv) >= sizeof s->cache[0].id)
        return -EINVAL;
    unsigned slot = CONV_CACHE; /* conv_find sets it; -O3 cannot tell */
    struct conv_ent *e = conv_find(s, conv, &slot);
    unsigned keys = keys_of(user, tenant, agent);
    if (e && (keys & ~e->keys) == 0) {
        if (ts_ns > e->updated_ns) {
            e->updated_ns = ts_ns;
            e->dirty = 1;
        }
        *out = e;
        return 0;
    }
    int r;
    if (!e && (slot == CONV_CACHE || s->cached >= CONV_CACHE * 3 / 4)) {
        /* full: write it all out and start over */
        if ((r = flush_convs(s)))
            return r;
        drop_convs(s);
        conv_find(s, conv, &slot);
    }
    sqlite3_stmt *st = s->st[ST_CONV_TOUCH];
    sqlite3_bind_text(st, 1, conv, -1, SQLITE_STATIC);
    bind_opt(st, 2, user);
    bind_opt(st, 3, tenant);
    bind_opt(st, 4, agent);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)ts_ns);
    if ((r = step_done(s, st)))
        return r;
    if (e) { /* a key the row may not have had: given now */
        e->keys |= keys;
        *out = e;
        return 0;
    }
    e = &s->cache[slot];
    memset(e, 0, sizeof *e);
    snprintf(e->id, sizeof e->id, "%s", conv);
    e->keys = keys;
    e->updated_ns = ts_ns;
    sqlite3_stmt *q = s->st[ST_CONV_LAST];
    sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW && sqlite3_column_text(q, 0))
        snprintf(e->last, sizeof e->last, "%s", (const char *)sqlite3_column_text(q, 0));
    else if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        r = fail(s, rc);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    if (r)
        return r;
    e->used = 1;
    s->cached++;
    *out = e;
    return 0;
}

/* Outside a batch each call is its own statement: write at once. */
static int settle(struct hist_store *s, int r)
{
    if (!r && !s->in_tx)
        r = flush_convs(s);
    return r;
}

int hist_store_conv_touch(struct hist_store *s, const char *conv, uint64_t ts_ns, const char *user,
                          const char *tenant, const char *agent)
{
    struct conv_ent *e;
    return settle(s, conv_get(s, conv, ts_ns, user, tenant, agent, &e));
}

int hist_store_message(struct hist_store *s, const struct hist_msg *m)
{
    if (!m->conv || !*m->conv || !m->id || !*m->id || !m->role)
        return -EINVAL;
    if (strlen(m->id) >= sizeof s->cache[0].last)
        return -EINVAL;
    struct conv_ent *e;
    int r = conv_get(s, m->conv, m->ts_ns, m->user, m->tenant, m->agent, &e);
    if (r)
        return r;
    /* The parent: the caller's, else the conversation's last message. */
    const char *parent = m->parent ? m->parent : e->last[0] ? e->last : NULL;
    int valid = 1;
    size_t clen = cbus_utf8_clean_len(m->text ? m->text : "", m->text_len, &valid);
    (void)clen;
    sqlite3_stmt *st = s->st[ST_MSG_INSERT];
    sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->conv, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, m->role, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, m->kind ? m->kind : "message", -1, SQLITE_STATIC);
    bind_opt(st, 5, m->name);
    if (valid) {
        sqlite3_bind_text(st, 6, m->text ? m->text : "", (int)m->text_len, SQLITE_STATIC);
        sqlite3_bind_null(st, 7);
    } else {
        /* Bytes that are not UTF-8: the text gets U+FFFD for them (search,
         * JSON), raw keeps them exactly. */
        sbuf_reset(&s->clean);
        sbuf_utf8_clean(&s->clean, m->text, m->text_len);
        if (s->clean.failed)
            return -ENOMEM;
        sqlite3_bind_text(st, 6, s->clean.data, (int)s->clean.len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 7, m->text, (int)m->text_len, SQLITE_STATIC);
    }
    bind_opt(st, 8, parent);
    bind_opt(st, 9, m->model);
    if (m->input_tokens >= 0)
        sqlite3_bind_int64(st, 10, m->input_tokens);
    if (m->output_tokens >= 0)
        sqlite3_bind_int64(st, 11, m->output_tokens);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)m->ts_ns);
    bind_opt(st, 13, m->run_id);
    bind_opt(st, 14, m->trace_id);
    bind_opt(st, 15, m->metadata);
    sqlite3_bind_int64(st, 16, (sqlite3_int64)m->hash);
    if (m->priced)
        sqlite3_bind_int64(st, 17, m->cost_pico);
    r = step_done(s, st);
    if (r)
        return r;
    if (sqlite3_changes(s->db) == 0) {
        s->counts.duplicates++;
        return 0;
    }
    s->counts.messages++;
    snprintf(e->last, sizeof e->last, "%s", m->id);
    e->dmsgs++;
    e->dirty = 1;
    return settle(s, 0);
}

int hist_store_count_hash(struct hist_store *s, const char *conv, uint64_t hash, uint64_t *n)
{
    sqlite3_stmt *q = s->st[ST_COUNT_HASH];
    sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)hash);
    int rc = sqlite3_step(q);
    int r = 0;
    if (rc == SQLITE_ROW)
        *n = (uint64_t)sqlite3_column_int64(q, 0);
    else
        r = fail(s, rc);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return r;
}

int hist_store_last_hash(struct hist_store *s, const char *conv, uint64_t *hash)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(s->db, "SELECT hash FROM messages WHERE conv = ?1"
                                       " ORDER BY seq DESC LIMIT 1", -1, &q, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc);
    sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
    rc = sqlite3_step(q);
    int r = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : fail(s, rc);
    if (rc == SQLITE_ROW)
        *hash = (uint64_t)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return r;
}

int hist_store_has_message(struct hist_store *s, const char *conv, const char *id)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(s->db, "SELECT 1 FROM messages WHERE conv = ?1 AND id = ?2", -1,
                                &q, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc);
    sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(q);
    int r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : fail(s, rc);
    sqlite3_finalize(q);
    return r;
}

void hist_store_count_event(struct hist_store *s)
{
    s->counts.events++;
}

int hist_store_add_usage(struct hist_store *s, const char *conv, int64_t in, int64_t out,
                         int64_t cost_pico)
{
    unsigned slot;
    struct conv_ent *e = conv_find(s, conv, &slot);
    if (!e) { /* not touched in this batch: straight to the row */
        sqlite3_stmt *st = s->st[ST_ADD_USAGE];
        sqlite3_bind_text(st, 1, conv, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, in > 0 ? in : 0);
        sqlite3_bind_int64(st, 3, out > 0 ? out : 0);
        sqlite3_bind_int(st, 4, cost_pico >= 0);
        sqlite3_bind_int64(st, 5, cost_pico >= 0 ? cost_pico : 0);
        return step_done(s, st);
    }
    e->din += in > 0 ? in : 0;
    e->dout += out > 0 ? out : 0;
    if (cost_pico >= 0) {
        e->dcost += cost_pico;
        e->priced = 1;
    }
    e->dirty = 1;
    return settle(s, 0);
}

/* One statement with text arguments, in the batch or on its own.  Returns
 * 0 or the codes; *changes gets sqlite3_changes(). */
static int run(struct hist_store *s, const char *sql, int *changes, int nargs, ...)
{
    /* the rows must hold what the batch did so far */
    int r0 = flush_convs(s);
    if (r0)
        return r0;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc);
    va_list ap;
    va_start(ap, nargs);
    for (int i = 1; i <= nargs; i++) {
        const char *v = va_arg(ap, const char *);
        if (v)
            sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    }
    va_end(ap);
    rc = sqlite3_step(st);
    int r = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? 0 : fail(s, rc);
    if (changes)
        *changes = sqlite3_changes(s->db);
    sqlite3_finalize(st);
    return r;
}

static void ns_text(char *out, size_t len, uint64_t ns)
{
    snprintf(out, len, "%" PRIu64, ns);
}

/* Sets a conversation's column (sql: "UPDATE ... SET col = ?2, updated_ns
 * = max(updated_ns, ?3) WHERE id = ?1") to v at ts_ns: 0, -ENOENT (no
 * such conversation) or the codes. */
static int conv_set(struct hist_store *s, const char *sql, const char *conv, const char *v,
                    uint64_t ts_ns)
{
    char ts[24];
    ns_text(ts, sizeof ts, ts_ns);
    int changes = 0;
    int r = run(s, sql, &changes, 3, conv, v, ts);
    return r ? r : changes ? 0 : -ENOENT;
}

int hist_store_rename(struct hist_store *s, const char *conv, const char *title, uint64_t ts_ns)
{
    if (!conv || !*conv || !title)
        return -EINVAL;
    return conv_set(s, "UPDATE conversations SET title = ?2, updated_ns = max(updated_ns, ?3)"
                       " WHERE id = ?1", conv, title, ts_ns);
}

int hist_store_set_title_if_none(struct hist_store *s, const char *conv, const char *title)
{
    return run(s, "UPDATE conversations SET title = ?2 WHERE id = ?1 AND title IS NULL", NULL, 2,
               conv, title);
}

int hist_store_set_state(struct hist_store *s, const char *conv, const char *state, uint64_t ts_ns)
{
    if (!conv || !*conv || !state || !*state)
        return -EINVAL;
    return conv_set(s, "UPDATE conversations SET state = ?2, updated_ns = max(updated_ns, ?3)"
                       " WHERE id = ?1", conv, state, ts_ns);
}

/* Deletes the conversations `where` selects (one text argument) and their
 * messages, in one transaction; then makes the deleted text unreadable in
 * the file: secure_delete zeroes freed pages, and the WAL (which still holds
 * the old pages) is checkpointed and truncated. */
static int delete_where(struct hist_store *s, const char *where, const char *arg, uint64_t *convs,
                        uint64_t *msgs)
{
    char sql[256];
    int nm = 0, nc = 0;
    int r = exec(s, "PRAGMA secure_delete=ON");
    if (!r)
        r = exec(s, "BEGIN IMMEDIATE");
    if (r)
        return r;
    snprintf(sql, sizeof sql, "DELETE FROM messages WHERE conv IN (SELECT id FROM conversations"
                              " WHERE %s)", where);
    r = run(s, sql, &nm, 1, arg);
    if (!r) {
        snprintf(sql, sizeof sql, "DELETE FROM conversations WHERE %s", where);
        r = run(s, sql, &nc, 1, arg);
    }
    if (!r)
        r = commit_tx(s, nm || nc);
    if (r) {
        exec(s, "ROLLBACK");
        return r;
    }
    if (!(s->flags & HIST_STORE_RDONLY))
        exec(s, "PRAGMA wal_checkpoint(TRUNCATE)");
    if (convs)
        *convs = (uint64_t)nc;
    if (msgs)
        *msgs = (uint64_t)nm;
    return 0;
}

int hist_store_expire(struct hist_store *s, uint64_t before_ns, uint64_t *convs, uint64_t *msgs)
{
    char ts[24];
    ns_text(ts, sizeof ts, before_ns);
    return delete_where(s, "updated_ns < CAST(?1 AS INTEGER)", ts, convs, msgs);
}

int hist_store_forget(struct hist_store *s, const char *user, uint64_t *convs, uint64_t *msgs)
{
    if (!user || !*user)
        return -EINVAL;
    return delete_where(s, "user = ?1", user, convs, msgs);
}

/* ---- reading ------------------------------------------------------------ */

static void iso_time(char *out, size_t len, uint64_t ns)
{
    time_t t = (time_t)(ns / 1000000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ns / 1000000u % 1000u));
}

static const char *col(sqlite3_stmt *q, int i)
{
    return (const char *)sqlite3_column_text(q, i);
}

static void json_col(struct sbuf *b, sqlite3_stmt *q, int i)
{
    const char *v = col(q, i);
    if (v)
        sbuf_json_str(b, v, (size_t)sqlite3_column_bytes(q, i));
    else
        sbuf_puts(b, "null");
}

static void json_int_col(struct sbuf *b, sqlite3_stmt *q, int i)
{
    if (sqlite3_column_type(q, i) == SQLITE_NULL)
        sbuf_puts(b, "null");
    else
        sbuf_printf(b, "%lld", (long long)sqlite3_column_int64(q, i));
}

static void human_col(struct sbuf *b, sqlite3_stmt *q, int i, const char *none)
{
    const char *v = col(q, i);
    if (v)
        sbuf_human_str(b, v, (size_t)sqlite3_column_bytes(q, i));
    else
        sbuf_puts(b, none);
}

#define CONV_COLS "id, title, user, tenant, agent, created_ns, updated_ns, state, messages," \
                  " input_tokens, output_tokens, cost_pico, last_msg"

/* A pico-dollar column as an exact decimal USD number, or null. */
static void json_usd_col(struct sbuf *b, sqlite3_stmt *q, int i)
{
    if (sqlite3_column_type(q, i) == SQLITE_NULL) {
        sbuf_puts(b, "null");
        return;
    }
    char usd[64];
    int64_t v = sqlite3_column_int64(q, i);
    cost_pico_format_usd(usd, sizeof usd, (cost_u128)(v > 0 ? v : 0));
    sbuf_puts(b, usd);
}

/* How a column is shown in JSON. */
enum col_as {
    AS_STR,   /* a JSON string, or null */
    AS_INT,   /* a number, or null */
    AS_TIME,  /* an ns timestamp as an ISO 8601 string */
    AS_USD,   /* pico-dollars as an exact decimal number, or null */
    AS_SET,   /* true unless the column is NULL */
    AS_RAW,   /* JSON the store wrote itself (ingest.c's metadata object), or null */
};

struct json_field {
    const char *key;
    int col;
    enum col_as as;
};

/* One row as a JSON object of fields, in their order. */
static void json_row(struct sbuf *b, sqlite3_stmt *q, const struct json_field *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sbuf_puts(b, i ? ",\"" : "{\"");
        sbuf_puts(b, f[i].key);
        sbuf_puts(b, "\":");
        int c = f[i].col;
        switch (f[i].as) {
        case AS_STR: json_col(b, q, c); break;
        case AS_INT: json_int_col(b, q, c); break;
        case AS_USD: json_usd_col(b, q, c); break;
        case AS_SET: sbuf_puts(b, sqlite3_column_type(q, c) == SQLITE_NULL ? "false" : "true"); break;
        case AS_TIME: {
            char t[96];
            iso_time(t, sizeof t, (uint64_t)sqlite3_column_int64(q, c));
            sbuf_printf(b, "\"%s\"", t);
            break;
        }
        case AS_RAW: {
            const char *v = col(q, c);
            sbuf_puts(b, v ? v : "null");
            break;
        }
        }
    }
    sbuf_puts(b, "}");
}

#define JSON_ROW(b, q, fields) json_row((b), (q), (fields), sizeof(fields) / sizeof((fields)[0]))

/* A CONV_COLS row. */
static void conv_json(struct sbuf *b, sqlite3_stmt *q)
{
    static const struct json_field f[] = {
        {"id", 0, AS_STR},           {"title", 1, AS_STR},         {"user", 2, AS_STR},
        {"tenant", 3, AS_STR},       {"agent", 4, AS_STR},         {"created", 5, AS_TIME},
        {"updated", 6, AS_TIME},     {"created_ns", 5, AS_INT},    {"updated_ns", 6, AS_INT},
        {"state", 7, AS_STR},        {"messages", 8, AS_INT},      {"input_tokens", 9, AS_INT},
        {"output_tokens", 10, AS_INT}, {"cost_usd", 11, AS_USD},   {"last_message", 12, AS_STR},
    };
    JSON_ROW(b, q, f);
}

static void conv_human(struct sbuf *b, sqlite3_stmt *q, int long_form)
{
    char t2[96];
    iso_time(t2, sizeof t2, (uint64_t)sqlite3_column_int64(q, 6));
    human_col(b, q, 0, "-");
    sbuf_puts(b, "  ");
    if (col(q, 1)) {
        sbuf_puts(b, "\"");
        human_col(b, q, 1, "");
        sbuf_puts(b, "\"  ");
    }
    sbuf_puts(b, "user ");
    human_col(b, q, 2, "-");
    if (long_form) {
        sbuf_puts(b, "  tenant ");
        human_col(b, q, 3, "-");
        sbuf_puts(b, "  agent ");
        human_col(b, q, 4, "-");
    }
    sbuf_puts(b, "  ");
    human_col(b, q, 7, "-");
    sbuf_printf(b, "  %lld messages  %lld in / %lld out tokens", (long long)sqlite3_column_int64(q, 8),
                (long long)sqlite3_column_int64(q, 9), (long long)sqlite3_column_int64(q, 10));
    if (sqlite3_column_type(q, 11) != SQLITE_NULL) {
        sbuf_puts(b, "  $");
        json_usd_col(b, q, 11);
    }
    sbuf_printf(b, "  updated %s\n", t2);
}

typedef void (*row_fn)(struct sbuf *b, sqlite3_stmt *q);

/* Renders every row q steps to, each by row_json (comma-separated) or
 * row_human, then finalizes q.  Returns 0 or the codes. */
static int render_rows(struct hist_store *s, sqlite3_stmt *q, int json, struct sbuf *b,
                       row_fn row_json, row_fn row_human)
{
    int rc, n = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (json && n++)
            sbuf_puts(b, ",");
        (json ? row_json : row_human)(b, q);
    }
    int r = rc == SQLITE_DONE ? 0 : fail(s, rc);
    sqlite3_finalize(q);
    return r;
}

static void conv_human_short(struct sbuf *b, sqlite3_stmt *q)
{
    conv_human(b, q, 0);
}

int hist_render_list(struct hist_store *s, const struct hist_list_q *qy, int json, struct sbuf *b)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT " CONV_COLS " FROM conversations WHERE (?1 IS NULL OR"
                                " user = ?1) AND updated_ns >= ?2 ORDER BY updated_ns DESC, id"
                                " LIMIT ?3", -1, &q, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc);
    if (qy->user)
        sqlite3_bind_text(q, 1, qy->user, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)qy->since_ns);
    sqlite3_bind_int64(q, 3, qy->limit ? qy->limit : 100);
    if (json)
        sbuf_puts(b, "{\"conversations\":[");
    int r = render_rows(s, q, json, b, conv_json, conv_human_short);
    if (json)
        sbuf_puts(b, "]}\n");
    return r ? r : b->failed ? -ENOMEM : 0;
}

#define MSG_COLS "seq, id, role, kind, name, text, raw, parent, model, input_tokens," \
                 " output_tokens, ts_ns, run_id, trace_id, metadata, cost_pico"

/* A MSG_COLS row. */
static void msg_json(struct sbuf *b, sqlite3_stmt *q)
{
    static const struct json_field f[] = {
        {"seq", 0, AS_INT},          {"id", 1, AS_STR},            {"role", 2, AS_STR},
        {"kind", 3, AS_STR},         {"name", 4, AS_STR},          {"text", 5, AS_STR},
        /* The text had bytes that are not UTF-8: they read U+FFFD in
         * text; the exact bytes are in the store's raw column. */
        {"text_replaced", 6, AS_SET}, {"parent", 7, AS_STR},       {"model", 8, AS_STR},
        {"input_tokens", 9, AS_INT}, {"output_tokens", 10, AS_INT}, {"time", 11, AS_TIME},
        {"ts_ns", 11, AS_INT},       {"run_id", 12, AS_STR},       {"trace_id", 13, AS_STR},
        {"metadata", 14, AS_RAW},    {"cost_usd", 15, AS_USD},
    };
    JSON_ROW(b, q, f);
}

static void msg_human(struct sbuf *b, sqlite3_stmt *q)
{
    char t[96];
    iso_time(t, sizeof t, (uint64_t)sqlite3_column_int64(q, 11));
    sbuf_printf(b, "  [%lld] %s  ", (long long)sqlite3_column_int64(q, 0), t);
    human_col(b, q, 2, "?");
    const char *kind = col(q, 3);
    if (kind && strcmp(kind, "message")) {
        sbuf_puts(b, " ");
        human_col(b, q, 3, "");
    }
    if (col(q, 4)) {
        sbuf_puts(b, " ");
        human_col(b, q, 4, "");
    }
    sbuf_puts(b, "  id ");
    human_col(b, q, 1, "-");
    if (col(q, 7)) {
        sbuf_puts(b, "  parent ");
        human_col(b, q, 7, "-");
    }
    if (col(q, 8)) {
        sbuf_puts(b, "  model ");
        human_col(b, q, 8, "");
    }
    if (sqlite3_column_type(q, 9) != SQLITE_NULL || sqlite3_column_type(q, 10) != SQLITE_NULL)
        sbuf_printf(b, "  tokens %lld/%lld", (long long)sqlite3_column_int64(q, 9),
                    (long long)sqlite3_column_int64(q, 10));
    if (sqlite3_column_type(q, 15) != SQLITE_NULL) {
        sbuf_puts(b, "  $");
        json_usd_col(b, q, 15);
    }
    sbuf_puts(b, "\n    ");
    /* The exact bytes, escaped, when the text was not UTF-8. */
    const void *raw = sqlite3_column_blob(q, 6);
    size_t len;
    const char *text;
    if (raw) {
        text = raw;
        len = (size_t)sqlite3_column_bytes(q, 6);
    } else {
        text = col(q, 5);
        len = (size_t)sqlite3_column_bytes(q, 5);
    }
    /* one line per line of text, indented */
    size_t start = 0;
    for (size_t i = 0; text && i <= len; i++) {
        if (i == len || text[i] == '\n') {
            sbuf_human_bytes(b, text + start, i - start);
            sbuf_puts(b, i == len ? "\n" : "\n    ");
            start = i + 1;
        }
    }
    if (!text)
        sbuf_puts(b, "\n");
}

static int conv_row(struct hist_store *s, const char *conv, sqlite3_stmt **out)
{
    int rc = sqlite3_prepare_v2(s->db, "SELECT " CONV_COLS " FROM conversations WHERE id = ?1", -1,
                                out, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc);
    sqlite3_bind_text(*out, 1, conv, -1, SQLITE_STATIC);
    rc = sqlite3_step(*out);
    if (rc == SQLITE_ROW)
        return 0;
    int r = rc == SQLITE_DONE ? -ENOENT : fail(s, rc);
    sqlite3_finalize(*out);
    *out = NULL;
    return r;
}

static int messages_into(struct hist_store *s, const char *conv, int json, struct sbuf *b)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(s->db, "SELECT " MSG_COLS " FROM messages WHERE conv = ?1"
                                       " ORDER BY seq", -1, &q, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc);
    sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
    if (json)
        sbuf_puts(b, "[");
    int r = render_rows(s, q, json, b, msg_json, msg_human);
    if (json)
        sbuf_puts(b, "]");
    return r;
}

int hist_render_conv(struct hist_store *s, const char *conv, int json, int with_messages,
                     struct sbuf *b)
{
    sqlite3_stmt *q;
    int r = conv_row(s, conv, &q);
    if (r)
        return r;
    if (json) {
        conv_json(b, q);
        if (with_messages) {
            b->len--; /* reopen the object */
            sbuf_puts(b, ",\"thread\":");
        }
    } else {
        sbuf_puts(b, "conversation ");
        conv_human(b, q, 1);
    }
    sqlite3_finalize(q);
    if (with_messages)
        r = messages_into(s, conv, json, b);
    if (json)
        sbuf_puts(b, with_messages ? "}\n" : "\n");
    return r ? r : b->failed ? -ENOMEM : 0;
}

int hist_render_messages(struct hist_store *s, const char *conv, struct sbuf *b)
{
    sqlite3_stmt *q;
    int r = conv_row(s, conv, &q);
    if (r)
        return r;
    sqlite3_finalize(q);
    sbuf_puts(b, "{\"conversation\":");
    sbuf_json_str(b, conv, (size_t)-1);
    sbuf_puts(b, ",\"messages\":");
    r = messages_into(s, conv, 1, b);
    sbuf_puts(b, "}\n");
    return r ? r : b->failed ? -ENOMEM : 0;
}

int hist_store_index(struct hist_store *s, unsigned max_rows, uint64_t *indexed, uint64_t *left)
{
    if (s->in_tx)
        return -EBUSY;
    int r = exec(s, "BEGIN IMMEDIATE");
    if (r)
        return r;
    sqlite3_stmt *q = NULL;
    int64_t from = 0, upto = 0, n = 0, rest = 0;
    int rc = sqlite3_prepare_v2(s->db, "SELECT (SELECT v FROM meta WHERE k = 'fts_seq'),"
                                       " (SELECT max(seq) FROM messages)", -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        from = sqlite3_column_int64(q, 0);
        upto = sqlite3_column_int64(q, 1);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_OK) {
        r = fail(s, rc);
        goto out;
    }
    if (upto > from) {
        /* the next max_rows rows after the last one indexed */
        int64_t last = from;
        rc = sqlite3_prepare_v2(s->db, "SELECT seq FROM messages WHERE seq > ?1 ORDER BY seq"
                                       " LIMIT 1 OFFSET ?2", -1, &q, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(q, 1, from);
            sqlite3_bind_int64(q, 2, (sqlite3_int64)max_rows - 1);
            rc = sqlite3_step(q);
            last = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : upto;
            rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        sqlite3_finalize(q);
        if (rc != SQLITE_OK) {
            r = fail(s, rc);
            goto out;
        }
        char sql[256];
        snprintf(sql, sizeof sql, "INSERT INTO messages_fts(rowid, text) SELECT seq, text FROM"
                                  " messages WHERE seq > %lld AND seq <= %lld", (long long)from,
                 (long long)last);
        if ((r = exec(s, sql)))
            goto out;
        n = sqlite3_changes(s->db);
        snprintf(sql, sizeof sql, "UPDATE meta SET v = %lld WHERE k = 'fts_seq'", (long long)last);
        if ((r = exec(s, sql)))
            goto out;
        rest = upto - last; /* seq has gaps after deletes: at most this many */
    }
    r = commit_tx(s, upto > from);
out:
    if (r)
        exec(s, "ROLLBACK");
    if (indexed)
        *indexed = r ? 0 : (uint64_t)n;
    if (left)
        *left = r ? 0 : (uint64_t)rest;
    return r;
}

int hist_render_stats(struct hist_store *s, struct sbuf *b)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT events, messages, duplicates, skipped, bus_id,"
                                " (SELECT count(*) FROM conversations), (SELECT count(*) FROM"
                                " messages WHERE seq > (SELECT v FROM meta WHERE k = 'fts_seq'))"
                                " FROM cursor WHERE id = 1",
                                -1, &q, NULL);
    if (rc != SQLITE_OK)
        return fail(s, rc);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        sbuf_printf(b, "{\"events\":%lld,\"messages_written\":%lld,\"duplicates\":%lld,"
                       "\"skipped\":%lld,\"bus_id\":\"%016llx\",\"conversations\":%lld,"
                       "\"not_yet_indexed\":%lld}\n",
                    (long long)sqlite3_column_int64(q, 0), (long long)sqlite3_column_int64(q, 1),
                    (long long)sqlite3_column_int64(q, 2), (long long)sqlite3_column_int64(q, 3),
                    (unsigned long long)sqlite3_column_int64(q, 4),
                    (long long)sqlite3_column_int64(q, 5), (long long)sqlite3_column_int64(q, 6));
    else if (rc == SQLITE_DONE)
        sbuf_puts(b, "{\"events\":0,\"messages_written\":0,\"duplicates\":0,\"skipped\":0,"
                     "\"bus_id\":null,\"conversations\":0,\"not_yet_indexed\":0}\n");
    int r = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail(s, rc);
    sqlite3_finalize(q);
    return r ? r : b->failed ? -ENOMEM : 0;
}

#define HIT_COLS "m.conv, m.id, m.role, m.ts_ns, snippet(messages_fts, 0, '[', ']', '...', 12)"

/* A HIT_COLS row. */
static void hit_json(struct sbuf *b, sqlite3_stmt *q)
{
    static const struct json_field f[] = {
        {"conversation", 0, AS_STR}, {"message", 1, AS_STR}, {"role", 2, AS_STR},
        {"ts_ns", 3, AS_INT},        {"snippet", 4, AS_STR},
    };
    JSON_ROW(b, q, f);
}

static void hit_human(struct sbuf *b, sqlite3_stmt *q)
{
    human_col(b, q, 0, "-");
    sbuf_puts(b, "  ");
    human_col(b, q, 1, "-");
    sbuf_puts(b, "  ");
    human_col(b, q, 2, "-");
    sbuf_puts(b, "  ");
    human_col(b, q, 4, "");
    sbuf_puts(b, "\n");
}

int hist_render_search(struct hist_store *s, const char *text, unsigned limit, int json,
                       struct sbuf *b)
{
    /* Everything stored is searchable: index what the daemon has not yet
     * (a reader that cannot write searches what is indexed). */
    if (!(s->flags & HIST_STORE_RDONLY) && !s->in_tx) {
        uint64_t n, left = 1;
        int ri = 0;
        while (left && !ri)
            ri = hist_store_index(s, 65536, &n, &left);
    }
    /* Every word of the text must occur (FTS5's implicit AND); each word is
     * quoted with its quotes doubled, so the text is never query syntax. */
    struct sbuf phrase;
    sbuf_init(&phrase);
    int words = 0;
    for (const char *p = text; *p;) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        sbuf_puts(&phrase, words++ ? " \"" : "\"");
        for (; *p && *p != ' ' && *p != '\t' && *p != '\n'; p++) {
            if (*p == '"')
                sbuf_puts(&phrase, "\"");
            sbuf_add(&phrase, p, 1);
        }
        sbuf_puts(&phrase, "\"");
    }
    if (!words)
        sbuf_puts(&phrase, "\"\"");
    if (phrase.failed) {
        sbuf_free(&phrase);
        return -ENOMEM;
    }
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(
        s->db,
        "SELECT " HIT_COLS " FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid"
        " WHERE messages_fts MATCH ?1 ORDER BY rank LIMIT ?2", -1, &q, NULL);
    if (rc != SQLITE_OK) {
        sbuf_free(&phrase);
        return fail(s, rc);
    }
    sqlite3_bind_text(q, 1, phrase.data, (int)phrase.len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, limit ? limit : 50);
    if (json)
        sbuf_puts(b, "{\"results\":[");
    int r = render_rows(s, q, json, b, hit_json, hit_human);
    sbuf_free(&phrase);
    if (json)
        sbuf_puts(b, "]}\n");
    return r ? r : b->failed ? -ENOMEM : 0;
}
