// The bench's dataset: COUNT real BullMQ 5 jobs in one queue, in mixed states, written and
// moved by the library itself (no hand-written keys).
//   ~35 % completed, ~10 % failed (error + stack trace), ~1,000 active (taken by a worker
//   that then vanished, locks held for an hour), ~5 % delayed, ~5 % prioritized, the rest
//   waiting. Every job carries ~DATA_BYTES of data and 3 attempts with backoff; completed
//   jobs carry a small return value.
// usage: NODE_PATH=tests/node/node_modules node bench/dataset.js <redis-url> <prefix> <queue> <count> [dataBytes]
const [url, prefix, name, countArg, bytesArg] = process.argv.slice(2);
const count = Number(countArg);
const pad = 'x'.repeat(Number(bytesArg || 100));
const { Queue, Worker } = require('bullmq5');
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve('bullmq5')] }));

const say = (s) => process.stderr.write(`\rdataset: ${s}`.padEnd(60));

async function main() {
  const connection = new IORedis(url, { maxRetriesPerRequest: null });
  const q = new Queue(name, { connection, prefix });
  const batch = 1000;
  for (let i = 0; i < count; i += batch) {
    const jobs = [];
    for (let j = i; j < Math.min(count, i + batch); j++) {
      const opts = { attempts: j % 10 === 5 ? 3 : 1, backoff: { type: 'exponential', delay: 3600000 } };
      if (j % 20 === 1) opts.delay = 3600000 + j;             // 5 % delayed for an hour
      else if (j % 20 === 2) opts.priority = 1 + (j % 7);    // 5 % prioritized
      jobs.push({ name: ['send-email', 'resize-image', 'sync-crm', 'charge-card'][j % 4],
                  data: { n: j, user: `user-${j % 5000}`, pad }, opts });
    }
    await q.addBulk(jobs);
    if ((i / batch) % 20 === 0) say(`added ${i + jobs.length}/${count}`);
  }
  // A worker finishes ~45 % of the jobs: one in five throws (failed, or retried with an
  // hour's backoff: delayed), the others return a small value.
  const target = Math.floor(count * 0.45);
  let done = 0;
  const wconn = new IORedis(url, { maxRetriesPerRequest: null });
  await new Promise((resolve) => {
    const w = new Worker(name, async (job) => {
      done += 1;
      if (done % 5000 === 0) say(`processed ${done}/${target}`);
      if (done === target) { w.close().then(resolve); }
      if (job.data.n % 5 === 0) throw new Error(`upstream 503 for ${job.data.user}: Service Unavailable`);
      return { ok: true, ms: job.data.n % 900 };
    }, { connection: wconn, prefix, concurrency: 200, autorun: true });
    w.on('error', () => {});
  });
  // ~1,000 jobs left active: taken with getNextJob by a worker that never finishes them
  // (its locks last an hour, so the dataset stays the same while the bench reads it).
  const grabber = new Worker(name, null, { connection: new IORedis(url, { maxRetriesPerRequest: null }), prefix,
                                           lockDuration: 3600000 });
  for (let i = 0; i < Math.min(1000, Math.floor(count / 100)); i++) {
    if (!(await grabber.getNextJob('bench-token'))) break;
  }
  say(`done: ${count} jobs\n`);
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
