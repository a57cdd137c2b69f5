/* `cbus-audit verify`: walks the chain over the given files and names the
 * first bad record by file, byte offset and index. */
#include "audit.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "logdir.h"
#include "scan.h"

struct path_ent {
    char *path;
    int has_seq;
    uint64_t seq;
    size_t order;
};

/* file_seq from "...-NNNNNNNN.cbaudit", whatever the prefix. */
static int seq_from_name(const char *path, uint64_t *seq)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base), sl = strlen(AUDIT_SUFFIX);
    if (n <= sl || strcmp(base + n - sl, AUDIT_SUFFIX))
        return -1;
    const char *end = base + n - sl, *d = end;
    while (d > base && d[-1] >= '0' && d[-1] <= '9')
        d--;
    if (d == end || d == base || d[-1] != '-')
        return -1;
    uint64_t v = 0;
    for (; d < end; d++)
        v = v * 10 + (uint64_t)(*d - '0');
    *seq = v;
    return 0;
}

static int path_cmp(const void *a, const void *b)
{
    const struct path_ent *x = a, *y = b;
    if (x->has_seq && y->has_seq && x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static int push(struct path_ent **v, size_t *n, size_t *cap, const char *path)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        struct path_ent *nv = realloc(*v, *cap * sizeof *nv);
        if (!nv)
            return -ENOMEM;
        *v = nv;
    }
    struct path_ent *e = &(*v)[*n];
    e->path = strdup(path);
    if (!e->path)
        return -ENOMEM;
    e->has_seq = seq_from_name(path, &e->seq) == 0;
    e->order = *n;
    (*n)++;
    return 0;
}

int audit_collect_paths(int argc, char **argv, char ***paths, size_t *n)
{
    struct path_ent *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    for (int i = 0; i < argc && !rc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            rc = -errno;
            fprintf(stderr, "cbus-audit: %s: %s\n", argv[i], strerror(errno));
            break;
        }
        if (!S_ISDIR(st.st_mode)) {
            rc = push(&v, &cnt, &cap, argv[i]);
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) {
            rc = -errno;
            fprintf(stderr, "cbus-audit: %s: %s\n", argv[i], strerror(errno));
            break;
        }
        size_t first = cnt;
        struct dirent *de;
        while (!rc && (de = readdir(d))) {
            size_t nl = strlen(de->d_name), sl = strlen(AUDIT_SUFFIX);
            if (nl <= sl || strcmp(de->d_name + nl - sl, AUDIT_SUFFIX))
                continue;
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", argv[i], de->d_name);
            rc = push(&v, &cnt, &cap, p);
        }
        closedir(d);
        /* Directory order is arbitrary: files of one directory go by name
         * (time, then file_seq) before the file_seq sort below. */
        for (size_t a = first; a < cnt; a++)
            for (size_t b = a + 1; b < cnt; b++)
                if (strcmp(v[b].path, v[a].path) < 0) {
                    struct path_ent t = v[a];
                    v[a] = v[b];
                    v[b] = t;
                }
        for (size_t a = first; a < cnt; a++)
            v[a].order = a;
    }
    if (rc) {
        for (size_t i = 0; i < cnt; i++)
            free(v[i].path);
        free(v);
        return rc == -ENOMEM ? (fprintf(stderr, "cbus-audit: out of memory\n"), rc) : rc;
    }
    /* Chain order is file_seq order; names without one keep their place. */
    int all_seq = 1;
    for (size_t i = 0; i < cnt; i++)
        all_seq &= v[i].has_seq;
    if (all_seq && cnt > 1)
        qsort(v, cnt, sizeof *v, path_cmp);
    char **out = calloc(cnt ? cnt : 1, sizeof *out);
    if (!out) {
        for (size_t i = 0; i < cnt; i++)
            free(v[i].path);
        free(v);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cnt; i++)
        out[i] = v[i].path;
    free(v);
    *paths = out;
    *n = cnt;
    return 0;
}

