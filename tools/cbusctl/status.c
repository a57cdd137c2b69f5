/* cbusctl status [FILE|DIR]... [--json]: the daemons' status files, one
 * view for all of them.  Every daemon writes the same envelope
 * (consumers/daemon/status.h); this reads it and shows each daemon's own
 * object as its scalar members.  Nothing in a status file is trusted: it
 * is parsed as JSON, every member is looked up by type, and every string
 * is made terminal-safe (keys come from producers). */
#include "cbusctl.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "files.h"
#include "sbuf.h"
#include "json_get.h"

#define STATUS_MAX_BYTES (16u << 20) /* a status file is small; refuse a huge one */
#define MAX_FILES 256

static const char *safe(char *out, size_t cap, const char *s)
{
    cbus_human_str(out, cap, s ? s : "", (size_t)-1);
    return out;
}

/* The whole file, NUL-terminated, or NULL with errno set. */
static char *read_small(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        errno = EISDIR;
        return NULL;
    }
    char *b;
    int r = cbus_read_file(path, STATUS_MAX_BYTES, &b, NULL);
    if (r)
        errno = -r;
    return r ? NULL : b;
}

/* A status document: an object with a string "daemon" and a number "pid". */
static cJSON *parse_status(const char *path, const char **why)
{
    char *text = read_small(path);
    if (!text) {
        *why = strerror(errno);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(j) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "daemon")) ||
        !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "pid"))) {
        cJSON_Delete(j);
        *why = "not a cbus daemon status file (no \"daemon\" and \"pid\")";
        return NULL;
    }
    return j;
}

static int is_true(const cJSON *o, const char *k)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* Seconds since the file's updated_realtime_ns (negative: a clock step). */
static double age_s(const cJSON *j)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((double)ts.tv_sec * 1e9 + (double)ts.tv_nsec - cbus_json_num(j, "updated_realtime_ns")) / 1e9;
}

/* running, stopped (a clean stop wrote running false), or gone (the file
 * says running but no such process: killed, or another machine's file). */
static const char *state_of(const cJSON *j)
{
    if (!is_true(j, "running"))
        return "stopped";
    double p = cbus_json_num(j, "pid");
    if (p >= 1 && p <= 4194304 && (kill((pid_t)p, 0) == 0 || errno == EPERM))
        return "running";
    return "gone";
}

static int envelope_member(const char *k)
{
    static const char *const env[] = {"daemon", "bus", "bus_id", "pid", "updated",
                                      "updated_realtime_ns", "running", "consumer"};
    for (size_t i = 0; i < sizeof env / sizeof env[0]; i++)
        if (!strcmp(k, env[i]))
            return 1;
    return 0;
}

/* An own object's scalar members, "key value" on wrapped lines; nested
 * objects one level down as parent.key; arrays counted. */
static void print_own(const char *name, const cJSON *o, const char *prefix, int *col)
{
    char s1[CBUS_HUMAN_MAX(128)], s2[CBUS_HUMAN_MAX(256)];
    const cJSON *v;
    cJSON_ArrayForEach(v, o)
    {
        char key[300];
        if (snprintf(key, sizeof key, "%s%s", prefix, safe(s1, sizeof s1, v->string)) < 0)
            continue;
        char val[CBUS_HUMAN_MAX(256) + 32];
        if (cJSON_IsObject(v)) {
            if (!prefix[0]) {
                char p[310];
                if (snprintf(p, sizeof p, "%s.", key) > 0)
                    print_own(name, v, p, col);
            }
            continue;
        }
        if (cJSON_IsNumber(v))
            snprintf(val, sizeof val, "%.17g", v->valuedouble);
        else if (cJSON_IsBool(v))
            snprintf(val, sizeof val, "%s", cJSON_IsTrue(v) ? "true" : "false");
        else if (cJSON_IsString(v))
            snprintf(val, sizeof val, "%s", safe(s2, sizeof s2, v->valuestring));
        else if (cJSON_IsArray(v))
            snprintf(val, sizeof val, "[%d]", cJSON_GetArraySize(v));
        else
            snprintf(val, sizeof val, "null");
        int w = (int)(strlen(key) + strlen(val) + 3);
        if (*col + w > 100) {
            printf("\n   ");
            *col = 3;
        }
        printf("  %s %s", key, val);
        *col += w;
    }
    (void)name;
}

