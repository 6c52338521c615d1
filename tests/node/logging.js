// Real workers writing real logs (pino, winston) while they get into trouble.
// usage: node logging.js <mode> <lib> <redis-url> <prefix> <queue> <logfile> [n]
//   leak          pino; each job retains ~4 MB of objects and logs process.memoryUsage()
//   steady        pino; the same memory logs from a worker whose garbage dies young
//   locklost      pino; the processor blocks the event loop past lockDuration: the lock expires
//   winston-json  winston JSON lines; jobs fail with upstream errors (Bull: also a job name
//                 with no process handler)
//   winston-text  the same through winston's printf format (plain text lines)
//   winston-simple the same through winston's default `simple` format ("error: msg {meta}")
//   leak-steps    pino; every 20th job keeps 4 MB for good, and jobs 140-159 are slow (a few
//                 seconds of pause in the middle): a leak per job, bent over wall time
//   warmup        pino; a memo cache keyed by one of 60 customers fills over the first jobs,
//                 then stays put: the heap rises and levels off (not a leak)
//   leak-hang     pino; a leaking worker that hangs on job n == [n] (printing "hung"), for a
//                 parent to SIGKILL as the OOM killer would; [stalledMs] its stalled interval
//   refused       pino; a worker started against a Redis that is not there (ECONNREFUSED)
//   oom           pino; a producer adding jobs until Redis (noeviction) refuses with OOM
const [mode, lib, url, prefix, queueName, logfile, nArg, stalledArg] = process.argv.slice(2);
const n = Number(nArg || 30);
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
const IORedis = isMQ ? require(require.resolve('ioredis', { paths: [require.resolve(lib)] })) : null;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pinoLogger() {
  const pino = require('pino');
  // LOG_PID: the pid a container would show (its own namespace: the same after a restart)
  const pid = Number(process.env.LOG_PID || process.pid);
  return pino({ base: { pid, hostname: 'worker-a' } }, pino.destination({ dest: logfile, sync: true, append: true }));
}

function winstonLogger(text) {
  const winston = require('winston');
  const { combine, timestamp, json, printf, simple } = winston.format;
  const format = text === 'simple' ? combine(timestamp(), simple())  // "error: msg {meta}"
    : text ? combine(timestamp(), printf((i) => `${i.timestamp} ${i.level}: ${i.message}`))
      : combine(timestamp(), json());
  return winston.createLogger({ level: 'info', format, transports: [new winston.transports.File({ filename: logfile })] });
}

function queueOf(extra = {}) {
  if (isMQ) return new mod.Queue(queueName, { connection: new IORedis(url, { maxRetriesPerRequest: null }), prefix, ...extra });
  return new mod(queueName, url, { prefix, ...extra });
}

// processor(job) -> result; returns { close } once the worker is running
function workerOf(processor, opts, on) {
  if (isMQ) {
    const w = new mod.Worker(queueName, processor, {
      connection: new IORedis(url, { maxRetriesPerRequest: null }), prefix, concurrency: 1,
      name: `logging-${process.pid}`, ...opts });
    for (const [ev, fn] of Object.entries(on)) w.on(ev, fn);
    return w;
  }
  const q = new mod(queueName, url, { prefix, settings: opts.settings || {} });
  for (const [ev, fn] of Object.entries(on)) q.on(ev, fn);
  q.process(opts.handlerName || '*', 1, processor);
  return q;
}

async function finishedCount(q) {
  const c = await q.getJobCounts();
  return c.completed + c.failed;
}

