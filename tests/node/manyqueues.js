// A big incident across many queues, made by the real BullMQ 5: in each of COUNT queues, jobs
// that failed without retries (a worker took them and its processor's error failed them), a
// job waiting that no worker serves, and a delayed one. For postmortems at scale.
// usage: node manyqueues.js <redis-url> <prefix> <count>
'use strict';
const { Queue, Worker } = require('bullmq5');
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve('bullmq5')] }));

const [url, prefix, countArg] = process.argv.slice(2);
const count = Number(countArg);
const ERRORS = ['upstream 503 Service Unavailable', 'ECONNREFUSED 10.0.0.7:5432', 'Request failed with status code 400',
  'Promise timed out after 30000 milliseconds'];

async function main() {
  const connection = new IORedis(url, { maxRetriesPerRequest: null });
  for (let i = 0; i < count; i++) {
    const name = `q${String(i).padStart(4, '0')}`;
    const q = new Queue(name, { connection, prefix });
    await q.addBulk([
      { name: 'sync', data: { account: i, n: 0 }, opts: { attempts: 1 } },
      { name: 'sync', data: { account: i, n: 1 }, opts: { attempts: 1 } },
    ]);
    // A worker without a processor, driven by hand: it takes each job with a lock and fails it
    // with its processor's error, as a running worker would.
    const w = new Worker(name, null, { connection, prefix, autorun: false });
    for (let k = 0; k < 2; k++) {
      const token = `t${i}-${k}`;
      const job = await w.getNextJob(token, { block: false });
      if (job) await job.moveToFailed(new Error(`${ERRORS[(i + k) % ERRORS.length]} (account ${i})`), token, false);
    }
    await w.close();
    await q.add('sync', { account: i, n: 2 });
    await q.add('later', { account: i }, { delay: 3600_000 });
    await q.close();
    if (i % 50 === 0) process.stderr.write(`\rmanyqueues: ${i}/${count}`);
  }
  process.stderr.write(`\rmanyqueues: ${count}/${count}\n`);
  await connection.quit();
}
main().catch((e) => { console.error(e); process.exit(1); });