static void print_text(const char *path, const cJSON *j)
{
    char a[CBUS_HUMAN_MAX(64)], b[CBUS_HUMAN_MAX(64)], c[CBUS_HUMAN_MAX(64)], p[CBUS_HUMAN_MAX(512)];
    printf("%s  pid %.0f  %s  updated %s (%.1f s ago)  %s\n",
           safe(a, sizeof a, cbus_json_str(j, "daemon", NULL)), cbus_json_num(j, "pid"), state_of(j),
           safe(b, sizeof b, cbus_json_str(j, "updated", NULL)), age_s(j), safe(p, sizeof p, path));
    if (cbus_json_str(j, "bus", NULL))
        printf("  bus %s (id %s)\n", safe(a, sizeof a, cbus_json_str(j, "bus", NULL)),
               safe(b, sizeof b, cbus_json_str(j, "bus_id", NULL)));
    const cJSON *cons = cJSON_GetObjectItemCaseSensitive(j, "consumer");
    if (cJSON_IsObject(cons))
        printf("  consumer %s, %s: consumed %.0f, lost %.0f, lag %.0f, read %.0f, committed %.0f, "
               "%s, re-attached %.0f\n",
               safe(a, sizeof a, cbus_json_str(cons, "name", NULL)),
               safe(c, sizeof c, cbus_json_str(cons, "mode", NULL)), cbus_json_num(cons, "consumed"),
               cbus_json_num(cons, "lost"), cbus_json_num(cons, "lag"), cbus_json_num(cons, "read_pos"),
               cbus_json_num(cons, "cursor"), is_true(cons, "tethered") ? "tethered" : "untethered",
               cbus_json_num(cons, "reattached"));
    const cJSON *v;
    cJSON_ArrayForEach(v, j)
    {
        if (!cJSON_IsObject(v) || envelope_member(v->string))
            continue;
        int col = (int)strlen(v->string) + 3;
        printf("  %s:", safe(a, sizeof a, v->string));
        print_own(v->string, v, "", &col);
        printf("\n");
    }
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* The status files in dir and its subdirectories one level down (the
 * state root holds cost/, export/, ratelimit/ ...): *.json files that are
 * status documents; others are skipped without a word. */
static void scan_dir(const char *dir, int depth, char **paths, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) && *n < MAX_FILES) {
        if (de->d_name[0] == '.')
            continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path)
            continue;
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth == 0) {
            scan_dir(path, 1, paths, n);
            continue;
        }
        if (!S_ISREG(st.st_mode) || !has_suffix(de->d_name, ".json"))
            continue;
        const char *why;
        cJSON *j = parse_status(path, &why);
        if (j)
            paths[(*n)++] = strdup(path);
        cJSON_Delete(j);
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cbusctl status [FILE|DIR]... [--json]\n"
               "  the daemons' status files (cbus-cost, cbus-export, cbus-audit,\n"
               "  cbus-ratelimit: one envelope); a DIR is searched one level down;\n"
               "  default: the daemons' state directory (XDG_STATE_HOME/cbus, ...)\n");
}

/* Collects the files named (or found under the directories named).
 * Returns EXIT_OK or EXIT_RUNTIME (a named file unreadable: said on stderr). */
static int collect(int argc, char **argv, char **paths, size_t *n)
{
    int rc = EXIT_OK;
    for (int i = 0; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            cli_error("status: %s: %s", argv[i], strerror(errno));
            rc = EXIT_RUNTIME;
            continue;
        }
        size_t before = *n;
        if (S_ISDIR(st.st_mode)) {
            scan_dir(argv[i], 0, paths, n);
            qsort(paths + before, *n - before, sizeof *paths, cmp_str);
            if (*n == before) {
                cli_error("status: %s: no daemon status files in it", argv[i]);
                rc = EXIT_RUNTIME;
            }
        } else if (*n < MAX_FILES) {
            paths[(*n)++] = strdup(argv[i]);
        }
    }
    return rc;
}

int cmd_status(int argc, char **argv)
{
    static const struct option lo[] = {{"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int json = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    char def[4096];
    char *dflt[1] = {def};
    int nargs = argc - optind;
    char **args = argv + optind;
    if (nargs == 0) {
        if (cbus_state_dir_default(def, sizeof def, NULL)) {
            cli_error("status: no state directory (set XDG_STATE_HOME or HOME, or name a FILE|DIR)");
            return EXIT_RUNTIME;
        }
        nargs = 1;
        args = dflt;
    }
    static char *paths[MAX_FILES];
    size_t n = 0;
    int rc = collect(nargs, args, paths, &n);
    cJSON *out = json ? cJSON_CreateArray() : NULL;
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        cJSON *j = paths[i] ? parse_status(paths[i], &why) : NULL;
        if (!j) {
            cli_error("status: %s: %s", paths[i] ? paths[i] : "?", why ? why : "out of memory");
            rc = EXIT_RUNTIME;
        } else if (json) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "file", paths[i]);
            cJSON_AddStringToObject(e, "state", state_of(j));
            cJSON_AddNumberToObject(e, "age_s", age_s(j));
            cJSON_AddItemToObject(e, "status", j);
            cJSON_AddItemToArray(out, e);
            j = NULL;
        } else {
            print_text(paths[i], j);
        }
        cJSON_Delete(j);
        free(paths[i]);
    }
    if (out) {
        char *s = cJSON_PrintUnformatted(out);
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(out);
    }
    return rc;
}
