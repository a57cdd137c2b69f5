'use strict';
// CbusCallbackHandler, made over whichever BaseCallbackHandler the caller's
// module system loads (@langchain/core's CommonJS or ESM build), so
// lib/langchain.cjs and lib/langchain.mjs share one implementation.
const cbus = require('./index.cjs');

const warned = new Set();
const STALE_HANDLE = -3; // -ESRCH from the bound token function: the run of that handle ended
function warnOnce(bus, err) {
  if (warned.has(bus)) return;
  warned.add(bus);
  process.emitWarning(`cbus: bus ${bus} not usable (${err.message}); CbusCallbackHandler does nothing`,
    { code: 'CBUS_NO_BUS' });
}

function text(x) {
  if (x == null) return null;
  if (typeof x === 'string') return x;
  try { return JSON.stringify(x); } catch { return String(x); }
}

function strMeta(meta) {
  if (!meta || typeof meta !== 'object') return null;
  const out = {};
  for (const [k, v] of Object.entries(meta)) if (v != null) out[k] = typeof v === 'string' ? v : text(v);
  return out;
}

function msgRole(m) {
  const t = typeof m?.getType === 'function' ? m.getType() : typeof m?._getType === 'function' ? m._getType() : m?.role;
  return t === 'human' ? 'user' : t === 'ai' ? 'assistant' : t ?? 'user';
}

function msgText(m) {
  const c = m?.content;
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) return c.map((p) => (typeof p === 'string' ? p : p?.text ?? '')).join('');
  return text(c) ?? '';
}

// LangChain messages -> OpenTelemetry gen_ai.input.messages JSON.
// LangChain Documents as the GenAI retrieval documents shape
// [{id, content, metadata}] (cbus-export sends it as gen_ai.retrieval.documents).
function documentsJson(docs) {
  if (!Array.isArray(docs) || !docs.length) return null;
  return JSON.stringify(docs.map((d) => {
    const o = { content: typeof d?.pageContent === 'string' ? d.pageContent : text(d) };
    if (d?.id != null) o.id = String(d.id);
    if (d?.metadata && Object.keys(d.metadata).length) o.metadata = d.metadata;
    return o;
  }));
}

function messagesJson(msgs) {
  return JSON.stringify(msgs.map((m) => ({ role: msgRole(m), parts: [{ type: 'text', content: msgText(m) }] })));
}

// System instructions a model takes apart from the history, when its
// invocation parameters show them (a `system` field such as Anthropic's or
// Ollama's, `system_instruction` / `systemInstruction` as Gemini's,
// `instructions` as OpenAI Responses'), as OpenTelemetry's
// gen_ai.system_instructions parts: what the Python handler reads.  A
// SystemMessage in the messages is history and stays there.
function systemOf(ip) {
  if (!ip || typeof ip !== 'object') return null;
  for (const key of ['system', 'system_instruction', 'systemInstruction', 'instructions']) {
    const v = ip[key];
    if (typeof v === 'string' && v) return JSON.stringify([{ type: 'text', content: v }]);
    const list = Array.isArray(v) ? v : v && typeof v === 'object' && Array.isArray(v.parts) ? v.parts : null;
    if (list && list.length) {
      const parts = [];
      for (const p of list) {
        const t = typeof p === 'string' ? p : typeof p?.text === 'string' ? p.text : typeof p?.content === 'string' ? p.content : null;
        if (t != null) parts.push({ type: 'text', content: t });
      }
      if (parts.length) return JSON.stringify(parts);
    }
  }
  return null;
}

// What the producer takes as a response id: 1..256 printable ASCII bytes, no space.
function isId(v) {
  return typeof v === 'string' && v.length > 0 && v.length <= 256 && /^[\x21-\x7e]+$/.test(v);
}

// The provider's id of the response: the message's response_metadata id,
// llmOutput's, generationInfo's, else the message id when it is the
// provider's (LangChain makes up run-... / lc_run-... ids).  Not an id: none
// (the end still goes out).
function responseIdOf(output) {
  const gen = output?.generations?.[0]?.[0];
  const msg = gen?.message;
  for (const src of [msg?.response_metadata, output?.llmOutput, gen?.generationInfo]) {
    const v = src && typeof src === 'object' ? src.id : undefined;
    if (isId(v)) return v;
  }
  const mid = msg?.id;
  if (isId(mid) && !/^(run-|lc_run-|lc_)/.test(mid)) return mid;
  return null;
}

function errStatus(err) {
  const s = err?.status ?? err?.response?.status ?? err?.statusCode;
  return Number.isInteger(s) && s >= 0 && s <= 999 ? s : 0;
}

function errType(err) {
  return err?.name ?? err?.constructor?.name ?? 'Error';
}

