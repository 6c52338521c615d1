// Schedulers and repeatables as the real libraries store them.
// usage: node schedulers.js <lib> <redis-url> <prefix>     (lib: bull, bull3, bullmq5, bullmq6)
//   BullMQ (job schedulers, upsertJobScheduler):
//     reports   one scheduler `daily-report` (cron 03:00): healthy, its next job delayed
//     sync      the same job (name `sync`, same data) under two schedulers with different
//               repeat options, as after a deploy that renamed one: it runs twice as often
//     tenants   one name, `sync`, scheduled per tenant with different data: not a duplicate
//     stuck     scheduler `every-second` (every 1 s) whose next job was removed: due, nothing
//               will run it
//   BullMQ 5 (legacy repeatables, `repeat` on add; BullMQ 6 ignores it), and Bull:
//     legacy    `cleanup` every 60 s and the same job again every 30 s (a duplicate);
//               `digest` per tenant with different data (not a duplicate)
//     upgraded  (BullMQ 5) a legacy repeatable `nightly`; step `upgrade` (run with bullmq6)
//               then adds a job to it from BullMQ 6, as a deploy of v6 does: v6 will not run it
// usage: node schedulers.js <lib> <redis-url> <prefix> [upgrade]
// Prints "ready" when done.
const [lib, url, prefix] = process.argv.slice(2);
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const opened = [];

async function main() {
  if (process.argv[5] === 'upgrade') return upgrade();
  let conn;
  if (isMQ) {
    const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
    conn = () => new IORedis(url, { maxRetriesPerRequest: null });
  }
  const queue = (name) => {
    const q = isMQ ? new mod.Queue(name, { connection: conn(), prefix }) : new mod(name, url, { prefix });
    opened.push(q);
    return q;
  };
  if (isMQ) {
    const reports = queue('reports');
    await reports.upsertJobScheduler('daily-report', { pattern: '0 3 * * *', tz: 'UTC' },
      { name: 'report', data: { kind: 'daily' } });
    const sync = queue('sync');
    await sync.upsertJobScheduler('sync-hourly', { every: 3600000 }, { name: 'sync', data: { scope: 'all' } });
    await sync.upsertJobScheduler('sync-every-30m', { every: 1800000 }, { name: 'sync', data: { scope: 'all' } });
    const tenants = queue('tenants');
    for (const t of ['acme', 'globex']) {
      await tenants.upsertJobScheduler(`sync-${t}`, { every: 3600000 }, { name: 'sync', data: { tenant: t } });
    }
    const stuck = queue('stuck');
    await stuck.upsertJobScheduler('every-second', { every: 1000 }, { name: 'tick', data: {} });
    await stuck.drain(true);   // an operator's drain, delayed jobs included: the scheduler's next job goes too
  }
  if (!isMQ || lib === 'bullmq5') {
    const legacy = queue('legacy');
    await legacy.add('cleanup', { older_than: '7d' }, { repeat: { every: 60000 } });
    await legacy.add('cleanup', { older_than: '7d' }, { repeat: { every: 30000 } });
    for (const t of ['acme', 'globex']) {
      await legacy.add('digest', { tenant: t }, { repeat: { cron: '0 8 * * *', pattern: '0 8 * * *' }, jobId: `digest-${t}` });
    }
  }
  if (lib === 'bullmq5') await queue('upgraded').add('nightly', { all: true }, { repeat: { pattern: '0 2 * * *' } });
  await sleep(1500);   // the stuck scheduler's next run is now in the past
  await Promise.all(opened.map((q) => q.close()));
  console.log('ready');
  process.exit(0);
}
async function upgrade() {   // BullMQ 6 deployed over the BullMQ 5 queue
  const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
  const q = new mod.Queue('upgraded', { connection: new IORedis(url, { maxRetriesPerRequest: null }), prefix });
  await q.add('adhoc', { n: 1 });
  await q.close();
  console.log('ready');
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
