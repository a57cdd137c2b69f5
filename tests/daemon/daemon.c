/* consumers/daemon/: %S in configs, the shipped configs, log lines, the bus
 * from the command line.  (The state dir and file tests are
 * tests/events/files.c, beside files.c.) */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "support.h"

static char tmp[256];

static void setup(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/cbus-common-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static void teardown(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(daemon_daemon, .init = setup, .fini = teardown);

static const char *slurp(const char *path)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

Test(daemon_daemon, config_percent_s_names_the_state_dir)
{
    cr_assert_eq(setenv("XDG_STATE_HOME", "/srv/state", 1), 0);
    struct cbus_cfg c;
    char err[512];
    cr_assert_eq(cbus_cfg_parse(&c, "t.ini", "[s]\na = %S/cost/%b\nb = %S\nc = x%S/y\n"
                                             "d = \"%S/quoted\"\ne = 100%S\n", err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(c.count, 5);
    cr_assert_str_eq(c.entries[0].value, "/srv/state/cbus/cost/%b");
    cr_assert_str_eq(c.entries[1].value, "/srv/state/cbus");
    cr_assert_str_eq(c.entries[2].value, "x%S/y"); /* only a leading %S is a path */
    cr_assert_str_eq(c.entries[3].value, "/srv/state/cbus/quoted");
    cr_assert_str_eq(c.entries[4].value, "100%S");
    cbus_cfg_free(&c);
}

/* The shipped configs (the build tree's, made from consumers/<d>/<d>.ini.in)
 * keep no state in /tmp (the item-16 report), and every @VAR@ of the
 * template was filled in. */
Test(daemon_daemon, shipped_configs_keep_no_state_in_tmp)
{
    static const char *const inis[] = {"cost/cost.ini", "export/export.ini",
                                       "ratelimit/ratelimit.ini", "audit/audit.ini",
                                       "history/history.ini", "web/web.ini"};
    for (size_t i = 0; i < sizeof inis / sizeof *inis; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/consumers/%s", CBUS_BINARY_DIR, inis[i]);
        struct cbus_cfg c;
        char err[512];
        cr_assert_eq(cbus_cfg_load(&c, p, err, sizeof err), 0, "%s", err);
        for (size_t k = 0; k < c.count; k++) {
            /* The checkout's own files (the price table) may be anywhere,
             * a clone in /tmp too: only what is left after them counts. */
            const char *v = c.entries[k].value;
            if (strncmp(v, CBUS_SOURCE_DIR "/", strlen(CBUS_SOURCE_DIR "/")) == 0)
                v += strlen(CBUS_SOURCE_DIR "/");
            cr_assert(!strstr(v, "/tmp"), "%s:%u: %s = %s", p, c.entries[k].line,
                      c.entries[k].key, c.entries[k].value);
            cr_assert(!strchr(c.entries[k].value, '@'), "%s:%u: %s = %s: not configured", p,
                      c.entries[k].line, c.entries[k].key, c.entries[k].value);
        }
        cbus_cfg_free(&c);
    }
}

/* Item 3 for logs: a producer string in a log message stays on its line
 * and cannot drive the terminal showing the log. */
Test(daemon_daemon, log_lines_escape_control_bytes)
{
    char path[400];
    snprintf(path, sizeof path, "%s/log", tmp);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    int saved = dup(2);
    cr_assert_geq(saved, 0);
    cr_assert_eq(dup2(fd, 2), 2);
    close(fd);
    cbus_log_init("cbus-test", CBUS_LOG_INFO);
    cbus_log_warn("key %s", "user=a\nfake line\x1b[2J\xc2\x9b \\x41");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    const char *text = slurp(path);
    cr_assert(strstr(text, "cbus-test warn: key user=a\\nfake line\\x1b[2J\\u009b \\x41\n"), "%s", text);
    cr_assert_eq(strchr(text, '\n'), text + strlen(text) - 1, "one line: %s", text);
}

/* --bus replaces the config's bus once validated; without either, a clear
 * error and exit code 2; a bad name leaves the config's bus as it was. */
Test(daemon_daemon, the_bus_comes_from_the_command_line_or_the_config)
{
    char bus[32] = "";
    cr_assert_eq(cbus_daemon_pick_bus(bus, sizeof bus, NULL), 2, "no bus anywhere");
    strcpy(bus, "fromcfg");
    cr_assert_eq(cbus_daemon_pick_bus(bus, sizeof bus, NULL), 0);
    cr_assert_str_eq(bus, "fromcfg");
    cr_assert_eq(cbus_daemon_pick_bus(bus, sizeof bus, "bad/name"), 2);
    cr_assert_str_eq(bus, "fromcfg", "a refused --bus changes nothing");
    cr_assert_eq(cbus_daemon_pick_bus(bus, 4, "long"), 2, "a name past the field is refused, not cut");
    cr_assert_eq(cbus_daemon_pick_bus(bus, sizeof bus, "prod-1"), 0);
    cr_assert_str_eq(bus, "prod-1");
}