int audit_operand_paths(int argc, char **argv, void (*usage)(FILE *), char ***paths, size_t *n)
{
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    return audit_collect_paths(argc - optind, argv + optind, paths, n) ? 2 : 0;
}

void audit_paths_free(char **paths, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

static const char *base_name(const char *p)
{
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cbus-audit verify [-q] FILE|DIR...\n"
               "  Checks the hash chain over the files, in chain order (a directory\n"
               "  gives its *" AUDIT_SUFFIX " files), and that event ids leave no hole\n"
               "  without a gap record.  Exit 0: intact; 1: the first bad record\n"
               "  is printed as FILE: offset N, record index I (seq S): reason; 2: usage.\n");
}

int audit_verify_main(int argc, char **argv)
{
    int quiet = 0, opt;
    static const struct option longopts[] = {
        {"quiet", no_argument, NULL, 'q'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        if (opt == 'q') {
            quiet = 1;
        } else if (opt == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    char **paths;
    size_t n;
    if (audit_operand_paths(argc, argv, usage, &paths, &n))
        return 2;
    if (n == 0) {
        fprintf(stderr, "cbus-audit verify: no log files (*" AUDIT_SUFFIX ") given\n");
        audit_paths_free(paths, n);
        return 2;
    }
    struct audit_chain chain;
    if (audit_chain_init(&chain)) {
        fprintf(stderr, "cbus-audit verify: libcrypto: cannot set up SHA-256\n");
        audit_paths_free(paths, n);
        return 2;
    }
    /* Event ids too: a hole in the bus positions with no gap record is a
     * loss nobody recorded (or records deleted and the chain rebuilt). */
    struct audit_verify_state st = {.check_ids = 1};
    int status = 0;
    uint64_t first_seq = 0;
    int origin = 0;
    for (size_t i = 0; i < n && !status; i++) {
        struct audit_scan_result res;
        int rc = audit_scan_file(&chain, &st, paths[i], base_name(paths[i]), 1, NULL, NULL, &res);
        if (rc < 0) {
            fprintf(stderr, "cbus-audit verify: %s: %s\n", paths[i], strerror(-rc));
            status = 2;
            break;
        }
        if (i == 0 && res.has_header) {
            static const uint8_t zero[AUDIT_HASH_LEN];
            first_seq = res.hdr.first_seq;
            origin = memcmp(res.hdr.prev_hash, zero, AUDIT_HASH_LEN) == 0;
        }
        if (res.bad) {
            if (res.bad_index < 0)
                printf("%s: offset %zu, file header (next seq %llu): %s\n", paths[i],
                       res.bad_offset, (unsigned long long)res.bad_seq, res.why);
            else
                printf("%s: offset %zu, record index %lld (seq %llu): %s\n", paths[i],
                       res.bad_offset, (long long)res.bad_index,
                       (unsigned long long)res.bad_seq, res.why);
            status = 1;
        }
    }
    if (status == 0 && !quiet) {
        char hex[2 * AUDIT_HASH_LEN + 1];
        audit_hex(hex, st.hash, AUDIT_HASH_LEN);
        char gaps[128] = "no gaps in event ids";
        if (st.gaps)
            snprintf(gaps, sizeof gaps, "%llu recorded gap%s in event ids (%llu positions lost)",
                     (unsigned long long)st.gaps, st.gaps == 1 ? "" : "s",
                     (unsigned long long)st.gap_positions);
        if (st.records)
            printf("OK: %zu file%s, %llu records, seq %llu..%llu; chain %s; %s; last hash %s\n",
                   n, n == 1 ? "" : "s", (unsigned long long)st.records,
                   (unsigned long long)first_seq, (unsigned long long)st.next_seq - 1,
                   origin ? "starts at its origin"
                          : "continues from files not given (removed by retention?)",
                   gaps, hex);
        else
            printf("OK: %zu file%s, no records; last hash %s\n", n, n == 1 ? "" : "s", hex);
    }
    audit_chain_free(&chain);
    audit_paths_free(paths, n);
    return status;
}
