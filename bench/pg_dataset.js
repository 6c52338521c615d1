// The PostgreSQL bench's dataset: COUNT real BullMQ 6 jobs on its PostgreSQL backend, in one
// queue, written and moved by the library itself: all added in bulk (~5 % delayed, ~5 %
// prioritized, ~100 B of data each), then a worker finishes ~20 % of them (one in five
// failing for good with a stack trace; the others return a small value).
// usage: NODE_PATH=tests/node/node_modules node bench/pg_dataset.js <postgres-url> <schema> <queue> <count>
const [url, schema, name, countArg] = process.argv.slice(2);
const count = Number(countArg);
const { withBackend, createPostgresBackend } = require('bullmq6');
const { Queue, Worker } = withBackend(createPostgresBackend);
const connection = { connectionString: url, schema, migrate: true };
const pad = 'x'.repeat(100);
const say = (s) => process.stderr.write(`\rdataset: ${s}`.padEnd(60));

async function main() {
  const q = new Queue(name, { connection });
  await q.waitUntilReady();
  const batch = 1000;
  for (let i = 0; i < count; i += batch) {
    const jobs = [];
    for (let j = i; j < Math.min(count, i + batch); j++) {
      const opts = { attempts: 1, removeOnComplete: false };
      if (j % 20 === 1) opts.delay = 3600000 + j;
      else if (j % 20 === 2) opts.priority = 1 + (j % 7);
      jobs.push({ name: ['send-email', 'resize-image', 'sync-crm', 'charge-card'][j % 4],
                  data: { n: j, user: `user-${j % 5000}`, pad }, opts });
    }
    await q.addBulk(jobs);
    if ((i / batch) % 20 === 0) say(`added ${i + jobs.length}/${count}`);
  }
  const target = Math.floor(count * 0.2);
  let done = 0;
  await new Promise((resolve) => {
    const w = new Worker(name, async (job) => {
      done += 1;
      if (done % 5000 === 0) say(`processed ${done}/${target}`);
      if (done >= target) { w.pause(true); resolve(); }
      if (job.data.n % 5 === 0) throw new Error(`upstream 503 for ${job.data.user}`);
      return { ok: job.data.n };
    }, { connection, concurrency: 50 });
    w.on('error', () => {});
  });
  await new Promise((r) => setTimeout(r, 1000));
  process.stderr.write('\n');
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
