/* The LTTng-UST tracepoint provider of cbus-bench-compare: one llm_end event with
 * the fields a cbus llm_end carries (LTTng adds its own timestamp; pid and
 * tid come from the vpid/vtid contexts the session adds). */
#undef LTTNG_UST_TRACEPOINT_PROVIDER
#define LTTNG_UST_TRACEPOINT_PROVIDER cbus_bench

#undef LTTNG_UST_TRACEPOINT_INCLUDE
#define LTTNG_UST_TRACEPOINT_INCLUDE "./lttng_tp.h"

#if !defined(CBUS_BENCH_LTTNG_TP_H) || defined(LTTNG_UST_TRACEPOINT_HEADER_MULTI_READ)
#define CBUS_BENCH_LTTNG_TP_H

#include <cbus/layout.h>
#include <lttng/tracepoint.h>

LTTNG_UST_TRACEPOINT_EVENT(
    cbus_bench, llm_end,
    LTTNG_UST_TP_ARGS(const struct cbus_event *, t, const struct cbus_usage *, u, const char *,
                      preview),
    LTTNG_UST_TP_FIELDS(
        lttng_ust_field_integer(uint16_t, kind, CBUS_EV_LLM_END)
        lttng_ust_field_integer(uint16_t, flags, t->flags)
        lttng_ust_field_array(uint8_t, run_id, t->run_id, 16)
        lttng_ust_field_array(uint8_t, parent_run_id, t->parent_run_id, 16)
        lttng_ust_field_array(uint8_t, trace_id, t->trace_id, 16)
        lttng_ust_field_integer(uint32_t, input_tokens, u->input_tokens)
        lttng_ust_field_integer(uint32_t, output_tokens, u->output_tokens)
        lttng_ust_field_integer(uint32_t, cache_read_tokens, u->cache_read_tokens)
        lttng_ust_field_integer(uint32_t, cache_creation_tokens, u->cache_creation_tokens)
        lttng_ust_field_integer(uint32_t, reasoning_tokens, u->reasoning_tokens)
        lttng_ust_field_integer(uint8_t, usage_present, u->usage_present)
        lttng_ust_field_integer(uint8_t, finish_reason, u->finish_reason)
        lttng_ust_field_integer(uint16_t, generations, u->generations)
        lttng_ust_field_integer(uint64_t, duration_ns, u->duration_ns)
        lttng_ust_field_integer(uint64_t, ttft_ns, u->ttft_ns)
        lttng_ust_field_string(provider, t->provider)
        lttng_ust_field_string(model, t->model)
        lttng_ust_field_string(user, t->user)
        lttng_ust_field_string(session, t->session)
        lttng_ust_field_string(request_id, t->request_id)
        lttng_ust_field_string(preview, preview)))

#endif /* CBUS_BENCH_LTTNG_TP_H */

#include <lttng/tracepoint-event.h>
