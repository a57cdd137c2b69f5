// Type declarations for the cbus Node.js package (CommonJS and ESM).

/** What a start event may carry; every field is optional. */
export interface RunInfo {
  provider?: string | null;
  model?: string | null;
  user?: string | null;
  session?: string | null;
  agent?: string | null;
  tenant?: string | null;
  requestId?: string | null;
  /** the run's tags (LangChain's `tags`), inherited by child runs */
  tags?: string[] | null;
  /** the run's metadata as strings (LangChain's `metadata`), inherited by child runs */
  metadata?: Record<string, string> | null;
  /** prompts, or messages of a chat */
  promptCount?: number;
  estInputTokens?: number;
  maxTokens?: number;
  /** chat messages as JSON (OpenTelemetry gen_ai.input.messages shape), chat model starts only */
  messages?: string | null;
  /** system instructions given apart from the messages (OpenTelemetry gen_ai.system_instructions
   * JSON, `[{"type":"text","content":"..."}]`, or plain text), LLM and chat model starts only */
  system?: string | null;
}

/** Token usage of an llm_end; an absent count stays absent (not zero). */
export interface Usage {
  /** includes cache reads and cache creation (OpenTelemetry's convention) */
  inputTokens?: number | null;
  /** includes reasoning */
  outputTokens?: number | null;
  cacheReadTokens?: number | null;
  cacheCreationTokens?: number | null;
  reasoningTokens?: number | null;
  /** 'stop', 'length', 'tool_calls', 'content_filter', 'error'; others count as 'other' */
  finishReason?: string | null;
  generations?: number;
}

/** 0, or a negative errno: -EAGAIN dropped (counted), -ESTALE closed, -ENOSPC too many open runs. */
export type EmitCode = number;

export interface ProducerOptions {
  /** shown by `cbusctl stat` (1..31 of [A-Za-z0-9_.-]); handles of one name share a producer */
  name?: string;
  /** a stale admission table refuses instead of allowing */
  failClosed?: boolean;
}

export interface ProducerStats {
  emitted: number;
  dropped: number;
  waitedNs: number;
  maxWaitNs: number;
}

declare class NativeProducer {
  constructor(bus: string, options?: ProducerOptions);
  /** kind: START.* */
  start(kind: number, runId: string, parentRunId: string | null | undefined, name: string | null | undefined,
        text: string | null | undefined, info?: RunInfo | null): EmitCode;
  token(runId: string, chunk: string | null | undefined): EmitCode;
  stream(runId: string, chunk: string | null | undefined): EmitCode;
  /** token() bound to this handle (no lookup of the handle per call): the hot path of handlers.
   *  Its first argument is a run id, or a handle from runHandle() (no run id string copied or
   *  hashed per token); a handle whose run ended returns -3 (-ESRCH): ask runHandle() again. */
  tokenFunction(): (runIdOrHandle: string | number, chunk: string | null | undefined) => EmitCode;
  /** The open run's numeric handle for tokenFunction(), or -1 when no run of that id is open.
   *  A handle is never another run's: its entry's generation moves on when the run ends. */
  runHandle(runId: string): number;
  /** responseId: the provider's id of the response (gen_ai.response.id), 1..256 bytes of printable
   * ASCII without spaces (a RangeError otherwise, and nothing is emitted) */
  llmEnd(runId: string, output?: string | null, usage?: Usage | null, messages?: string | null,
    responseId?: string | null): EmitCode;
  /** kind: END.*; the third argument is the output text, or the document count for a retriever */
  end(kind: number, runId: string, outputOrCount?: string | number | null, documents?: string | null): EmitCode;
  /** kind: ERROR.* */
  error(kind: number, runId: string, errorType?: string | null, message?: string | null, httpStatus?: number): EmitCode;
  /** kind: POINT.* */
  point(kind: number, runId: string, name?: string | null, text?: string | null): EmitCode;
  retry(runId: string, attempt?: number, backoffNs?: number, reason?: string | null): EmitCode;
  /** type: SCORE.*; value a number, or a boolean for boolean scores */
  score(runId: string, name: string, type?: number, value?: number | boolean | null,
        category?: string | null, comment?: string | null): EmitCode;
  /** drops a run without an event; true if it was open */
  forget(runId: string): boolean;
  /** open runs of this handle */
  runs(): number;
  stats(): ProducerStats;
  /** 0, -ENOENT (bus removed), -EIDRM (re-created), -EIO (truncated), -ESTALE (closed) */
  check(): number;
  close(): void;
  closed(): boolean;
}

