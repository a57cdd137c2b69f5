// ESM entry: the same objects as the CommonJS entry (one addon per process).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const cbus = require('./index.cjs');

export const {
  Producer, Consumer, createBus, destroyBus, busInfo, sharedProducers, strerror, version,
  START, END, ERROR, POINT, SCORE,
} = cbus;
export default cbus;
