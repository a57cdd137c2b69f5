/* cost.ini parsing: the shipped default, and errors that name the line. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cbus/layout.h>

#include "cost_config.h"
#include "daemon.h"

TestSuite(cost_config);

Test(cost_config, shipped_default_loads)
{
    struct cost_config c;
    char err[512];
    int r = cost_config_load(&c, CBUS_BINARY_DIR "/consumers/cost/cost.ini", err, sizeof err);
    cr_assert_eq(r, 0, "%s", err);
    cr_assert(strstr(c.prices_file, "consumers/cost/model_prices_and_context_window.json"),
              "%s", c.prices_file);
    cr_assert_geq(c.global_idx, 0);
    cr_assert_geq(c.user_default_idx, 0);
    cr_assert_str_eq(c.consumer, "cost");
    snprintf(c.bus, sizeof c.bus, "demo");
    cost_config_finish(&c);
    /* %S: the private state dir, never /tmp (issue 12 item 16). */
    char want[4200];
    cr_assert_eq(cbus_state_dir_default(want, sizeof want, "cost/demo"), 0);
    cr_assert_str_eq(c.state_dir, want);
    cr_assert(strncmp(c.state_dir, "/tmp", 4), "%s", c.state_dir);
    cost_config_free(&c);
}

static int parse(const char *text, char *err, size_t errlen, struct cost_config *c)
{
    return cost_config_parse(c, "cost.ini", text, "/etc/cbus", err, errlen);
}

Test(cost_config, budgets_parse_into_marks)
{
    struct cost_config c;
    char err[512];
    int r = parse("[budget.user.alice]\nlimit_usd = 10\nsoft_usd = 5\nperiod = 30d\n"
                  "thresholds = 25%, 75\n[budget.session.*]\nlimit_usd = 0.5\nperiod = none\n",
                  err, sizeof err, &c);
    cr_assert_eq(r, 0, "%s", err);
    cr_assert_eq(c.n_budgets, 2);
    const struct cost_budget *b = &c.budgets[0];
    cr_assert_str_eq(b->key, "alice");
    cr_assert_eq(b->period_days, 30);
    cr_assert_eq(b->n_marks, 4, "25, soft 50, 75, limit");
    cr_assert(b->marks[0].pico == (cost_u128)2500000000000ull);
    cr_assert_eq(b->marks[1].kind, COST_MARK_SOFT);
    cr_assert_eq(b->marks[3].kind, COST_MARK_LIMIT);
    cr_assert_eq(c.session_default_idx, 1);
    cr_assert_eq(c.budgets[1].period_days, 0);
    cr_assert_str_eq(c.prices_file, "/etc/cbus/model_prices_and_context_window.json");
    cost_config_free(&c);
}

Test(cost_config, errors_name_file_line_and_key)
{
    struct cost_config c;
    char err[512];
    cr_assert_eq(parse("[state]\n\ncheckpoint_interval = soon\n", err, sizeof err, &c), -EINVAL);
    cr_assert(strstr(err, "cost.ini:3:") && strstr(err, "checkpoint_interval"), "%s", err);

    cr_assert_eq(parse("[budget.user.bob]\nperiod = 2w\nlimit_usd = 1\n", err, sizeof err, &c),
                 -EINVAL);
    cr_assert(strstr(err, "cost.ini:2:") && strstr(err, "period"), "%s", err);

    cr_assert_eq(parse("[budget.user.bob]\nperiod = 1d\n", err, sizeof err, &c), -EINVAL);
    cr_assert(strstr(err, "limit_usd"), "%s", err);

    cr_assert_eq(parse("[budget.user.bob]\nlimit_usd = -3\n", err, sizeof err, &c), -EINVAL);
    cr_assert(strstr(err, "cost.ini:2:"), "%s", err);

    cr_assert_eq(parse("[budget.user.bob]\nlimit_usd = 3\nsoft_usd = 4\n", err, sizeof err, &c),
                 -EINVAL);
    cr_assert(strstr(err, "cost.ini:3:") && strstr(err, "soft_usd"), "%s", err);

    cr_assert_eq(parse("[budget.global]\nlimit_usd = 3\nthresholds = 50,abc\n", err, sizeof err, &c),
                 -EINVAL);
    cr_assert(strstr(err, "cost.ini:3:"), "%s", err);

    cr_assert_eq(parse("[prometheus]\nlisten = 0.0.0.0:9464\n", err, sizeof err, &c), -EINVAL);
    cr_assert(strstr(err, "loopback"), "%s", err);

    cr_assert_eq(parse("[prometheus]\nlisten = 127.0.0.1:99999\n", err, sizeof err, &c), -EINVAL);

    cr_assert_eq(parse("[state]\nmax_userz = 5\n", err, sizeof err, &c), -EINVAL);
    cr_assert(strstr(err, "cost.ini:2:") && strstr(err, "unknown key"), "%s", err);

    cr_assert_eq(parse("[stats]\nx = 5\n", err, sizeof err, &c), -EINVAL);
    cr_assert(strstr(err, "unknown section"), "%s", err);

    cr_assert_eq(parse("[webhook]\nurl = ftp://x\n", err, sizeof err, &c), -EINVAL);
    cr_assert_eq(parse("[bus]\nname = ../etc\n", err, sizeof err, &c), -EINVAL);
    cr_assert_eq(parse("[bus]\nstart = middle\n", err, sizeof err, &c), -EINVAL);
    cr_assert_eq(parse("just text\n", err, sizeof err, &c), -EINVAL);
    cr_assert(strstr(err, "cost.ini:1:"), "%s", err);
}

