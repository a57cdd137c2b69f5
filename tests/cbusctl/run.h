/* Running the real cbusctl binary from a test: argv in, exit status and
 * captured output back. */
#ifndef CBUSCTL_TEST_RUN_H
#define CBUSCTL_TEST_RUN_H

#include <sys/types.h>

struct run_result {
    int code;      /* exit code, or 128 + signal if killed, or -1 on timeout */
    char *out;     /* captured stdout, NUL-terminated */
    char *err;     /* captured stderr */
};

/* Runs CBUSCTL_PATH with the NULL-terminated arguments; waits at most
 * timeout_ms.  With as_uid >= 0 the child drops to that uid first. */
void run_cbusctl(struct run_result *r, unsigned timeout_ms, const char *arg, ...);
void run_cbusctl_as(struct run_result *r, int as_uid, unsigned timeout_ms, const char *const *argv);
void run_free(struct run_result *r);

/* Starts cbusctl in the background with stdout and stderr on pipes. */
struct bg_proc {
    pid_t pid;
    int out_fd;
    int err_fd;
    char *early;   /* stdout read by bg_wait_line, handed over by bg_finish */
    size_t early_len;
};
void bg_start(struct bg_proc *p, const char *arg, ...);
/* Reads its stdout until a full line has arrived (or timeout_ms passes);
 * returns 1 if one did.  What was read is kept for bg_finish. */
int bg_wait_line(struct bg_proc *p, unsigned timeout_ms);
/* Waits for exit (kills it after timeout_ms) and collects its output. */
void bg_finish(struct bg_proc *p, struct run_result *r, unsigned timeout_ms);

#endif
