// A well-run queue: bounded exponential retries, bounded retention, metrics, small
// payloads, and a live named worker that stays connected until stdin closes. A busy one,
// and like any real system it has a flaky dependency: every 20th job (5 %, 20 of 400)
// times out once (ETIMEDOUT from an HTTP API) and succeeds on its retry. Prints "ready"
// once its jobs are done.
// usage: node healthy.js <lib> <redis-url> <prefix>      (lib: bull, bull3, bullmq5, bullmq6)
const [lib, url, prefix] = process.argv.slice(2);
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
const bull3 = lib === 'bull3';  // Bull 3 takes only numbers or booleans for removeOn*
const opts = { attempts: 4, backoff: { type: 'exponential', delay: 200 },
               removeOnComplete: bull3 ? 1000 : { count: 1000 }, removeOnFail: bull3 ? 5000 : { count: 5000 } };
const N = 400;
async function main() {
  const work = async (job) => {
    if (job.data.n % 20 === 0 && job.attemptsMade === 0) {
      throw new Error('connect ETIMEDOUT 10.0.4.7:443 (payments API)');
    }
    return { ok: job.data.n };
  };
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
  for (let i = 0; i < N; i += 100) {
    await Promise.all(Array.from({ length: 100 }, (_, k) => q.add('order', { n: i + k })));
  }
  for (;;) {
    const c = await q.getJobCounts();
    if (c.completed === N) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  console.log('ready');
  process.stdin.resume();
  process.stdin.on('end', async () => { if (w) await w.close(); await q.close(); process.exit(0); });
}
main().catch((e) => { console.error(e); process.exit(1); });
