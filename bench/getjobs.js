// The real Node BullMQ reading every job the way a dashboard (bull-board) does: Queue.getJobs
// for each state in pages of 1000. Prints how many jobs it read.
// usage: NODE_PATH=tests/node/node_modules node bench/getjobs.js <redis-url> <prefix> <queue>
const [url, prefix, name] = process.argv.slice(2);
const { Queue } = require('bullmq5');
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve('bullmq5')] }));
const STATES = ['active', 'wait', 'paused', 'prioritized', 'delayed', 'waiting-children', 'failed', 'completed'];

async function main() {
  const q = new Queue(name, { connection: new IORedis(url, { maxRetriesPerRequest: null }), prefix });
  const jobs = [];
  for (const state of STATES) {
    for (let start = 0; ; start += 1000) {
      const page = await q.getJobs([state], start, start + 999, true);
      for (const job of page) jobs.push(job.asJSON());
      if (page.length < 1000) break;
    }
  }
  console.log(jobs.length);
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
