/* cbus-soak orchestrator internals: children, daemons, the run's settings. */
#ifndef CBUS_SOAK_ORCH_H
#define CBUS_SOAK_ORCH_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include <cbus/bus.h>

#include "soak.h"

enum child_kind { K_VERIFIER, K_PRODUCER, K_COST, K_AUDIT, K_EXPORT, K_RATELIMIT, K_COLLECTOR,
                  K__COUNT };
enum child_state { C_OFF, C_RUNNING, C_STOPPED, C_DEAD };
enum collector_mode { COLL_HEALTHY, COLL_FAIL_503, COLL_FAIL_429, COLL_DROP };

struct child {
    char name[32];
    enum child_kind kind;
    unsigned idx;              /* verifier index, producer slot */
    uint32_t instance;         /* producer: current st->prod[] index */
    pid_t pid;
    enum child_state state;
    uint64_t until_ns;         /* DEAD: restart then; STOPPED: continue then */
    uint64_t started_ns;
    enum collector_mode coll_mode;
    unsigned kills, stops_short, stops_long, faults, unexpected_exits, throttles;
    uint64_t longest_stop_ns, longest_dead_ns, stopped_at_ns, killed_at_ns;
};

struct soak_cfg {
    uint64_t duration_ns;
    double rate;               /* events/s over all producers */
    unsigned threads, procs, verifiers_lossless, verifiers_lossy;
    unsigned lanes;            /* of the bus: each producer thread takes one */
    uint64_t capacity;
    uint64_t stall_timeout_ns, lossless_wait_ns, wait_margin_ns;
    /* Test-only (--plant-gate-wait): the bus is created with this wait bound
     * while invariant 6 checks lossless_wait_ns, as if the library spun this
     * long in the gate.  0: off. */
    uint64_t plant_wait_ns;
    uint64_t chaos_mean_ns;    /* mean time between chaos actions */
    uint64_t seed;
    int keep, verbose, no_daemons;
    int slow_start;            /* --slow-start: verifier 0 slow for 2/3 of the run */
    const char *bin[K__COUNT]; /* daemon binaries (NULL or missing = skipped) */
    char self[PATH_MAX];
    char tmp[200];             /* the run's temp dir (short: paths are built under it) */
    char state_path[256];
    char bus[32];
    unsigned port;             /* collector */
    unsigned faults;           /* F_* segment faults enabled */
    uint64_t fault_mean_ns;    /* mean time between segment faults */
    pid_t dead_pid;            /* a child killed and reaped (forged entries claim it) */
};

/* Segment faults (faults.c, --faults). */
enum { F_COUNTERS = 1u << 0, F_SLOT = 1u << 1, F_ENTRY = 1u << 2, F_TAIL = 1u << 3,
       F_TAIL_LARGE = 1u << 4, F_FORGE = 1u << 5, F_RECREATE = 1u << 6, F_TRUNCATE = 1u << 7 };

struct fault_stats {
    uint64_t counters, dropped_injected, untethered_injected;
    uint64_t slots;                          /* slot corruptions (request_id bytes) */
    uint64_t entries, entry_heartbeats;      /* consumer entry writes (heartbeat zeroed) */
    uint64_t tail_jumps, tail_positions;     /* positions added to tail, never claimed */
    uint64_t forged, forged_untethered, forged_counted, forged_evicted, forged_evicted_at_end;
    uint64_t forged_max_ns;                  /* longest a forged entry blocked producers */
    uint64_t recreations, truncations;
    uint64_t last_tail_jump_ns;
    uint64_t tail_positions_epoch[SOAK_MAX_EPOCH], dropped_injected_epoch[SOAK_MAX_EPOCH];
    uint64_t untethered_injected_epoch[SOAK_MAX_EPOCH];
};

extern struct soak_cfg G;
extern struct soak_shared *ST;

/* children.c */
int child_spawn(struct child *c);
void child_kill(struct child *c);          /* SIGKILL and reap */
void child_term(struct child *c, int *status, uint64_t timeout_ns); /* SIGTERM, wait, else SIGKILL */
void child_log_tail(const struct child *c, unsigned lines);
const char *kind_name(enum child_kind k);

/* daemons.c */
int daemons_write_configs(void);
int daemons_cost_check(uint64_t final_bus_id, uint64_t final_tail, char *msg, size_t len, int *excused);
int daemons_audit_verify(char *msg, size_t len);
int free_loopback_port(unsigned *port);

/* faults.c */
extern struct fault_stats FS;
void faults_set_bus(cbus_bus *bus);
void faults_act(uint64_t now);
void faults_tick(uint64_t now, uint64_t sched_delay);
void faults_heal(void);
int faults_corrupted(uint64_t pos); /* 1: slot bytes at pos were written by the soak */

/* report helpers (main.c) */
void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t rnd(void);
uint64_t rnd_range(uint64_t lo, uint64_t hi);

#endif
