// Adds that the library swallows: it keeps the job it has and writes an event instead.
// usage: node adds.js <lib> <redis-url> <prefix> <step>      (lib: bullmq5, bullmq6)
//   incident  idem       job `order-1` (custom jobId) completed and kept, then added 3 more
//                        times: 3 `duplicated` events, the work asked for is never done
//             redeliver  job `r-1` added 3 times while it waits (no worker): a harmless redelivery;
//                        it carries a propagated trace context (opts `tm`)
//             tenant     deduplication id `tenant-7` (no TTL) added 3 times while its job waits
//             nightly    deduplication id `nightly` (no TTL): one job waiting, its key set
//             throttle   deduplication id `refresh` with a 10 min TTL: the job ran, 2 adds
//                        dropped within the TTL (a throttle by design)
//   readd     `nightly` added 3 more times (run after the job's hash was evicted: BullMQ 5
//             drops every add while the stale key lives; 6 recovers the key at the next add)
// Prints "ready" when done.
const [lib, url, prefix, step] = process.argv.slice(2);
const mod = require(lib);
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function incident() {
  const idem = new mod.Queue('idem', { connection: conn(), prefix });
  await idem.add('charge', { order: 1 }, { jobId: 'order-1' });
  const w = new mod.Worker('idem', async () => 'charged', { connection: conn(), prefix });
  while ((await idem.getJobCounts()).completed < 1) await sleep(20);
  await w.close();
  await sleep(20);
  for (let i = 0; i < 3; i++) await idem.add('charge', { order: 1, retry: i }, { jobId: 'order-1' });
  const redeliver = new mod.Queue('redeliver', { connection: conn(), prefix });
  // the first add carries the caller's trace context (what an OpenTelemetry integration propagates)
  const tm = JSON.stringify({ traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' });
  for (let i = 0; i < 3; i++) await redeliver.add('sync', { n: i }, { jobId: 'r-1', telemetry: { metadata: tm } });
  const tenant = new mod.Queue('tenant', { connection: conn(), prefix });
  for (let i = 0; i < 3; i++) await tenant.add('report', { n: i }, { deduplication: { id: 'tenant-7' } });
  const nightly = new mod.Queue('nightly', { connection: conn(), prefix });
  await nightly.add('rollup', { day: 1 }, { deduplication: { id: 'nightly' } });
  // throttle: deduplication with a TTL; the job runs, and adds within the TTL are dropped
  // by design (a throttle, not lost work)
  const throttle = new mod.Queue('throttle', { connection: conn(), prefix });
  await throttle.add('refresh', { n: 0 }, { deduplication: { id: 'refresh', ttl: 600000 } });
  const tw = new mod.Worker('throttle', async () => 'ok', { connection: conn(), prefix });
  while ((await throttle.getJobCounts()).completed < 1) await sleep(20);
  await tw.close();
  for (let i = 1; i < 3; i++) await throttle.add('refresh', { n: i }, { deduplication: { id: 'refresh', ttl: 600000 } });
}

async function readd() {
  const nightly = new mod.Queue('nightly', { connection: conn(), prefix });
  for (let i = 0; i < 3; i++) await nightly.add('rollup', { day: 2 + i }, { deduplication: { id: 'nightly' } });
}

({ incident, readd })[step]().then(() => { console.log('ready'); process.exit(0); },
  (e) => { console.error(e); process.exit(1); });
