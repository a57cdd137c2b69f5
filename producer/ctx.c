/* The context API: a run's keys, ids, tags and metadata, kept as the
 * event template an emit copies (cbus_ctx_init, the setters, cbus_ctx_child).
 *
 * Contexts from the library's allocator, and their size, for callers that
 * cannot or should not know struct cbus_ctx (FFI, other languages, C++ code
 * that wants a handle).  C callers may still keep a cbus_ctx on the stack:
 * the struct stays visible because an emit copies its event template in one
 * go, and a context per run on the stack costs no allocation. */
#include "producer_internal.h"

#include <stdlib.h>

CBUS_API size_t cbus_ctx_size(void)
{
    return sizeof(struct cbus_ctx);
}

CBUS_API cbus_ctx *cbus_ctx_new(void)
{
    cbus_ctx *ctx = malloc(sizeof *ctx);
    if (ctx)
        cbus_ctx_init(ctx);
    return ctx;
}

CBUS_API void cbus_ctx_free(cbus_ctx *ctx)
{
    if (!ctx)
        return;
    ctx->magic = 0; /* a use after free fails -EINVAL more often than not */
    free(ctx);
}

CBUS_API void cbus_ctx_init(cbus_ctx *ctx)
{
    if (!ctx)
        return;
    memset(ctx, 0, sizeof *ctx);
    cbus_run_id_new(ctx->tmpl.run_id);
    cbus_trace_id_new(ctx->tmpl.trace_id);
    ctx->tmpl.flags = CBUS_FLAG_HAS_TRACE;
    ctx->admit_hash[CBUS_SCOPE_GLOBAL] = cbus_admit_key_hash(CBUS_SCOPE_GLOBAL, "*");
    ctx->magic = CBUS_CTX_MAGIC;
}

/* Sets a key field: cut to the field (flagged), hashed whole (key_hash[key],
 * key < 0: not a key), and its admission-table hash cached (scope >= 0). */
static int set_key(cbus_ctx *ctx, char *field, size_t cap, uint16_t trunc, int scope, int key,
                   const char *value)
{
    if (!ctx || ctx->magic != CBUS_CTX_MAGIC)
        return -EINVAL;
    memset(field, 0, cap);
    ctx->tmpl.flags &= (uint16_t)~trunc;
    size_t len = value ? strlen(value) : 0;
    if (value)
        cbus__put_str(field, cap, value, len, &ctx->tmpl.flags, trunc);
    uint64_t whole = cbus_key_hash(value, len);
    if (key >= 0)
        ctx->tmpl.key_hash[key] = whole;
    /* By the whole value, as the deciding consumers publish (the event's
     * key_hash[]): two users that share the field's prefix stay apart. */
    if (scope >= 0)
        ctx->admit_hash[scope] = whole ? cbus_admit_hash((unsigned)scope, whole) : 0;
    return 0;
}

CBUS_API int cbus_ctx_set_provider(cbus_ctx *ctx, const char *v)
{
    return set_key(ctx, ctx ? ctx->tmpl.provider : NULL, CBUS_PROVIDER_LEN, CBUS_TRUNC_PROVIDER,
                   CBUS_SCOPE_PROVIDER, CBUS_KEY_PROVIDER, v);
}

CBUS_API int cbus_ctx_set_model(cbus_ctx *ctx, const char *v)
{
    return set_key(ctx, ctx ? ctx->tmpl.model : NULL, CBUS_MODEL_LEN, CBUS_TRUNC_MODEL,
                   CBUS_SCOPE_MODEL, CBUS_KEY_MODEL, v);
}

CBUS_API int cbus_ctx_set_user(cbus_ctx *ctx, const char *v)
{
    return set_key(ctx, ctx ? ctx->tmpl.user : NULL, CBUS_USER_LEN, CBUS_TRUNC_USER,
                   CBUS_SCOPE_USER, CBUS_KEY_USER, v);
}

CBUS_API int cbus_ctx_set_session(cbus_ctx *ctx, const char *v)
{
    return set_key(ctx, ctx ? ctx->tmpl.session : NULL, CBUS_SESSION_LEN, CBUS_TRUNC_SESSION,
                   CBUS_SCOPE_SESSION, CBUS_KEY_SESSION, v);
}

CBUS_API int cbus_ctx_set_agent(cbus_ctx *ctx, const char *v)
{
    return set_key(ctx, ctx ? ctx->tmpl.agent : NULL, CBUS_AGENT_LEN, CBUS_TRUNC_AGENT,
                   CBUS_SCOPE_AGENT, CBUS_KEY_AGENT, v);
}