async function waitFinished(q, total, timeoutMs = 60000, base = 0) {
  const t0 = Date.now();
  for (;;) {
    const c = await q.getJobCounts();
    if (c.completed + c.failed >= base + total) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timeout waiting for ${total} jobs: ${JSON.stringify(c)}`);
    await sleep(50);
  }
}

async function memoryRun(leak) {
  const logger = pinoLogger();
  const kept = [];
  const q = queueOf();
  const w = workerOf(async (job) => {
    // leak: 100k objects per job kept forever; steady: 10k short-lived objects per job
    // (young garbage, collected at once: the heap stays flat even over a few seconds)
    const junk = Array.from({ length: leak ? 100000 : 10000 }, (_, i) => ({ i, job: job.id, s: `payload-${i}` }));
    if (leak) kept.push(junk);  // the bug: a module-level cache that nobody empties
    logger.info({ jobId: job.id, queue: queueName, memory: process.memoryUsage() }, 'job done');
    return { rows: junk.length };
  }, {}, { error: (err) => logger.error({ err }, 'worker error') });
  const base = await finishedCount(q);  // a second run on the same queue (a restarted worker)
  for (let i = 0; i < n; i++) await q.add('render', { n: i }, { removeOnComplete: 1000, attempts: 2 });
  await waitFinished(q, n, 60000, base);
  await w.close();
  await q.close();
}

// A block of ~`mb` MB of small objects on the V8 heap (what a leaking cache holds).
const block = (mb, tag) => Array.from({ length: mb * 10000 }, (_, i) => ({ i, tag, s: `payload-${i}` }));

// Processes jobs n = 0..count-1 in order with `step(n)`, logging memory after each.
async function perJob(count, step, opts = {}) {
  const logger = pinoLogger();
  const q = queueOf();
  const w = workerOf(async (job) => {
    await step(job.data.n);
    logger.info({ jobId: job.id, queue: queueName, memory: process.memoryUsage() }, 'job done');
    return { n: job.data.n };
  }, opts, { error: (err) => logger.error({ err }, 'worker error') });
  const base = await finishedCount(q);
  for (let i = 0; i < count; i++) await q.add('render', { n: i }, { removeOnComplete: 1000 });
  await waitFinished(q, count, 90000, base);
  await w.close();
  await q.close();
}

async function leakSteps() {
  const kept = [];
  await perJob(300, async (n) => {
    if (n % 20 === 19) kept.push(block(4, n));     // the bug: 4 MB kept every 20 jobs
    if (n >= 140 && n < 160) await sleep(200);     // slow jobs: a quiet stretch of ~4 s
  });
}

async function warmup() {
  const memo = new Map();  // one entry per customer: bounded, filled during warm-up
  await perJob(300, async (n) => {
    const customer = n % 60;
    if (!memo.has(customer)) memo.set(customer, block(1, customer));
  });
}

async function leakHang() {
  const hangAt = n;
  const logger = pinoLogger();
  const kept = [];
  const q = queueOf();
  const stalledInterval = Number(stalledArg || 30000);
  const opts = isMQ ? { lockDuration: 1000, stalledInterval, maxStalledCount: 1 }
    : { settings: { lockDuration: 1000, stalledInterval, maxStalledCount: 1 } };
  workerOf(async (job) => {
    if (job.data.n === hangAt) { console.log(`hung ${job.id}`); return new Promise(() => {}); }
    kept.push(block(3, job.id));
    await sleep(30);  // real work takes a moment: the stalled checker gets its turns
    logger.info({ jobId: job.id, queue: queueName, memory: process.memoryUsage() }, 'job done');
    return { n: job.data.n };
  }, opts, { error: (err) => logger.error({ err, queue: queueName }, 'worker error') });
  const first = (await q.getJobCounts()).completed ? hangAt - 24 : 0;  // 25 jobs per run
  for (let i = first; i < hangAt + 5; i++) await q.add('render', { n: i }, { attempts: 3 });
}

async function lockLost() {
  const logger = pinoLogger();
  const q = queueOf();
  const busy = (ms) => { const end = Date.now() + ms; while (Date.now() < end) { /* CPU-bound, no await */ } };
  const settings = { lockDuration: 1000, lockRenewTime: 500, stalledInterval: 600000 };
  const w = workerOf(async (job) => {
    logger.info({ jobId: job.id, queue: queueName }, 'started');
    busy(2500);  // blocks the event loop: the lock is neither renewed nor kept
    return 'done';
  }, isMQ ? { lockDuration: 1000, stalledInterval: 600000 } : { settings }, {
    error: (err) => logger.error({ err, queue: queueName }, 'worker error'),
    failed: (job, err) => logger.error({ jobId: job && job.id, queue: queueName, err }, 'job failed'),
    completed: (job) => logger.info({ jobId: job.id, queue: queueName }, 'job completed'),
  });
  await q.add('crunch', { n: 1 }, { attempts: 1 });
  await sleep(4500);
  await w.close(true);
  await q.close();
}

async function winstonRun(text) {
  const logger = winstonLogger(text);
  const q = queueOf();
  const fail = async (job) => { throw new Error(`upstream 503 for user u${job.data.n}`); };
  const on = {
    failed: (job, err) => (text === true
      ? logger.error(`Job ${job.id} failed: ${err.message}`)
      : text === 'simple' ? logger.error(`Job ${job.id} failed: ${err.message}`, { queue: queueName })
        : logger.error('job failed', { jobId: job.id, queue: queueName, error: err.message })),
    error: (err) => logger.error(`worker error: ${err.message}`),
  };
  const w = workerOf(fail, isMQ ? {} : { handlerName: 'sync' }, on);
  let total = 0;
  for (let i = 0; i < n; i++, total++) await q.add('sync', { n: i }, { attempts: 1 });
  if (!isMQ) {  // a producer deployed before its worker: a job name nobody handles
    for (let i = 0; i < 3; i++, total++) await q.add('export', { n: i }, { attempts: 1 });
  }
  await waitFinished(q, total);
  await w.close();
  await q.close();
  await new Promise((resolve) => { logger.on('finish', resolve); logger.end(); });
}

async function refused() {
  const logger = pinoLogger();
  const w = workerOf(async () => 'never', {}, { error: (err) => logger.error({ err, queue: queueName }, 'worker error') });
  await sleep(1500);
  w.close(true).catch(() => {});
  await sleep(100);
}

async function oom() {
  const logger = pinoLogger();
  const q = queueOf();
  const pad = 'x'.repeat(20000);
  for (let i = 0; i < 100000; i++) {
    try {
      await q.add('upload', { n: i, pad });
    } catch (err) {
      logger.error({ err, queue: queueName }, 'could not add job');
      break;
    }
  }
  await q.close();
}

const modes = {
  leak: () => memoryRun(true), steady: () => memoryRun(false), locklost: lockLost,
  'winston-json': () => winstonRun(false), 'winston-text': () => winstonRun(true),
  'winston-simple': () => winstonRun('simple'), refused, oom,
  'leak-steps': leakSteps, warmup, 'leak-hang': leakHang,
};
// leak-hang never returns: its parent kills it
modes[mode]().then(() => mode === 'leak-hang' || process.exit(0), (e) => { console.error(e); process.exit(1); });