export class Producer extends NativeProducer {
  llmStart(runId: string, parentRunId: string | null | undefined, prompt?: string | null, info?: RunInfo | null): EmitCode;
  chatModelStart(runId: string, parentRunId: string | null | undefined, lastMessage?: string | null, info?: RunInfo | null): EmitCode;
  chainStart(runId: string, parentRunId: string | null | undefined, name?: string | null, inputs?: string | null, info?: RunInfo | null): EmitCode;
  toolStart(runId: string, parentRunId: string | null | undefined, name?: string | null, input?: string | null, info?: RunInfo | null): EmitCode;
  retrieverStart(runId: string, parentRunId: string | null | undefined, name?: string | null, query?: string | null, info?: RunInfo | null): EmitCode;
  llmNewToken(runId: string, chunk: string): EmitCode;
  chatModelStream(runId: string, chunk: string): EmitCode;
  chainEnd(runId: string, outputs?: string | null): EmitCode;
  toolEnd(runId: string, output?: string | null): EmitCode;
  /** documents: the retrieved documents as text (a JSON array of {id, content, metadata}), whole in the body */
  retrieverEnd(runId: string, documentCount?: number, documents?: string | null): EmitCode;
  llmError(runId: string, errorType?: string | null, message?: string | null, httpStatus?: number): EmitCode;
  chainError(runId: string, errorType?: string | null, message?: string | null): EmitCode;
  toolError(runId: string, errorType?: string | null, message?: string | null): EmitCode;
  retrieverError(runId: string, errorType?: string | null, message?: string | null): EmitCode;
  agentAction(runId: string, tool?: string | null, toolInput?: string | null): EmitCode;
  agentFinish(runId: string, output?: string | null): EmitCode;
  text(runId: string, text?: string | null): EmitCode;
  custom(runId: string, name?: string | null, data?: string | null): EmitCode;
  toolEvent(runId: string, name?: string | null, data?: string | null): EmitCode;
}

export interface ConsumerOptions {
  name: string;
  mode?: 'lossy' | 'lossless';
  start?: 'newest' | 'oldest' | 'resume';
  /** lossless: the kinds it cannot do without (kind names) */
  kinds?: string[];
  /** read bodies (whole texts, messages, tags, metadata); default true */
  bodies?: boolean;
  /** most events per poll, 1..4096 (default 256) */
  batch?: number;
}

export interface CbusEvent {
  kind: string;
  kindId: number;
  eventId: number;
  flags: number;
  pid: number;
  tid: number;
  tsRealtimeNs: bigint;
  tsMonoNs: bigint;
  runId: string;
  parentRunId?: string;
  traceId?: string;
  provider?: string;
  model?: string;
  user?: string;
  session?: string;
  agent?: string;
  tenant?: string;
  requestId?: string;
  name?: string;
  preview?: string;
  usage?: Usage & { durationNs?: number; ttftNs?: number };
  llmStart?: { promptCount: number; estInputTokens: number; maxTokens: number };
  tokenIndex?: number;
  error?: { httpStatus: number; durationNs: number };
  retry?: { attempt: number; backoffNs: number };
  retriever?: { documentCount: number; durationNs: number };
  durationNs?: number;
  score?: { type: 'numeric' | 'boolean' | 'categorical'; value?: number };
  body?: {
    text?: string; messages?: string; tags?: string[]; metadata?: Record<string, string>;
    /** system instructions of an LLM start; the provider's response id of an llm_end */
    system?: string; responseId?: string;
    /** sections of a type this addon does not know (a newer producer's) */
    skippedSections?: number;
    cut?: boolean;
  };
}

export interface ConsumerStats {
  consumed: number;
  lost: number;
  abandoned: number;
  bodySlots: number;
  readPos: number;
  cursor: number;
  tail: number;
  lag: number;
  tethered: boolean;
}

declare class NativeConsumer {
  constructor(bus: string, options: ConsumerOptions);
  poll(max?: number): CbusEvent[];
  commit(): number;
  /** resolves true when events may be there, false on timeout; runs on the libuv pool */
  wait(timeoutMs?: number): Promise<boolean>;
  stats(): ConsumerStats;
  close(): void;
  closed(): boolean;
}

export class Consumer extends NativeConsumer implements AsyncIterable<CbusEvent> {
  events(options?: { sliceMs?: number; signal?: AbortSignal }): AsyncGenerator<CbusEvent, void, undefined>;
  [Symbol.asyncIterator](): AsyncGenerator<CbusEvent, void, undefined>;
}

export interface CreateBusOptions {
  capacity?: number;
  lanes?: number;
  bodyLimit?: number;
  losslessWaitNs?: number;
  stallTimeoutNs?: number;
}
export function createBus(name: string, options?: CreateBusOptions): void;
export function destroyBus(name: string): boolean;
export interface BusInfo {
  tail: number;
  dropped: number;
  bodyLimit: number;
  lanes: number;
  producers: { pid: number; name?: string; emitted: number; dropped: number }[];
  consumers: { pid: number; name?: string }[];
}
export function busInfo(name: string): BusInfo;
export function sharedProducers(): { bus: string; name: string; refs: number }[];
export function strerror(code: number): string;
export function version(): string;

export const START: Readonly<{ llm: 0; chatModel: 1; chain: 2; tool: 3; retriever: 4 }>;
export const END: Readonly<{ chain: 0; tool: 1; retriever: 2 }>;
export const ERROR: Readonly<{ llm: 0; chain: 1; tool: 2; retriever: 3 }>;
export const POINT: Readonly<{ agentAction: 0; agentFinish: 1; text: 2; custom: 3; toolEvent: 4 }>;
export const SCORE: Readonly<{ numeric: 1; boolean: 2; categorical: 3 }>;
