// Real incidents judged by rate, bytes and order, produced by the real libraries.
// usage: node incidents.js <mode> <lib> <redis-url> <prefix> [logfile]
// Modes that leave workers running print "ready" and keep them running until stdin
// closes (the capture happens while the incident goes on); the others print "ready"
// and exit.
//   storm    queues (workers running):
//              storm    one job failing for good, attempts 100000 and no backoff: retried
//                       every few milliseconds
//              trickle  one job retried with a fixed 2 s backoff: ~30 retries a minute, half
//                       the storm threshold however long it goes on
//              blip     40 jobs that fail once (a transient error) and succeed on the retry,
//                       exponential backoff: a short burst of retries, not a storm
//              burst    30 jobs with 8 attempts and a fixed 10 ms backoff, all failed for
//                       good a moment before the capture: a storm that has ended
//   bloat    (BullMQ) queues, no worker left:
//              results  60 jobs returning 250 KB each, removeOnComplete: the return values
//                       live on only in the events stream's `completed` entries
//              chatty   8,000 small jobs, stream cap raised to 50,000: many small entries
//   starve   queues (workers running):
//              starve   3 jobs BullMQ: priority 1 / Bull: priority 10, then a steady stream
//                       of jobs that go first (BullMQ: priority 0 / Bull: priority 1)
//              inorder  1,000 jobs of one priority (Bull: none), taken in order, half done
//   consume  queues with a worker connected (running until stdin closes):
//              paused    the worker was paused (BullMQ `worker.pause()`, Bull `queue.pause(true)`,
//                        local), then 5 jobs were added: they wait, the worker is still there
//              noautorun (BullMQ) a Worker built with `autorun: false`, `run()` never called
//              idle      a worker that finished its 5 jobs and waits for more: nothing waits
//              slow      a worker busy with one long job (its lock renewed), 5 jobs behind it
//            then waits <idle> seconds (the 6th argument) so the waiting jobs age
//   leak     a Queue created per "request" and never closed: 120 unnamed connections left
//            idle from one address (Bull: a Queue that added a job: 1 connection each; a
//            BullMQ Queue: 1 each), next to a busy pool of 60 workers that is no leak (named
//            blocking connections, unnamed ones in use: queue `pool`, jobs every 50 ms)
//   stallloop (BullMQ) the job of scheduler `tick` crashes its worker every time (SIGKILLed
//            mid-job, 4 times): schedulers' jobs are never failed for stalling, its stall
//            counter only grows. BullMQ 6, queue `zombie`: a job whose worker crashed twice
//            gets a deferred failure (`defa`) from the stalled checker, is then taken by hand
//            (`getNextJob`) by a process that dies before failing it: active, `defa`, no lock.
//   oomkill  a leaking worker (pino memory logs in <logfile>) SIGKILLed mid-job, restarted
//            under the same pid (a container), recovering the stalled job, killed again:
//            queue `images` holds a re-queued-after-stall job and an active one, lock gone
const { spawn } = require('child_process');
const path = require('path');
const [mode, lib, url, prefix, logfile] = process.argv.slice(2);
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const opened = [];

function conn() { return new IORedis(url, { maxRetriesPerRequest: null }); }
function queue(name, opts = {}) {
  const q = isMQ ? new mod.Queue(name, { connection: conn(), prefix, ...opts }) : new mod(name, url, { prefix, ...opts });
  opened.push(q);
  return q;
}
function worker(name, fn, concurrency = 1) {
  if (isMQ) {
    const w = new mod.Worker(name, fn, { connection: conn(), prefix, concurrency, name: `w-${name}` });
    w.on('error', () => {});
    opened.push(w);
    return w;
  }
  const q = queue(name);
  q.process('*', concurrency, fn);
  q.on('error', () => {});
  return q;
}
async function until(cond, what, ms = 30000) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
async function closeAll() { await Promise.all(opened.map((o) => o.close(true).catch(() => {}))); }
function holdUntilStdinEnds(stop = async () => {}) {
  console.log('ready');
  process.stdin.resume();
  process.stdin.on('end', async () => { await stop(); await closeAll(); process.exit(0); });
}