CBUS_API int cbus_ctx_set_tenant(cbus_ctx *ctx, const char *v)
{
    return set_key(ctx, ctx ? ctx->tmpl.tenant : NULL, CBUS_TENANT_LEN, CBUS_TRUNC_TENANT,
                   CBUS_SCOPE_TENANT, CBUS_KEY_TENANT, v);
}

/* Appends n strings (each with its NUL) to area, or -E2BIG and counts. */
static int area_add(char *area, uint32_t cap, uint32_t *used, uint32_t *dropped,
                    const char *const *strs, unsigned n)
{
    size_t need = 0;
    for (unsigned i = 0; i < n; i++)
        need += strlen(strs[i]) + 1;
    if (need > cap - *used) {
        (*dropped)++;
        return -E2BIG;
    }
    for (unsigned i = 0; i < n; i++) {
        size_t l = strlen(strs[i]) + 1;
        memcpy(area + *used, strs[i], l);
        *used += (uint32_t)l;
    }
    return 0;
}

CBUS_API int cbus_ctx_add_tag(cbus_ctx *ctx, const char *tag)
{
    if (!ctx || ctx->magic != CBUS_CTX_MAGIC || !tag || !*tag)
        return -EINVAL;
    return area_add(ctx->tags, sizeof ctx->tags, &ctx->tags_len, &ctx->tags_dropped, &tag, 1);
}

CBUS_API int cbus_ctx_set_metadata(cbus_ctx *ctx, const char *key, const char *value)
{
    if (!ctx || ctx->magic != CBUS_CTX_MAGIC || !key || !*key || !value)
        return -EINVAL;
    const char *kv[2] = {key, value};
    return area_add(ctx->meta, sizeof ctx->meta, &ctx->meta_len, &ctx->meta_dropped, kv, 2);
}

CBUS_API void cbus_ctx_clear_tags(cbus_ctx *ctx)
{
    if (ctx && ctx->magic == CBUS_CTX_MAGIC)
        ctx->tags_len = ctx->tags_dropped = 0;
}

CBUS_API void cbus_ctx_clear_metadata(cbus_ctx *ctx)
{
    if (ctx && ctx->magic == CBUS_CTX_MAGIC)
        ctx->meta_len = ctx->meta_dropped = 0;
}

CBUS_API int cbus_ctx_set_request_id(cbus_ctx *ctx, const char *v)
{
    return set_key(ctx, ctx ? ctx->tmpl.request_id : NULL, CBUS_REQUEST_LEN, CBUS_TRUNC_REQUEST,
                   -1, -1, v);
}

static int set_id(cbus_ctx *ctx, uint8_t *field, const uint8_t id[16], uint16_t flag)
{
    if (!ctx || ctx->magic != CBUS_CTX_MAGIC)
        return -EINVAL;
    if (id) {
        memcpy(field, id, 16);
        ctx->tmpl.flags |= flag;
    } else {
        memset(field, 0, 16);
        ctx->tmpl.flags &= (uint16_t)~flag;
    }
    return 0;
}

CBUS_API int cbus_ctx_set_run_id(cbus_ctx *ctx, const uint8_t run_id[16])
{
    if (!run_id)
        return -EINVAL;
    return set_id(ctx, ctx ? ctx->tmpl.run_id : NULL, run_id, 0);
}

CBUS_API int cbus_ctx_set_parent_run_id(cbus_ctx *ctx, const uint8_t parent[16])
{
    return set_id(ctx, ctx ? ctx->tmpl.parent_run_id : NULL, parent, CBUS_FLAG_HAS_PARENT);
}

CBUS_API int cbus_ctx_set_trace_id(cbus_ctx *ctx, const uint8_t trace_id[16])
{
    return set_id(ctx, ctx ? ctx->tmpl.trace_id : NULL, trace_id, CBUS_FLAG_HAS_TRACE);
}

CBUS_API int cbus_ctx_child(cbus_ctx *child, const cbus_ctx *parent)
{
    if (!child || !parent || parent->magic != CBUS_CTX_MAGIC || child == parent)
        return -EINVAL;
    *child = *parent;
    memcpy(child->tmpl.parent_run_id, parent->tmpl.run_id, 16);
    child->tmpl.flags |= CBUS_FLAG_HAS_PARENT;
    cbus_run_id_new(child->tmpl.run_id);
    memset(child->tmpl.name, 0, sizeof child->tmpl.name);
    memset(child->tmpl.preview, 0, sizeof child->tmpl.preview);
    child->tmpl.flags &= (uint16_t)~(CBUS_TRUNC_NAME | CBUS_TRUNC_PREVIEW);
    child->run_start_ns = 0;
    child->first_token_ns = 0;
    child->token_index = 0;
    return 0;
}
