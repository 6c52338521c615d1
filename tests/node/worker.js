// A worker whose processor never finishes: the scenario SIGKILLs it mid-job, the way a
// crashed or OOM-killed Node process leaves a job "active" in Redis.
// usage: node worker.js <lib> <redis-url> <prefix> <queue> <lockDurationMs> [stalledIntervalMs]
const [lib, url, prefix, queueName, lockDuration, stalledArg] = process.argv.slice(2);
const stalledInterval = Number(stalledArg || 30000);
const mod = require(lib);
const never = () => new Promise(() => {});
if (lib.startsWith('bullmq')) {
  const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
  const connection = new IORedis(url, { maxRetriesPerRequest: null });
  const w = new mod.Worker(queueName, async (job) => {
    console.log(`started ${job.id}`);
    return never();
  }, { connection, prefix, lockDuration: Number(lockDuration), stalledInterval, name: `crashy-${process.pid}` });
  w.on('error', () => {});
} else {
  const q = new mod(queueName, url, { prefix, settings: { lockDuration: Number(lockDuration), stalledInterval } });
  q.process('*', async (job) => {
    console.log(`started ${job.id}`);
    return never();
  });
}
