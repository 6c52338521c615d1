// A producer adding jobs at a steady rate (and optionally a slower worker draining them):
// Redis fills up while a series is captured. Prints "producing" once the first jobs are in.
// usage: node produce.js <lib> <redis-url> <prefix> <queue> <jobsPerSec> <dataBytes> <seconds> [drainMsPerJob] [customIds]
//   customIds: "ids" gives every job its own jobId (the queue's id counter then stays put)
const [lib, url, prefix, name, rateArg, bytesArg, secondsArg, drainArg, customIds] = process.argv.slice(2);
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
const rate = Number(rateArg);
const pad = 'x'.repeat(Number(bytesArg));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function main() {
  let q;
  let w;
  const work = async () => { await sleep(Number(drainArg)); return 1; };
  if (isMQ) {
    const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
    const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
    q = new mod.Queue(name, { connection: conn(), prefix });
    if (Number(drainArg)) w = new mod.Worker(name, work, { connection: conn(), prefix, concurrency: 1, name: 'slow-1' });
  } else {
    q = new mod(name, url, { prefix });
    if (Number(drainArg)) q.process('*', 1, work);
  }
  const t0 = Date.now();
  const end = t0 + Number(secondsArg) * 1000;
  let sent = 0;
  const tick = 100;  // add in small bursts every 100 ms
  while (Date.now() < end) {
    const due = Math.floor(((Date.now() - t0) / 1000) * rate);
    const jobs = [];
    for (; sent < due; sent++) {
      const opts = { attempts: 3, backoff: { type: 'exponential', delay: 1000 } };
      if (customIds === 'ids') opts.jobId = `upload-${sent}`;
      jobs.push({ name: 'upload', data: { n: sent, pad }, opts });
    }
    if (jobs.length) await q.addBulk(jobs);
    if (sent && sent === jobs.length) console.log('producing');
    await sleep(tick);
  }
  if (w) await w.close(true);
  await q.close();
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
