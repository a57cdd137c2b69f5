/* consumers/events/files.c: the daemons' private state directory and atomic
 * file replacement (issue 12 item 16): real directories, real owners, planted
 * symlinks.  (These tests were in tests/daemon/daemon.c, suite daemon_daemon,
 * until files.c moved to consumers/events/.) */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "files.h"
#include "support.h"

static char tmp[256];
static char why[8192];

static void setup(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/cbus-files-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static void teardown(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(events_files, .init = setup, .fini = teardown);

static void spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

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

Test(events_files, state_dir_is_created_private_with_parents)
{
    char d[400];
    snprintf(d, sizeof d, "%s/a/b/state", tmp);
    umask(0); /* the mode must not depend on the caller's umask being kind */
    cr_assert_eq(cbus_state_dir_prepare(d, 0700, why, sizeof why), 0, "%s", why);
    struct stat st;
    cr_assert_eq(stat(d, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    cr_assert_eq(st.st_mode & 07777, 0700);
    cr_assert_eq(st.st_uid, geteuid());
    /* again: an existing private directory is fine */
    cr_assert_eq(cbus_state_dir_prepare(d, 0700, why, sizeof why), 0, "%s", why);
}

Test(events_files, state_dir_writable_by_others_is_refused)
{
    char d[400];
    snprintf(d, sizeof d, "%s/open", tmp);
    cr_assert_eq(mkdir(d, 0700), 0);
    cr_assert_eq(chmod(d, 0777), 0);
    cr_assert_eq(cbus_state_dir_prepare(d, 0700, why, sizeof why), -EPERM);
    cr_assert(strstr(why, d) && strstr(why, "0777") && strstr(why, "group or others"), "%s", why);
    cr_assert_eq(chmod(d, 0770), 0); /* group-writable is as bad */
    cr_assert_eq(cbus_state_dir_prepare(d, 0700, why, sizeof why), -EPERM);
    cr_assert(strstr(why, "0770"), "%s", why);
    /* A directory below one that others can write to (not sticky) is not
     * private either: they could rename it away and put their own there. */
    char sub[450];
    snprintf(sub, sizeof sub, "%s/inner", d);
    cr_assert_eq(chmod(d, 0777), 0);
    cr_assert_eq(cbus_state_dir_prepare(sub, 0700, why, sizeof why), -EPERM);
    cr_assert(strstr(why, sub) && strstr(why, "rename"), "%s", why);
    /* ...but sticky like /tmp is fine. */
    cr_assert_eq(chmod(d, 01777), 0);
    cr_assert_eq(cbus_state_dir_prepare(sub, 0700, why, sizeof why), 0, "%s", why);
}

Test(events_files, state_dir_owned_by_another_uid_is_refused)
{
    if (geteuid() != 0)
        cbus_test_skip_or_fail("chown to another uid needs root");
    char d[400];
    snprintf(d, sizeof d, "%s/nobody", tmp);
    cr_assert_eq(mkdir(d, 0700), 0);
    cr_assert_eq(chown(d, 65534, 65534), 0);
    cr_assert_eq(cbus_state_dir_prepare(d, 0700, why, sizeof why), -EPERM);
    cr_assert(strstr(why, d) && strstr(why, "owned by uid 65534") && strstr(why, "not by us (uid 0)"),
              "%s", why);
    /* The state file's directory, for daemons that are given a file. */
    char f[450];
    snprintf(f, sizeof f, "%s/status.json", d);
    cr_assert_eq(cbus_state_file_dir_prepare(f, 0700, why, sizeof why), -EPERM);
    /* An ancestor owned by another user (not root) is refused too. */
    char sub[450];
    snprintf(sub, sizeof sub, "%s/mine", d);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(cbus_state_dir_prepare(sub, 0700, why, sizeof why), -EPERM);
    cr_assert(strstr(why, "owned by uid 65534"), "%s", why);
}

Test(events_files, state_dir_symlink_is_refused)
{
    char real[400], link[400];
    snprintf(real, sizeof real, "%s/real", tmp);
    snprintf(link, sizeof link, "%s/link", tmp);
    cr_assert_eq(mkdir(real, 0700), 0);
    cr_assert_eq(symlink(real, link), 0);
    cr_assert_eq(cbus_state_dir_prepare(link, 0700, why, sizeof why), -EPERM);
    cr_assert(strstr(why, link) && strstr(why, "symlink"), "%s", why);
    char file[400];
    snprintf(file, sizeof file, "%s/file", tmp);
    spit(file, ""); /* not a directory at all */
    cr_assert_eq(cbus_state_dir_prepare(file, 0700, why, sizeof why), -ENOTDIR);
}

/* The attack of item 16: a symlink planted at the old fixed temporary name
 * (path.tmp) and at the file itself made a root daemon overwrite its
 * target.  Neither is followed now; the target keeps its bytes. */
Test(events_files, replace_file_never_follows_a_planted_symlink)
{
    char victim[400], path[400], tmpname[450];
    snprintf(victim, sizeof victim, "%s/victim", tmp);
    snprintf(path, sizeof path, "%s/status.json", tmp);
    snprintf(tmpname, sizeof tmpname, "%s.tmp", path);
    spit(victim, "precious\n");
    cr_assert_eq(symlink(victim, tmpname), 0);
    cr_assert_eq(cbus_replace_file(path, "new\n", 4, 0), 0);
    cr_assert_str_eq(slurp(victim), "precious\n");
    cr_assert_str_eq(slurp(path), "new\n");
    /* a symlink at the destination is replaced, not written through */
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(symlink(victim, path), 0);
    cr_assert_eq(cbus_replace_file(path, "newer\n", 6, 1), 0);
    cr_assert_str_eq(slurp(victim), "precious\n");
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0);
    cr_assert(S_ISREG(st.st_mode));
    cr_assert_str_eq(slurp(path), "newer\n");
    /* no temporary is left behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -v -x -e victim -e status.json -e status.json.tmp",
             tmp);
    cr_assert_neq(system(cmd), 0, "a stray file is left in %s", tmp);
}

Test(events_files, replace_file_writes_0600_whatever_the_umask)
{
    char path[400];
    snprintf(path, sizeof path, "%s/checkpoint.bin", tmp);
    umask(0);
    cr_assert_eq(cbus_replace_file(path, "x", 1, 1), 0);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600, "mode %04o", (unsigned)(st.st_mode & 07777));
    /* replacing an existing 0644 file leaves it 0600 too */
    cr_assert_eq(chmod(path, 0644), 0);
    cr_assert_eq(cbus_replace_file(path, "y", 1, 0), 0);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600, "mode %04o", (unsigned)(st.st_mode & 07777));
}

Test(events_files, state_dir_default_is_private_never_tmp)
{
    char d[4200];
    cr_assert_eq(setenv("XDG_STATE_HOME", "/srv/state", 1), 0);
    cr_assert_eq(cbus_state_dir_default(d, sizeof d, "cost"), 0);
    cr_assert_str_eq(d, "/srv/state/cbus/cost");
    cr_assert_eq(setenv("XDG_STATE_HOME", "relative", 1), 0); /* ignored, as the spec says */
    cr_assert_eq(unsetenv("XDG_STATE_HOME"), 0);
    if (geteuid() == 0) {
        cr_assert_eq(cbus_state_dir_default(d, sizeof d, NULL), 0);
        cr_assert_str_eq(d, "/var/lib/cbus");
        /* and a user gets a directory in their home */
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            if (setuid(65534))
                _exit(2);
            setenv("HOME", "/home/someone", 1);
            _exit(cbus_state_dir_default(d, sizeof d, "export") == 0 &&
                          !strcmp(d, "/home/someone/.local/state/cbus/export")
                      ? 0 : 1);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    } else {
        cr_assert_eq(setenv("HOME", "/home/someone", 1), 0);
        cr_assert_eq(cbus_state_dir_default(d, sizeof d, "export"), 0);
        cr_assert_str_eq(d, "/home/someone/.local/state/cbus/export");
    }
}