async function storm() {
  const fail = async (job) => {
    if (job.data.transient && job.attemptsMade > 0) return 'ok';
    throw new Error(`upstream 503 Service Unavailable for account ${job.data.account}`);
  };
  await queue('storm').add('charge', { account: 'acme' }, { attempts: 100000 });
  await queue('trickle').add('charge', { account: 'slow' }, { attempts: 1000, backoff: { type: 'fixed', delay: 2000 } });
  const blip = queue('blip');
  for (let i = 0; i < 40; i++) {
    await blip.add('sync', { account: `a${i}`, transient: true }, { attempts: 3, backoff: { type: 'exponential', delay: 100 } });
  }
  const burst = queue('burst');
  for (let i = 0; i < 30; i++) {
    await burst.add('sync', { account: `b${i}` }, { attempts: 8, backoff: { type: 'fixed', delay: 10 } });
  }
  for (const name of ['storm', 'trickle', 'blip', 'burst']) worker(name, fail, name === 'burst' ? 5 : 1);
  await until(async () => (await burst.getJobCounts()).failed === 30, 'the burst to end');
  await until(async () => (await blip.getJobCounts()).completed === 40, 'the blip to settle');
  await sleep(4500);  // the storm goes on; the trickle retries a few times
  holdUntilStdinEnds();
}

async function bloat() {
  const results = queue('results');
  for (let i = 0; i < 60; i++) await results.add('export', { n: i }, { removeOnComplete: true });
  const chatty = queue('chatty', { streams: { events: { maxLen: 50000 } } });
  for (let i = 0; i < 8000; i += 1000) {
    await chatty.addBulk(Array.from({ length: 1000 }, (_, k) => ({ name: 'ping', data: { n: i + k } })));
  }
  let done = 0;
  worker('results', async () => ({ blob: 'r'.repeat(250 * 1024) })).on('completed', () => { done += 1; });
  worker('chatty', async (job) => job.data.n, 50);
  await until(async () => done === 60 && (await chatty.getJobCounts()).completed === 8000, 'results and chatty to finish');
  await closeAll();
  console.log('ready');
  process.exit(0);
}

async function starve() {
  const work = async () => { await sleep(5); return 1; };
  const s = queue('starve');
  const urgent = isMQ ? 1 : 10;   // what the user believes is urgent / what Bull runs last
  const first = isMQ ? 0 : 1;     // what the library takes first
  // retried with a backoff, as real jobs are: its `delay` must not be taken for the job's own
  for (let i = 0; i < 3; i++) await s.add('report', { n: i }, { priority: urgent, attempts: 3, backoff: { type: 'exponential', delay: 60000 } });
  // A head start of 300 jobs that go first: the worker never runs dry, even on a busy
  // machine where the feed below stalls for a moment (then it would take an urgent job).
  const head = Array.from({ length: 300 }, (_, k) => ({ name: 'ping', data: { k }, opts: first ? { priority: first } : {} }));
  await s.addBulk(head);
  let stop = false;
  const feed = (async () => {  // 300 jobs/s, more than the worker's ~150/s: it never runs dry
    while (!stop) {
      await s.addBulk(Array.from({ length: 30 }, (_, k) => ({ name: 'ping', data: { k }, opts: first ? { priority: first } : {} })));
      await sleep(100);
    }
  })();
  const inorder = queue('inorder');
  await inorder.addBulk(Array.from({ length: 1000 }, (_, k) => ({ name: 'task', data: { k }, opts: isMQ ? { priority: 3 } : {} })));
  worker('starve', work);
  worker('inorder', async () => { await sleep(4); return 1; });
  await until(async () => (await s.getJobCounts()).completed >= 200 && (await inorder.getJobCounts()).completed >= 300,
    'workers to overtake');
  holdUntilStdinEnds(async () => { stop = true; await feed; });
}

// One run of the leaking worker (logging.js leak-hang): leaks per job, logs its memory, and
// hangs on job number `hangAt`; resolves once it hangs, after it was SIGKILLed.
function leakingRun(hangAt, stalledInterval) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'logging.js'), 'leak-hang', lib, url, prefix, 'images',
      logfile, String(hangAt), String(stalledInterval)],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, LOG_PID: '1' } });
    child.stdout.on('data', (b) => { if (String(b).includes('hung')) child.kill('SIGKILL'); });
    child.on('exit', () => resolve());
    child.on('error', reject);
  });
}

async function oomkill() {
  await leakingRun(25, 200);      // killed while job 25 runs: active, its lock expires
  await sleep(1200);
  await leakingRun(50, 200);      // recovers job 25 (stalled checker), then hangs on job 50
  await sleep(1200);              // the last lock expires: an active job without a lock
  console.log('ready');
  process.exit(0);
}

