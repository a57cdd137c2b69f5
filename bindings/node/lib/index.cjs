'use strict';
// cbus for Node.js: a producer that emits LLM callback events into a cbus
// bus, and a consumer that reads them back as an async iterator.
const native = require('./native.cjs');

// Native kind numbers of the calls that take one (src/cbus_node.c).
const START = Object.freeze({ llm: 0, chatModel: 1, chain: 2, tool: 3, retriever: 4 });
const END = Object.freeze({ chain: 0, tool: 1, retriever: 2 });
const ERROR = Object.freeze({ llm: 0, chain: 1, tool: 2, retriever: 3 });
const POINT = Object.freeze({ agentAction: 0, agentFinish: 1, text: 2, custom: 3, toolEvent: 4 });
const SCORE = Object.freeze({ numeric: 1, boolean: 2, categorical: 3 });

/**
 * A handle on the process's producer for a bus.  Every handle (and every
 * worker thread) opening the same bus shares one mapping and one producer
 * table entry; the last handle to close (or whose worker ends) closes it.
 * Runs are keyed by the caller's run id strings: a start opens one, its end
 * or error closes it.  Emits return 0 or a negative errno (-EAGAIN: dropped
 * and counted); they never throw for the bus's conditions, only for wrong
 * argument types (TypeError naming the argument).
 */
class Producer extends native.NativeProducer {
  llmStart(runId, parentRunId, prompt, info) { return this.start(START.llm, runId, parentRunId, null, prompt, info); }
  chatModelStart(runId, parentRunId, lastMessage, info) { return this.start(START.chatModel, runId, parentRunId, null, lastMessage, info); }
  chainStart(runId, parentRunId, name, inputs, info) { return this.start(START.chain, runId, parentRunId, name, inputs, info); }
  toolStart(runId, parentRunId, name, input, info) { return this.start(START.tool, runId, parentRunId, name, input, info); }
  retrieverStart(runId, parentRunId, name, query, info) { return this.start(START.retriever, runId, parentRunId, name, query, info); }
  llmNewToken(runId, chunk) { return this.token(runId, chunk); }
  chatModelStream(runId, chunk) { return this.stream(runId, chunk); }
  chainEnd(runId, outputs) { return this.end(END.chain, runId, outputs); }
  toolEnd(runId, output) { return this.end(END.tool, runId, output); }
  retrieverEnd(runId, documentCount, documents) { return this.end(END.retriever, runId, documentCount, documents); }
  llmError(runId, errorType, message, httpStatus) { return this.error(ERROR.llm, runId, errorType, message, httpStatus); }
  chainError(runId, errorType, message) { return this.error(ERROR.chain, runId, errorType, message); }
  toolError(runId, errorType, message) { return this.error(ERROR.tool, runId, errorType, message); }
  retrieverError(runId, errorType, message) { return this.error(ERROR.retriever, runId, errorType, message); }
  agentAction(runId, tool, toolInput) { return this.point(POINT.agentAction, runId, tool, toolInput); }
  agentFinish(runId, output) { return this.point(POINT.agentFinish, runId, null, output); }
  text(runId, text) { return this.point(POINT.text, runId, null, text); }
  custom(runId, name, data) { return this.point(POINT.custom, runId, name, data); }
  toolEvent(runId, name, data) { return this.point(POINT.toolEvent, runId, name, data); }
}

/**
 * A consumer attached to a bus.  `for await (const ev of consumer)` yields
 * events as they come; between batches it waits on the libuv pool (a futex
 * wait: no CPU and no polling on the main thread while the bus is idle).
 * Each batch is committed once its events were yielded (what a lossless
 * consumer lets producers overwrite).  close() ends the iteration within one
 * wait slice (options.sliceMs of the iterator, 250 ms by default).
 */
class Consumer extends native.NativeConsumer {
  async *events({ sliceMs = 250, signal } = {}) {
    if (typeof sliceMs !== 'number') throw new TypeError('cbus: sliceMs must be a number');
    while (!this.closed() && !(signal && signal.aborted)) {
      const batch = this.poll();
      if (batch.length) {
        for (const ev of batch) yield ev;
        if (!this.closed()) this.commit();
        continue;
      }
      await this.wait(sliceMs);
    }
  }

  [Symbol.asyncIterator]() {
    return this.events();
  }
}

module.exports = {
  Producer,
  Consumer,
  createBus: native.createBus,
  destroyBus: native.destroyBus,
  busInfo: native.busInfo,
  sharedProducers: native.sharedProducers,
  strerror: native.strerror,
  version: native.version,
  START, END, ERROR, POINT, SCORE,
};
