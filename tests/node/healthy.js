// A well-run queue: bounded exponential retries, bounded retention, metrics, small
// payloads, and a live named worker that stays connected until stdin closes.
// Prints "ready" once its jobs are done. usage: node healthy.js <lib> <redis-url> <prefix>
const [lib, url, prefix] = process.argv.slice(2);
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
const opts = { attempts: 4, backoff: { type: 'exponential', delay: 1000 },
               removeOnComplete: { count: 1000 }, removeOnFail: { count: 5000 } };
async function main() {
  const work = async (job) => ({ ok: job.data.n });
  let q, w;
  if (isMQ) {
    const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
    const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
    q = new mod.Queue('orders', { connection: conn(), prefix, defaultJobOptions: opts });
    w = new mod.Worker('orders', work, { connection: conn(), prefix, name: 'healthy-1', concurrency: 5,
                                         metrics: { maxDataPoints: 60 } });
  } else {
    q = new mod('orders', url, { prefix, metrics: { maxDataPoints: 60 },
                                 defaultJobOptions: { ...opts, timeout: 30000 } });
    q.process('*', 5, work);
  }
  for (let i = 0; i < 40; i++) await q.add('order', { n: i });
  for (;;) {
    const c = await q.getJobCounts();
    if (c.completed === 40) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  console.log('ready');
  process.stdin.resume();
  process.stdin.on('end', async () => { if (w) await w.close(); await q.close(); process.exit(0); });
}
main().catch((e) => { console.error(e); process.exit(1); });