async function consume() {
  const wait = Number(process.argv[7] || 3) * 1000;
  const quick = async () => 1;
  // paused: a worker that stopped taking jobs, its connection still open
  const paused = queue('paused');
  const pw = worker('paused', quick);
  await until(async () => (await paused.getWorkers()).length > 0, 'the paused worker to connect');
  if (isMQ) await pw.pause(); else await pw.pause(true);
  for (let i = 0; i < 5; i++) await paused.add('job', { i });
  if (isMQ) {  // autorun: false, and run() never called
    const na = queue('noautorun');
    const w = new mod.Worker('noautorun', quick, { connection: conn(), prefix, autorun: false, name: 'w-noautorun' });
    w.on('error', () => {});
    opened.push(w);
    await until(async () => (await na.getWorkers()).length > 0, 'the idle worker to connect');
    for (let i = 0; i < 5; i++) await na.add('job', { i });
  }
  // idle: healthy, nothing to do
  const idle = queue('idle');
  for (let i = 0; i < 5; i++) await idle.add('job', { i });
  worker('idle', quick);
  await until(async () => (await idle.getJobCounts()).completed === 5, 'the idle queue to drain');
  // slow: busy with one long job, others wait behind it
  const slow = queue('slow');
  await slow.add('long', { long: true });
  let started = false;
  worker('slow', async (job) => { if (job.data.long) { started = true; await sleep(600000); } return 1; });
  await until(async () => started, 'the long job to start');
  for (let i = 0; i < 5; i++) await slow.add('job', { i });
  await sleep(wait);
  holdUntilStdinEnds();
}

async function leak() {
  const addr = [];
  for (let i = 0; i < 120; i++) {  // a Queue per request, never closed
    const q = isMQ ? new mod.Queue('orders', { connection: conn(), prefix }) : new mod('orders', url, { prefix });
    await q.add('order', { i });
    addr.push(q);
  }
  const pool = queue('pool');
  for (let i = 0; i < 60; i++) worker('pool', async () => { await sleep(20); return 1; }, 1);
  let stop = false;
  const feed = (async () => { while (!stop) { await pool.addBulk(Array.from({ length: 60 }, (_, k) => ({ name: 'p', data: { k } }))); await sleep(50); } })();
  await sleep(Number(process.argv[7] || 3) * 1000);
  holdUntilStdinEnds(async () => { stop = true; await feed; await Promise.all(addr.map((q) => q.close().catch(() => {}))); });
}

// Runs tests/node/worker.js (lock 500 ms, stalled check every 300 ms) on `name` until it
// starts a job, then SIGKILLs it: a worker crashed mid-job.
function crashOnce(name) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'worker.js'), lib, url, prefix, name, '500', '300'],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    child.stdout.on('data', (b) => { if (String(b).includes('started')) child.kill('SIGKILL'); });
    child.on('exit', () => resolve());
    child.on('error', reject);
  });
}

async function zombie() {
  const z = queue('zombie');
  await z.add('convert', { n: 1 });
  for (let i = 0; i < 2; i++) { await crashOnce('zombie'); await sleep(700); }
  // manual processing in a process of its own, which dies holding the job
  await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [__filename, 'take', lib, url, prefix, '', 'zombie'],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    child.on('exit', () => resolve());
    child.on('error', reject);
  });
  await sleep(1500);   // its 500 ms lock expires, and it is past the 1 s a stall is judged after
}

// `take`: the stalled checker defers the stalled job's failure, then the job is taken by hand
// and the process dies (SIGKILL) before failing it.
async function take() {
  const name = process.argv[7];
  const w = new mod.Worker(name, null, { connection: conn(), prefix, autorun: false, lockDuration: 500, stalledInterval: 300 });
  await w.startStalledCheckTimer();
  await until(async () => (await queue(name).getJobCounts()).waiting > 0, 'the stalled job back in wait');
  const job = await w.getNextJob('manual-token');
  if (!job || !job.deferredFailure) throw new Error('no job with a deferred failure was taken');
  process.kill(process.pid, 'SIGKILL');
}

async function stallloop() {
  const tick = queue('tick');
  await tick.upsertJobScheduler('tick', { every: 3600000 }, { name: 'tick', data: {} });
  for (let i = 0; i < 4; i++) { await crashOnce('tick'); await sleep(700); }
  if (lib === 'bullmq6') await zombie();
  await closeAll();
  console.log('ready');
  process.exit(0);
}

const modes = { storm, bloat, starve, oomkill, consume, leak, stallloop, take };
modes[mode]().catch((e) => { console.error(e); process.exit(1); });
