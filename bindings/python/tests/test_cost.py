"""The LangChain handler's usage reaches the real cbus-cost daemon intact."""
import json
import os
import subprocess
import time
from decimal import Decimal

import pytest

pytest.importorskip("langchain_core")
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from cbus.langchain import CbusCallbackHandler

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def cost_bin():
    cands = [os.environ.get("CBUS_COST_BIN", "")] + [
        os.path.join(ROOT, d, "consumers/cost/cbus-cost") for d in ("build/release", "build/dev")]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    msg = "cbus-cost not built (set CBUS_COST_BIN or build build/release)"
    if os.environ.get("CBUS_TEST_STRICT") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def test_cbus_cost_totals_equal_the_tokens_sent(bus, tmp_path):
    binary = cost_bin()
    prices = os.path.join(ROOT, "consumers/cost/model_prices_and_context_window.json")
    cfg = tmp_path / "c.ini"
    cfg.write_text("[prices]\nfile = %s\n[state]\nsnapshot_interval = 20ms\nfsync = false\n"
                   % prices)
    state = tmp_path / "state"
    log = open(tmp_path / "log", "w")
    daemon = subprocess.Popen([binary, "--bus", bus, "--config", str(cfg), "--state-dir",
                               str(state)], stderr=log)
    try:
        h = CbusCallbackHandler(bus)
        n, sent_in, sent_out, sent_cache = 40, 0, 0, 0
        for i in range(n):
            ti, to, cr = 100 + i * 7, 20 + i, i % 5
            sent_in, sent_out, sent_cache = sent_in + ti, sent_out + to, sent_cache + cr
            msg = AIMessage(content="answer %d" % i, usage_metadata={
                "input_tokens": ti, "output_tokens": to, "total_tokens": ti + to,
                "input_token_details": {"cache_read": cr}})
            model = GenericFakeChatModel(messages=iter([msg]))
            model.invoke("q", config={"callbacks": [h], "metadata": {
                "ls_model_name": "gpt-4o", "ls_provider": "openai", "user_id": "u%d" % (i % 3)}})
        snap_path = state / "snapshot.json"
        deadline = time.monotonic() + 30
        total = None
        while time.monotonic() < deadline:
            try:
                total = json.loads(snap_path.read_text())["total"]
                if total["requests"] >= n:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert daemon.poll() is None, (tmp_path / "log").read_text()
        assert total is not None and total["requests"] == n
        assert total["tokens"]["input"] == sent_in
        assert total["tokens"]["output"] == sent_out
        assert total["tokens"]["cache_read"] == sent_cache
        assert total["tokens"]["reasoning"] is None  # never reported: absent, not 0
        p = json.load(open(prices))["gpt-4o"]
        want = ((sent_in - sent_cache) * Decimal(str(p["input_cost_per_token"])) +
                sent_cache * Decimal(str(p["cache_read_input_token_cost"])) +
                sent_out * Decimal(str(p["output_cost_per_token"])))
        assert Decimal(total["cost_usd"]) == want
    finally:
        daemon.terminate()
        daemon.wait(10)
        log.close()
