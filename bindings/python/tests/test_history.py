"""A chat app on real LangChain (langchain-core's callback manager, fake chat
models, a @tool) reporting through CbusCallbackHandler, and the real
cbus-history daemon keeping the conversation: the thread it stores is the
app's, message for message, though every model call sent the whole
history again."""
import json
import time
import urllib.request

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from cbus.langchain import CbusCallbackHandler


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return "sunny, 21C" if city == "Paris" else "unknown"


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode("utf-8"))


def test_langchain_chat_app_thread_is_stored_once(bus, history):
    url, _ = history
    h = CbusCallbackHandler(bus)
    cfg = {"callbacks": [h], "metadata": {"session_id": "lc-conv-1", "user_id": "ann"}}
    model = FakeListChatModel(responses=["Let me look that up.", "It is sunny in Paris, 21C.",
                                         "Rain, most of the day.", "Still rain, I am afraid."])
    history_msgs = [SystemMessage("You are a weather assistant.")]

    def turn(question=None):
        if question:
            history_msgs.append(HumanMessage(question))
        answer = model.invoke(list(history_msgs), config=cfg)  # the whole history, every call
        history_msgs.append(AIMessage(answer.content))
        return answer.content

    turn("What is the weather in Paris?")
    result = weather.invoke("Paris", config=cfg)  # the tool the model asked for
    history_msgs.append(ToolMessage(result, tool_call_id="call-1"))
    turn()
    turn("And tomorrow?")
    turn("And tomorrow?")  # the same question again: a turn of its own

    want = [("system", "message", "You are a weather assistant."),
            ("user", "message", "What is the weather in Paris?"),
            ("assistant", "message", "Let me look that up."),
            ("tool", "tool_call", "Paris"),
            ("tool", "tool_result", "sunny, 21C"),
            ("assistant", "message", "It is sunny in Paris, 21C."),
            ("user", "message", "And tomorrow?"),
            ("assistant", "message", "Rain, most of the day."),
            ("user", "message", "And tomorrow?"),
            ("assistant", "message", "Still rain, I am afraid.")]
    end = time.time() + 15
    msgs = []
    while time.time() < end:
        try:
            msgs = get(url + "/v1/conversations/lc-conv-1/messages")["messages"]
        except urllib.error.HTTPError:
            msgs = []
        if len(msgs) >= len(want):
            break
        time.sleep(0.05)
    assert [(m["role"], m["kind"], m["text"]) for m in msgs] == want
    # each message's parent is the one before it; the tool's result's is its call
    assert [m["parent"] for m in msgs[1:]] == [m["id"] for m in msgs[:-1]]
    assert msgs[3]["name"] == "weather"
    conv = get(url + "/v1/conversations/lc-conv-1")
    assert (conv["user"], conv["messages"]) == ("ann", 10)
    stats = get(url + "/v1/stats")
    assert stats["duplicates"] == 0
