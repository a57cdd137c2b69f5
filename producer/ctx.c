/* Contexts from the library's allocator, and their size, for callers that
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
