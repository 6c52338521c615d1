// Fills a real Redis Cluster through ioredis' Cluster client, the way BullMQ's docs and
// Bull's README set it up: hash-tagged prefixes (every queue of `{cl}` shares one slot) or
// hash-tagged queue names under a plain prefix (`cq:{orders}`, `cq:{emails}`: one slot each,
// usually on different masters).
// usage: node cluster.js <host:port,...>           fill; prints {queue key: getJobCounts} as one JSON line
//        node cluster.js <host:port,...> workers   connect one idle named worker per BullMQ queue,
//                                                  print "ready", hold them until stdin closes
const { Queue, Worker } = require('bullmq5');
const Bull = require('bull');
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve('bullmq5')] }));
const BullIORedis = require(require.resolve('ioredis', { paths: [require.resolve('bull')] }));

const [nodesArg, mode] = process.argv.slice(2);
const nodes = nodesArg.split(',').map((hp) => { const [host, port] = hp.split(':'); return { host, port: Number(port) }; });
const cluster = (IO) => new IO.Cluster(nodes, { redisOptions: { maxRetriesPerRequest: null } });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function bullmqQueue(prefix, name) {
  const connection = cluster(IORedis);
  const q = new Queue(name, { connection, prefix });
  // 3 complete, 2 fail after 2 attempts, then 4 wait (no worker yet), 1 delayed, 2 prioritized
  const w = new Worker(name, async (job) => { if (job.data.fail) throw new Error('upstream 503'); return { ok: job.data.n }; },
    { connection: cluster(IORedis), prefix });
  for (let n = 0; n < 3; n++) await q.add('ok', { n });
  for (let n = 0; n < 2; n++) await q.add('bad', { n, fail: true }, { attempts: 2, backoff: { type: 'fixed', delay: 10 } });
  for (let i = 0; i < 200; i++) {
    const c = await q.getJobCounts('completed', 'failed');
    if (c.completed === 3 && c.failed === 2) break;
    await sleep(50);
  }
  await w.close();
  for (let n = 0; n < 4; n++) await q.add('later', { n });
  await q.add('delayed', { n: 0 }, { delay: 3600000 });
  await q.add('urgent', { n: 0 }, { priority: 1 });
  await q.add('urgent', { n: 1 }, { priority: 2 });
  return q;
}

async function bullQueue(prefix, name) {
  const clients = [];
  const createClient = () => { const c = cluster(BullIORedis); clients.push(c); return c; };
  const q = new Bull(name, { prefix, createClient });
  q.process(async (job) => { if (job.data.fail) throw new Error('upstream 503'); return { ok: job.data.n }; });
  for (let n = 0; n < 3; n++) await q.add({ n });
  await q.add({ n: 9, fail: true }, { attempts: 1 });
  for (let i = 0; i < 200; i++) {
    const c = await q.getJobCounts();
    if (c.completed === 3 && c.failed === 1) break;
    await sleep(50);
  }
  await q.pause(true);  // stop this process' worker locally; the jobs added next wait
  for (let n = 0; n < 2; n++) await q.add({ n: 100 + n });
  return { q, clients };
}

async function holdWorkers(queues) {
  const workers = queues.map(([prefix, name]) => new Worker(name, async () => { await sleep(3600000); },
    { connection: cluster(IORedis), prefix, name: `w-${name}`, autorun: false }));
  for (const w of workers) await w.waitUntilReady();
  await sleep(300);  // named connections are named on connect: let every node's be named
  process.stdout.write('ready\n');
  await new Promise((r) => { process.stdin.on('end', r); process.stdin.on('close', r); process.stdin.resume(); });
  for (const w of workers) await w.close(true);
}

const MQ_QUEUES = [['{cl}', 'mail'], ['{cl}', 'render'], ['cq', '{orders}'], ['cq', '{emails}']];

async function main() {
  if (mode === 'workers') {  // only connect idle workers to the queues filled before
    await holdWorkers(MQ_QUEUES);
    process.exit(0);
  }
  const out = {};
  const mq = [];
  for (const [prefix, name] of MQ_QUEUES) {
    const q = await bullmqQueue(prefix, name);
    mq.push([prefix, name, q]);
    out[`${prefix}:${name}`] = await q.getJobCounts();
  }
  const { q: bq, clients } = await bullQueue('{bq}', 'legacy');
  out['{bq}:legacy'] = await bq.getJobCounts();
  process.stdout.write(JSON.stringify(out) + '\n');
  await bq.close();
  for (const c of clients) c.disconnect();
  for (const [, , q] of mq) await q.close();
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
