/* Rule syntax, wildcards, precedence and configuration errors that name
 * their line. */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include <cbus/layout.h>

#include "ratelimit_config.h"
#include "rules.h"

static struct rl_dims dims(const char *user, const char *session, const char *model,
                           const char *provider)
{
    struct rl_dims d;
    const char *v[RL_DIM__COUNT] = {user, session, model, provider};
    for (unsigned i = 0; i < RL_DIM__COUNT; i++) {
        d.s[i] = v[i] ? v[i] : "";
        d.len[i] = strlen(d.s[i]);
        d.hash[i] = cbus_key_hash(d.s[i], d.len[i]); /* values held whole */
    }
    return d;
}

Test(ratelimit_rules, glob_matches_prefix_suffix_and_middle)
{
    cr_assert(rl_glob("*", "anything", 8));
    cr_assert(rl_glob("gpt-4o*", "gpt-4o-mini", 11));
    cr_assert(!rl_glob("gpt-4o*", "gpt-4", 5));
    cr_assert(rl_glob("*-admin", "team-x-admin", 12));
    cr_assert(rl_glob("a*b*c", "aXXbYYc", 7));
    cr_assert(!rl_glob("a*b*c", "aXXbYY", 6));
    cr_assert(rl_glob("alice", "alice", 5));
    cr_assert(!rl_glob("alice", "alice2", 6));
    cr_assert(!rl_glob("alice", "ali", 3));
    /* the value is bounded by its length, not a NUL */
    cr_assert(rl_glob("ali", "alice", 3));
}

