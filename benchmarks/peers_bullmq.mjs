// BullMQ's side of benchmarks/peers.py, one phase per run. peers.py copies this file into its
// cache directory (where it installed bullmq) and runs it with node:
//
//   node peers_bullmq.mjs <redis-url> <phase> <n> <concurrency>
//
// phase: "enqueue" (Queue.add, one at a time), "enqueue-concurrent" (Queue.add from
// <concurrency> async tasks at once) or "worker" (<n> jobs added with addBulk first, then one
// Worker with <concurrency> runs them all; the time ends when the n-th "completed" event fires).
// The script sets up and warms up, prints {"ready": true}, waits for a line on stdin (peers.py
// reads the server's INFO meanwhile), runs the timed part, closes everything, then prints
// {"seconds": ..., "done": ...}: one JSON object per line.
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';
import { createInterface } from 'node:readline';

const [url, phase, nText, concurrencyText] = process.argv.slice(2);
const n = Number(nText);
const concurrency = Number(concurrencyText);
// BullMQ 6 takes a client made by its caller in an ES module (ioredis is an optional peer).
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const name = 'bench';
const queue = new Queue(name, { connection });
await queue.waitUntilReady();

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (value) => process.stdout.write(JSON.stringify(value) + '\n');

let worker = null;
let finished = null;
let timed;
if (phase === 'enqueue' || phase === 'enqueue-concurrent') {
  for (let i = 0; i < 20; i++) await queue.add('noop', { warm: i });  // connection, scripts
  timed = async () => {
    if (phase === 'enqueue') {
      for (let i = 0; i < n; i++) await queue.add('noop', { i });
      return n;
    }
    let next = 0;
    const task = async () => {
      while (next < n) await queue.add('noop', { i: next++ });
    };
    await Promise.all(Array.from({ length: concurrency }, task));
    return n;
  };
} else if (phase === 'worker') {
  for (let start = 0; start < n; start += 1000) {
    const batch = [];
    for (let i = start; i < Math.min(n, start + 1000); i++) batch.push({ name: 'noop', data: { i } });
    await queue.addBulk(batch);
  }
  let done = 0;
  let resolve;
  finished = new Promise((r) => { resolve = r; });
  worker = new Worker(name, async () => {}, { connection, concurrency, autorun: false });
  worker.on('completed', () => {
    done += 1;
    if (done === n) resolve({ at: performance.now(), done });
  });
  worker.on('failed', (job, err) => { console.error(`job ${job?.id} failed: ${err}`); });
  await worker.waitUntilReady();
  timed = async () => {
    worker.run();
    return finished;
  };
} else {
  console.error(`unknown phase ${phase}`);
  process.exit(2);
}

say({ ready: true });
await lines.next();
const started = performance.now();
const outcome = await timed();
const ended = typeof outcome === 'object' ? outcome.at : performance.now();
const done = typeof outcome === 'object' ? outcome.done : outcome;
if (worker) await worker.close();
await queue.close();
await connection.quit();
say({ seconds: (ended - started) / 1000, done });
process.exit(0);
