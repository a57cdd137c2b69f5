/* Which answers are worth retrying, and when.
 *
 * Retried: 429, 502, 503, 504, and transport failures that mean the request
 * may not have arrived (connection refused or reset, timeout, empty reply).
 * Everything else is final: 2xx is delivered (a partialSuccess inside is
 * counted, not retried), other 4xx/5xx drop the batch and count it.
 */
#ifndef CBUS_EXPORT_RETRY_H
#define CBUS_EXPORT_RETRY_H

#include <stdint.h>
#include <time.h>

enum send_outcome {
    SEND_OK = 0,      /* 2xx */
    SEND_RETRY = 1,   /* try again later, keep the batch */
    SEND_REJECT = 2,  /* final failure: drop the batch, count it */
};

/* http_status 0 means no HTTP answer; curl_code is a CURLcode (0 = none). */
enum send_outcome retry_classify(long http_status, int curl_code);

/* Retry-After: delta seconds or an HTTP-date (RFC 9110 10.2.3), relative to
 * now (wall clock, seconds).  A date in the past is 0.  Returns 0 with *out_ns
 * set, or -EINVAL. */
int retry_after_parse(const char *value, time_t now, uint64_t *out_ns);

/* Exponential backoff with jitter: for attempt n (0 = first retry) a delay
 * uniformly drawn from [d/2, d] where d = min(max_ns, initial_ns * 2^n).
 * rnd is any 64-bit random value. */
uint64_t retry_backoff_ns(unsigned attempt, uint64_t initial_ns, uint64_t max_ns, uint64_t rnd);

/* Reads an OTLP ExportTraceServiceResponse body.  Returns 1 when it carries a
 * partialSuccess with rejectedSpans > 0 or an errorMessage (rejected and msg
 * filled), 0 when it does not (or is not JSON: the 2xx stands). */
int retry_partial_success(const char *body, size_t len, uint64_t *rejected, char *msg, size_t msglen);

/* The same for a protobuf ExportTraceServiceResponse {partial_success = 1
 * {rejected_spans = 1 (int64), error_message = 2}}, the answer to an
 * application/x-protobuf request.  Every length is checked against len (the
 * answer comes from the network, and may be cut at the transport's 8 KiB);
 * a body that is not such a message is 0, as is a negative count with no
 * message.  Control bytes in the message become spaces (it is logged). */
int retry_partial_success_pb(const void *body, size_t len, uint64_t *rejected, char *msg, size_t msglen);

#endif