Test(cost_config, listen_localhost_and_bus_expansion)
{
    struct cost_config c;
    char err[512];
    cr_assert_eq(parse("[prometheus]\nlisten = localhost:0\ntextfile = out/%b.prom\n"
                       "[state]\ndir = /var/lib/cost-%b\n", err, sizeof err, &c), 0, "%s", err);
    cr_assert_str_eq(c.http_host, "127.0.0.1");
    snprintf(c.bus, sizeof c.bus, "prod");
    cost_config_finish(&c);
    cr_assert_str_eq(c.prom_textfile, "/etc/cbus/out/prod.prom");
    cr_assert_str_eq(c.state_dir, "/var/lib/cost-prod");
    cost_config_free(&c);
}

Test(cost_config, periods)
{
    uint32_t d;
    cr_assert_eq(cost_parse_period("1d", &d), 0);
    cr_assert_eq(d, 1);
    cr_assert_eq(cost_parse_period("7d", &d), 0);
    cr_assert_eq(d, 7);
    cr_assert_eq(cost_parse_period("none", &d), 0);
    cr_assert_eq(d, 0);
    cr_assert_eq(cost_parse_period("1h", &d), -EINVAL);
    cr_assert_eq(cost_parse_period("d", &d), -EINVAL);
}

Test(cost_config, agent_and_tenant_budgets_and_ids_longer_than_the_field)
{
    struct cost_config c;
    char err[512], text[1024], id[201];
    memset(id, 'u', 200);
    id[200] = '\0';
    snprintf(text, sizeof text,
             "[budget.tenant.*]\nlimit_usd = 100\n[budget.agent.planner]\nlimit_usd = 5\n"
             "[budget.user.%s]\nlimit_usd = 1\n[state]\nmax_agents = 50\nmax_tenants = 60\n", id);
    int r = parse(text, err, sizeof err, &c);
    cr_assert_eq(r, 0, "%s", err);
    cr_assert_eq(c.n_budgets, 3);
    cr_assert_eq(c.tenant_default_idx, 0);
    cr_assert_eq(c.budgets[1].scope, COST_SCOPE_AGENT);
    cr_assert_eq(c.budgets[1].key_hash, cbus_key_hash("planner", 7));
    /* a 200-byte id is kept whole and matched by its whole hash */
    cr_assert_str_eq(c.budgets[2].key, id);
    cr_assert_eq(c.budgets[2].key_hash, cbus_key_hash(id, 200));
    cr_assert_eq(c.max_agents, 50);
    cr_assert_eq(c.max_tenants, 60);
    cost_config_free(&c);
    r = parse("[budget.team.a]\nlimit_usd = 1\n", err, sizeof err, &c);
    cr_assert_neq(r, 0);
    cr_assert(strstr(err, "budget.tenant.NAME"), "%s", err);
    cost_config_free(&c);
}
