// BullMQ 6 on PostgreSQL (createPostgresBackend), driven into real incident states.
// usage: node pg.js <mode> <postgres-url> <schema>
//   scenario   queue `emails`: 20 jobs done by a worker that stays connected (healthy);
//              `ocr`: a worker SIGKILLed mid-job (its lock lapses, nothing else runs OCR);
//              `exports`: 2 jobs failed for good, 3 delayed, 2 prioritized, a job log;
//              prints `counts <json>` (getJobCounts of each queue) once quiet, then `ready`,
//              and keeps the emails worker until stdin closes
//   storm      queue `sync`: 60 jobs failing, retried 20 times 300 ms apart, while it runs;
//              prints `ready` once retries flow, until stdin closes
//   fill <n>   queue `bulk`: n waiting jobs added in bulk
//   stuckworker (internal) takes one `ocr` job and hangs (the parent SIGKILLs it)
const { spawn } = require('child_process');
const path = require('path');
const { withBackend, createPostgresBackend } = require('bullmq6');
const [mode, url, schema] = process.argv.slice(2);
const { Queue, Worker } = withBackend(createPostgresBackend);
const connection = { connectionString: url, schema, migrate: true };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what, ms = 30000) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function waitStdin() {
  return new Promise((resolve) => { process.stdin.on('end', resolve); process.stdin.on('close', resolve); process.stdin.resume(); });
}

async function scenario() {
  const emails = new Queue('emails', { connection });
  const ocr = new Queue('ocr', { connection });
  const exportsQ = new Queue('exports', { connection });
  await emails.waitUntilReady();
  // ocr: a worker in its own process takes the job and is SIGKILLed
  await ocr.add('page', { file: 'scan.pdf' }, { attempts: 3 });
  const child = spawn(process.execPath, [__filename, 'stuckworker', url, schema], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve) => child.stdout.on('data', (b) => { if (String(b).includes('started')) resolve(); }));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.on('exit', resolve));
  await sleep(1500);   // its 1 s lock lapses: the job is stalled, whatever else runs quickly after
  // emails: processed by a worker that stays
  const w = new Worker('emails', async (job) => { await job.updateProgress(100); return { sent: job.data.to }; },
    { connection, name: 'mailer', concurrency: 5 });
  w.on('error', () => {});
  for (let i = 0; i < 20; i++) await emails.add('send', { to: `user${i}@example.com` }, { removeOnComplete: 100 });
  await until(async () => (await emails.getJobCounts('completed')).completed === 20, 'emails done');
  // exports: fail for good, then delayed and prioritized jobs nobody takes
  const ew = new Worker('exports', async (job) => {
    await job.log(`exporting ${job.id}`);
    throw new Error(`export failed: S3 answered 503 for ${job.data.report}`);
  }, { connection });
  ew.on('error', () => {});
  for (let i = 0; i < 2; i++) await exportsQ.add('export', { report: `r${i}` }, { attempts: 2, backoff: 10 });
  await until(async () => (await exportsQ.getJobCounts('failed')).failed === 2, 'exports failed');
  await ew.close();
  for (let i = 0; i < 3; i++) await exportsQ.add('later', { n: i }, { delay: 3600000 });
  for (let i = 0; i < 2; i++) await exportsQ.add('urgent', { n: i }, { priority: 5 });
  const counts = {};
  for (const [name, q] of [['emails', emails], ['ocr', ocr], ['exports', exportsQ]]) counts[name] = await q.getJobCounts();
  console.log(`counts ${JSON.stringify(counts)}`);
  console.log('ready');
  await waitStdin();
  await w.close();
  await Promise.all([emails.close(), ocr.close(), exportsQ.close()]);
}

async function storm() {
  const sync = new Queue('sync', { connection });
  await sync.waitUntilReady();
  for (let i = 0; i < 60; i++) {
    await sync.add('sync', { account: i }, { attempts: 20, backoff: { type: 'fixed', delay: 300 } });
  }
  const w = new Worker('sync', async (job) => {
    throw new Error(`partner API 503 for account ${job.data.account}`);
  }, { connection, name: 'syncer', concurrency: 20 });
  w.on('error', () => {});
  await until(async () => {
    const jobs = await sync.getJobs(['delayed', 'wait', 'active', 'failed'], 0, 100);
    return jobs.filter((j) => j.attemptsMade >= 2).length >= 50;
  }, 'retries flowing');
  console.log('ready');
  await waitStdin();
  await w.close();
  await sync.close();
}

async function fill() {
  const n = Number(process.argv[5] || 1000);
  const bulk = new Queue('bulk', { connection });
  await bulk.waitUntilReady();
  for (let i = 0; i < n; i += 1000) {
    const jobs = [];
    for (let j = i; j < Math.min(n, i + 1000); j++) jobs.push({ name: 'row', data: { n: j } });
    await bulk.addBulk(jobs);
  }
  await bulk.close();
}

async function stuckWorker() {
  const w = new Worker('ocr', async () => {
    console.log('started');
    await new Promise(() => {});
  }, { connection, lockDuration: 1000, stalledInterval: 600000, name: 'ocr-worker' });
  w.on('error', () => {});
}

const run = { scenario, storm, fill, stuckworker: stuckWorker }[mode];
if (!run) { console.error(`unknown mode ${mode}`); process.exit(2); }
run().then(() => { if (mode !== 'stuckworker') process.exit(0); }).catch((e) => { console.error(e); process.exit(1); });
