/* Processes for the cbus-export end-to-end tests and the benchmark: a
 * loopback cbus-collector, a cbus-export daemon, and reading their JSON
 * counters.  Binaries are found under CBUS_BINARY_DIR. */
#ifndef CBUS_EXPORT_HARNESS_H
#define CBUS_EXPORT_HARNESS_H

#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

/* In a forked child before exec: SIGKILL when parent (the test) dies. */
void child_die_with_parent(pid_t parent);
/* A whole JSON file (a status snapshot: several counters read at one instant),
 * or NULL; the caller cJSON_Delete()s it. */
cJSON *json_file(const char *path);

struct collector {
    pid_t pid;
    unsigned port;
    char dir[256];        /* work dir: port, stats, store/ */
    char stats[300];
    char store[300];
};

/* Starts cbus-collector with extra args (NULL-terminated list, may be NULL)
 * on port (0 = any).  Returns 0 or -1.  Waits until it listens. */
int collector_start(struct collector *c, const char *dir, unsigned port, const char *const *args);
/* SIGTERM and wait; the stats file is final afterwards. */
void collector_stop(struct collector *c);
/* A counter from the stats file (or -1); "post_ms.1" indexes an array. */
int64_t collector_stat(const struct collector *c, const char *key);

struct exporter_proc {
    pid_t pid;
    char config[300];
    char status[300];
};

/* Writes config text to dir/export.ini and starts cbus-export --bus bus with
 * it and --status-file dir/status.json.  Returns 0 or -1. */
int exporter_start(struct exporter_proc *e, const char *dir, const char *bus, const char *config_text);
/* SIGTERM and wait for exit; returns the exit status (-1 on timeout). */
int exporter_stop(struct exporter_proc *e, unsigned timeout_ms);
/* A counter from the status file: "export.sent_items", "consumer.lost", ... (or -1). */
int64_t exporter_stat(const struct exporter_proc *e, const char *path);

/* Polls until get(arg) >= want or timeout_ms passes; returns the last value. */
int64_t wait_for(int64_t (*get)(const void *arg, const char *key), const void *arg, const char *key,
                 int64_t want, unsigned timeout_ms);
int64_t get_collector(const void *arg, const char *key);
int64_t get_exporter(const void *arg, const char *key);

/* CPU seconds (user + system) a live child has used, from /proc/PID/stat. */
double proc_cpu_seconds(pid_t pid);

/* A TCP port nothing listens on right now. */
unsigned free_port(void);

#endif