// usage_metadata (LangChain 1.x) first, then llmOutput.tokenUsage (older).
function usageOf(output) {
  const gen = output?.generations?.[0]?.[0];
  const um = gen?.message?.usage_metadata;
  const u = {};
  if (um) {
    u.inputTokens = um.input_tokens;
    u.outputTokens = um.output_tokens;
    u.cacheReadTokens = um.input_token_details?.cache_read;
    u.cacheCreationTokens = um.input_token_details?.cache_creation;
    u.reasoningTokens = um.output_token_details?.reasoning;
  } else {
    const tu = output?.llmOutput?.tokenUsage ?? output?.llmOutput?.estimatedTokenUsage;
    if (tu) {
      u.inputTokens = tu.promptTokens;
      u.outputTokens = tu.completionTokens;
    }
  }
  for (const k of Object.keys(u)) if (!Number.isInteger(u[k]) || u[k] < 0) delete u[k];
  const fr = gen?.generationInfo?.finish_reason ?? gen?.message?.response_metadata?.finish_reason;
  if (typeof fr === 'string') u.finishReason = fr;
  const n = output?.generations?.[0]?.length;
  if (Number.isInteger(n) && n > 0 && n < 65536) u.generations = n;
  return u;
}

function makeHandler(BaseCallbackHandler) {
  class CbusCallbackHandler extends BaseCallbackHandler {
    name = 'CbusCallbackHandler';

    /**
     * @param {object} [options]
     * @param {string} [options.bus] bus name (CBUS_BUS, else "default")
     * @param {string} [options.userId] @param {string} [options.sessionId] @param {string} [options.modelId]
     * @param {string} [options.agent] @param {string} [options.tenant] @param {string} [options.provider]
     */
    constructor(options = {}) {
      // Awaited inline: LangChain's background mode would stamp events late.
      super({ ...options, _awaitHandler: true });
      this.awaitHandlers = true;
      this.options = options;
      this.bus = options.bus ?? process.env.CBUS_BUS ?? 'default';
      this.producer = null;
      this._token = null;
      this._handles = new Map(); // run id -> numeric handle (see handleLLMNewToken)
      this._tokRun = undefined;
      this._tokHandle = -1;
      try {
        this.producer = options.producer ?? new cbus.Producer(this.bus, options.producerOptions);
        this._token = this.producer.tokenFunction(); // bound: no unwrap per token
      } catch (e) {
        warnOnce(this.bus, e);
      }
    }

    _info(extra, metadata, tags, more) {
      const o = this.options;
      const inv = extra?.invocation_params ?? {};
      return {
        user: o.userId ?? metadata?.userId ?? null,
        session: o.sessionId ?? metadata?.sessionId ?? null,
        agent: o.agent ?? null,
        tenant: o.tenant ?? null,
        provider: o.provider ?? metadata?.ls_provider ?? null,
        model: o.modelId ?? inv.model ?? inv.model_name ?? metadata?.ls_model_name ?? null,
        tags: Array.isArray(tags) && tags.length ? tags.map(String) : null,
        metadata: strMeta(metadata),
        ...more,
      };
    }

    _safe(fn) {
      if (!this.producer) return;
      try { fn(this.producer); } catch { /* never into the chain */ }
    }

    handleLLMStart(llm, prompts, runId, parentRunId, extraParams, tags, metadata) {
      this._forgetHandle(runId); // a run id seen before its start gets its handle now
      this._safe((p) => p.llmStart(runId, parentRunId, prompts?.[prompts.length - 1] ?? null,
        this._info(extraParams, metadata, tags, { promptCount: prompts?.length ?? 0,
          maxTokens: Number.isInteger(extraParams?.invocation_params?.max_tokens) ? extraParams.invocation_params.max_tokens : 0,
          system: systemOf(extraParams?.invocation_params) })));
    }

    handleChatModelStart(llm, messages, runId, parentRunId, extraParams, tags, metadata) {
      this._forgetHandle(runId);
      this._safe((p) => {
        const msgs = messages?.[0] ?? [];
        p.chatModelStart(runId, parentRunId, msgs.length ? msgText(msgs[msgs.length - 1]) : null,
          this._info(extraParams, metadata, tags, { promptCount: msgs.length, messages: messagesJson(msgs),
            system: systemOf(extraParams?.invocation_params) }));
      });
    }

    // The hot path: a run's numeric handle is looked up once per run and kept
    // (the last run by string identity, others in a Map: LangChain passes the
    // same run id string every time), so a token copies no run id into native
    // code.  A handle gone stale (the run ended or started again) is looked up
    // again; a run never started (-1) goes by its run id.
    _handleOf(runId) {
      let h = this._handles.get(runId);
      if (h === undefined) {
        h = typeof runId === 'string' ? this.producer.runHandle(runId) : -1;
        if (this._handles.size >= 4096) this._handles.clear(); // runs whose end never came
        this._handles.set(runId, h);
      }
      return h;
    }

    _forgetHandle(runId) {
      this._handles.delete(runId);
      if (runId === this._tokRun) this._tokRun = undefined;
    }

    handleLLMNewToken(token, idx, runId) {
      if (!this._token) return;
      try {
        if (runId !== this._tokRun) {
          this._tokHandle = this._handleOf(runId);
          this._tokRun = runId;
        }
        if (this._tokHandle >= 0) {
          if (this._token(this._tokHandle, token) !== STALE_HANDLE) return;
          this._forgetHandle(runId);
          this._tokHandle = this._handleOf(runId);
          this._tokRun = runId;
          if (this._tokHandle >= 0) { this._token(this._tokHandle, token); return; }
        }
        this._token(runId, token);
      } catch { /* never throws */ }
    }

    handleChatModelStreamEvent(event, runId) {
      this._safe((p) => p.stream(runId, typeof event === 'string' ? event : text(event?.delta ?? event?.text ?? event)));
    }

    handleLLMEnd(output, runId) {
      this._forgetHandle(runId);
      this._safe((p) => p.llmEnd(runId, output?.generations?.[0]?.[0]?.text ?? null, usageOf(output), null,
        responseIdOf(output)));
    }

    handleLLMError(err, runId) {
      this._forgetHandle(runId);
      this._safe((p) => p.llmError(runId, errType(err), err?.message ?? text(err), errStatus(err)));
    }

    // LangChain's CallbackManager passes (chain, inputs, runId, parentRunId,
    // tags, metadata, runType, runName, extra), not the declared
    // (chain, inputs, runId, runType, tags, metadata, runName, parentRunId):
    // read what it passes (tested against the real manager).
    handleChainStart(chain, inputs, runId, parentRunId, tags, metadata, runType, runName) {
      this._safe((p) => p.chainStart(runId, parentRunId, runName ?? chain?.name ?? chain?.id?.[chain.id.length - 1] ?? null,
        text(inputs), this._info(null, metadata, tags)));
    }

    handleChainEnd(outputs, runId) {
      this._safe((p) => p.chainEnd(runId, text(outputs)));
    }

    handleChainError(err, runId) {
      this._safe((p) => p.chainError(runId, errType(err), err?.message ?? text(err)));
    }

    handleToolStart(tool, input, runId, parentRunId, tags, metadata, runName) {
      this._safe((p) => p.toolStart(runId, parentRunId, runName ?? tool?.name ?? tool?.id?.[tool.id.length - 1] ?? null,
        text(input), this._info(null, metadata, tags)));
    }

    handleToolEnd(output, runId) {
      this._safe((p) => p.toolEnd(runId, typeof output?.content === 'string' ? output.content : text(output)));
    }

    handleToolError(err, runId) {
      this._safe((p) => p.toolError(runId, errType(err), err?.message ?? text(err)));
    }

    handleToolEvent(chunk, runId) {
      this._safe((p) => p.toolEvent(runId, 'tool_event', text(chunk)));
    }

    handleAgentAction(action, runId) {
      this._safe((p) => p.agentAction(runId, action?.tool ?? null, text(action?.toolInput)));
    }

    handleAgentEnd(action, runId) {
      this._safe((p) => p.agentFinish(runId, text(action?.returnValues?.output ?? action?.returnValues ?? action?.log)));
    }

    handleRetrieverStart(retriever, query, runId, parentRunId, tags, metadata, name) {
      this._safe((p) => p.retrieverStart(runId, parentRunId, name ?? retriever?.id?.[retriever.id.length - 1] ?? null,
        query, this._info(null, metadata, tags)));
    }

    handleRetrieverEnd(documents, runId) {
      this._safe((p) => p.retrieverEnd(runId, Array.isArray(documents) ? documents.length : 0, documentsJson(documents)));
    }

    handleRetrieverError(err, runId) {
      this._safe((p) => p.retrieverError(runId, errType(err), err?.message ?? text(err)));
    }

    handleText(t, runId) {
      this._safe((p) => p.text(runId, text(t)));
    }

    handleCustomEvent(eventName, data, runId) {
      this._safe((p) => p.custom(runId, String(eventName), text(data)));
    }

    /** Closes this handler's handle on the process's producer. */
    close() {
      if (this.producer && !this.options.producer) this.producer.close();
      this.producer = null;
      this._token = null;
    }
  }
  return CbusCallbackHandler;
}

module.exports = { makeHandler, usageOf, messagesJson, systemOf, responseIdOf };