Test(ratelimit_rules, most_specific_rule_wins_within_a_group)
{
    struct rl_rules rs;
    rl_rules_init(&rs);
    char err[256];
    cr_assert_eq(rl_rules_add(&rs, "user=* rpm=60", 1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(rl_rules_add(&rs, "user=vip-* rpm=600", 2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(rl_rules_add(&rs, "user=vip-bob rpm=6", 3, err, sizeof err), 0, "%s", err);
    cr_assert_eq(rl_rules_add(&rs, "user=*-admin rpm=7", 4, err, sizeof err), 0, "%s", err);
    cr_assert_eq(rl_rules_add(&rs, "user=* model=gpt-4o rpm=10", 5, err, sizeof err), 0, "%s", err);
    unsigned bad;
    cr_assert_eq(rl_rules_finish(&rs, &bad, err, sizeof err), 0, "%s", err);
    unsigned g = 1u << RL_DIM_USER;
    struct rl_dims d = dims("alice", NULL, "gpt-4o", NULL);
    cr_assert_eq(rl_rules_match(&rs, g, &d), 0);
    d = dims("vip-carol", NULL, NULL, NULL);
    cr_assert_eq(rl_rules_match(&rs, g, &d), 1);
    d = dims("vip-bob", NULL, NULL, NULL);
    cr_assert_eq(rl_rules_match(&rs, g, &d), 2);
    /* "vip-" (4 literals) and "-admin" (6 literals): the longer literal wins */
    d = dims("vip-admin", NULL, NULL, NULL);
    cr_assert_eq(rl_rules_match(&rs, g, &d), 3);
    /* the combination is its own group: both apply to alice on gpt-4o */
    unsigned gm = g | 1u << RL_DIM_MODEL;
    d = dims("alice", NULL, "gpt-4o", NULL);
    cr_assert_eq(rl_rules_match(&rs, gm, &d), 4);
    d = dims("alice", NULL, "gpt-4o-mini", NULL);
    cr_assert_eq(rl_rules_match(&rs, gm, &d), -1);
    /* no user on the event: user rules do not apply */
    d = dims(NULL, NULL, "gpt-4o", NULL);
    cr_assert_eq(rl_rules_match(&rs, g, &d), -1);
    cr_assert_eq(rs.n_groups, 2);
    rl_rules_free(&rs);
}

Test(ratelimit_rules, equal_specificity_goes_to_the_earlier_line)
{
    struct rl_rules rs;
    rl_rules_init(&rs);
    char err[256];
    unsigned bad;
    cr_assert_eq(rl_rules_add(&rs, "model=gpt-* rpm=1", 7, err, sizeof err), 0);
    cr_assert_eq(rl_rules_add(&rs, "model=*-4o rpm=2", 9, err, sizeof err), 0);
    cr_assert_eq(rl_rules_finish(&rs, &bad, err, sizeof err), 0);
    struct rl_dims d = dims(NULL, NULL, "gpt-4o", NULL);
    cr_assert_eq(rl_rules_match(&rs, 1u << RL_DIM_MODEL, &d), 0);
    rl_rules_free(&rs);
}

Test(ratelimit_rules, defaults_and_publish_scope)
{
    struct rl_rules rs;
    rl_rules_init(&rs);
    char err[256];
    cr_assert_eq(rl_rules_add(&rs, "user=* rpm=60 tpm=1000", 1, err, sizeof err), 0);
    cr_assert_eq(rl_rules_add(&rs, "global rpm=100 burst=10", 2, err, sizeof err), 0);
    cr_assert_eq(rl_rules_add(&rs, "user=* model=* tpm=5 tokens=output", 3, err, sizeof err), 0);
    cr_assert_eq(rl_rules_add(&rs, "session=* model=x rpm=5 enforce=session", 4, err, sizeof err), 0);
    cr_assert_eq(rl_rules_add(&rs, "provider=openai rpm=5 enforce=none", 5, err, sizeof err), 0);
    cr_assert_eq(rs.rule[0].req.burst, 60);
    cr_assert_eq(rs.rule[0].tok.burst, 1000);
    cr_assert_eq(rs.rule[0].tokens, RL_TOKENS_TOTAL);
    cr_assert_eq(rs.rule[0].publish_scope, CBUS_SCOPE_USER);
    cr_assert_eq(rs.rule[1].req.burst, 10);
    cr_assert_eq(rs.rule[1].publish_scope, CBUS_SCOPE_GLOBAL);
    cr_assert_eq(rs.rule[2].publish_scope, RL_NO_PUBLISH);
    cr_assert_eq(rs.rule[2].tokens, RL_TOKENS_OUTPUT);
    cr_assert_eq(rs.rule[3].publish_scope, CBUS_SCOPE_SESSION);
    cr_assert_eq(rs.rule[4].publish_scope, RL_NO_PUBLISH);
    cr_assert_str_eq(rs.rule[2].text, "user=* model=* tpm=5 tokens=output enforce=none");
    rl_rules_free(&rs);
}

static void bad_rule(const char *text, const char *why)
{
    struct rl_rules rs;
    rl_rules_init(&rs);
    char err[256];
    cr_assert_eq(rl_rules_add(&rs, text, 1, err, sizeof err), -EINVAL, "accepted: %s", text);
    cr_assert(strstr(err, why), "'%s': got '%s', want '%s'", text, err, why);
    cr_assert_eq(rs.count, 0);
    rl_rules_free(&rs);
}

Test(ratelimit_rules, bad_rules_say_what_is_wrong)
{
    bad_rule("user=* rpn=5", "unknown option 'rpn'");
    bad_rule("user=*", "no limit");
    bad_rule("rpm=5", "no selector");
    bad_rule("global user=* rpm=5", "'global' cannot be combined");
    bad_rule("user=* rpm=0", "out of range");
    bad_rule("user=* rpm=12x", "not a whole number");
    bad_rule("user=* rpm=5 rpm=6", "rpm= given twice");
    bad_rule("user=a user=b rpm=5", "user= given twice");
    bad_rule("user= rpm=5", "empty pattern");
    bad_rule("user=* burst=5 tpm=9", "burst= without rpm=");
    bad_rule("user=* rpm=5 tokens=all", "want input, output or total");
    bad_rule("user=* rpm=5 tokens=input", "tokens= without tpm=");
    bad_rule("user=* model=* rpm=5 enforce=session", "has no session= selector");
    bad_rule("user=* rpm", "not NAME=VALUE");
    bad_rule("user=* agent=* rpm=5 enforce=tenant", "has no tenant= selector");
    bad_rule("user=* rpm=5 enforce=team", "want none, user, session, model, provider, agent or tenant");
    bad_rule("tenant=* agent=* user=* session=* model=* provider=* rpm=5 global",
             "'global' cannot be combined");
}

Test(ratelimit_rules, literal_longer_than_the_field_matches_the_whole_value)
{
    /* Producers cut a provider to CBUS_PROVIDER_LEN - 1 bytes but hash it
     * whole: a literal matches that hash, so only the full name matches. */
    const char *name = "a-provider-name-longer-than-the-event-field";
    struct rl_rules rs;
    rl_rules_init(&rs);
    char err[256];
    cr_assert_eq(rl_rules_add(&rs, "provider=a-provider-name-longer-than-the-event-field rpm=5", 1,
                              err, sizeof err), 0, "%s", err);
    unsigned bad;
    cr_assert_eq(rl_rules_finish(&rs, &bad, err, sizeof err), 0, "%s", err);
    struct rl_dims d = dims(NULL, NULL, NULL, "a-provider-name-longer-"); /* the shown prefix */
    unsigned g = 1u << RL_DIM_PROVIDER;
    d.hash[RL_DIM_PROVIDER] = cbus_key_hash(name, strlen(name));
    cr_assert_eq(rl_rules_match(&rs, g, &d), 0);
    d.hash[RL_DIM_PROVIDER] = cbus_key_hash("a-provider-name-longer-than-the-event-fielD", strlen(name));
    cr_assert_eq(rl_rules_match(&rs, g, &d), -1, "same prefix, another provider");
    rl_rules_free(&rs);
}

static void bad_config(const char *text, const char *where, const char *why)
{
    struct rl_config c;
    char err[512];
    cr_assert_neq(rl_config_parse(&c, "rl.ini", text, err, sizeof err), 0, "accepted:\n%s", text);
    cr_assert(strstr(err, where), "got '%s', want location '%s'", err, where);
    cr_assert(strstr(err, why), "got '%s', want '%s'", err, why);
}

Test(ratelimit_rules, bad_config_lines_name_the_line)
{
    bad_config("[rules]\nrule = user=* rpm=60\n\n# comment\nrule = model=* rpn=3\n",
               "rl.ini:5: [rules] rule:", "unknown option 'rpn'");
    bad_config("[rules]\nrule = user=* rpm=60\nrule = user=* tpm=7\n", "rl.ini:3: [rules] rule:",
               "same selector as the rule on line 2");
    bad_config("[ratelimit]\nstatus_interval = soon\n[rules]\nrule = global rpm=1\n",
               "rl.ini:2: [ratelimit] status_interval:", "not a duration");
    bad_config("[ratelimit]\nmax_keys = 5\n[rules]\nrule = global rpm=1\n",
               "rl.ini:2: [ratelimit] max_keys:", "out of range");
    bad_config("[ratelimit]\ncolour = blue\n", "rl.ini:2: [ratelimit] colour:", "unknown key");
    bad_config("[limits]\nrule = global rpm=1\n", "rl.ini:2: [limits] rule:", "unknown section");
    bad_config("[rules]\nlimit = global rpm=1\n", "rl.ini:2: [rules] limit:", "unknown key");
    bad_config("[ratelimit]\nname = ratelimit\n", "rl.ini", "no rules");
}

Test(ratelimit_rules, shipped_config_is_valid)
{
    struct rl_config c;
    char err[512];
    cr_assert_eq(rl_config_load(&c, CBUS_BINARY_DIR "/consumers/ratelimit/ratelimit.ini", err,
                                sizeof err), 0, "%s", err);
    cr_assert_gt(c.rules.count, 0);
    rl_config_free(&c);
}
