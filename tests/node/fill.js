// Adds COUNT waiting jobs to one queue with the real library's addBulk (for benchmarks
// and tests that need a big queue). usage: node fill.js <lib> <redis-url> <prefix> <queue> <count> [dataBytes]
const [lib, url, prefix, name, countArg, bytesArg] = process.argv.slice(2);
const count = Number(countArg);
const pad = 'x'.repeat(Number(bytesArg || 100));
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
async function main() {
  let q;
  if (isMQ) {
    const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
    q = new mod.Queue(name, { connection: new IORedis(url, { maxRetriesPerRequest: null }), prefix });
  } else {
    q = new mod(name, url, { prefix });
  }
  const batch = 1000;
  for (let i = 0; i < count; i += batch) {
    const jobs = [];
    for (let j = i; j < Math.min(count, i + batch); j++) {
      jobs.push({ name: 'bulk', data: { n: j, pad }, opts: { attempts: 3, backoff: { type: 'exponential', delay: 1000 } } });
    }
    await q.addBulk(jobs);
    if ((i / batch) % 50 === 0) process.stderr.write(`\rfill: ${i + jobs.length}/${count}`);
  }
  process.stderr.write(`\rfill: ${count}/${count}\n`);
  await q.close();
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
