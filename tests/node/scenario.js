// Drives a real Bull/BullMQ installation into incident states, then prints what the
// library itself reports (getJobCounts and every job as the library reads it) as JSON.
// usage: node scenario.js <lib> <redis-url> <prefix> [scale]
//   lib: bull | bull3 | bullmq4 | bullmq5 | bullmq6   (package aliases in package.json)
// Queues it leaves behind (names are stable, the tests rely on them):
//   mail      completed jobs, jobs failed after retries with exponential backoff, a retry
//             waiting in delayed, job logs and progress, data with secrets and a Buffer
//   convert   a worker SIGKILLed mid-job with a short lock: active, lock gone (stalled)
//   render    a worker SIGKILLed mid-job with a long lock: active, lock still held
//   backlog   delayed and prioritized jobs, never processed (BullMQ 5/6: also a job under a
//             deduplication id and a job scheduler, cron 04:00 UTC)
//   reports   a paused queue with waiting jobs
//   api       requests failing with HTTP 400, retried with exponential backoff
//   heavy     a 150 KB and a 1.2 MB payload, a base64 blob, a 200 KB return value
//   limited   a rate limit of one hour: worker.rateLimit (BullMQ) / limiter (Bull)
//   late      a delayed job due in 10 ms that nothing promotes (no worker)
//   slowjobs  (Bull) a job failed by Bull's `timeout` while its work went on
//   timer     one delayed job alone: BullMQ 2-4 leave a "0:<due ms>" marker in wait
//   stalls    a job whose worker died, recovered by the library's own stalled check with
//             maxStalledCount 0: failed "job stalled more than allowable limit" (bull,
//             BullMQ <= 5.53.1) or back in wait with a deferred failure `defa` (later BullMQ)
//   flow-parent / flow-child  (BullMQ) a parent waiting on children, one child failed
const { spawn } = require('child_process');
const path = require('path');
const [lib, url, prefix, scaleArg] = process.argv.slice(2);
const scale = Number(scaleArg || 1);
const mod = require(lib);
const isMQ = lib.startsWith('bullmq');
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve(lib)] }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function conn() { return new IORedis(url, { maxRetriesPerRequest: null }); }
const opened = [];
function queue(name) {
  const q = isMQ ? new mod.Queue(name, { connection: conn(), prefix })
                 : new mod(name, url, { prefix });
  opened.push(q);
  return q;
}
// A processor that fails on data.fail, logs and reports progress otherwise.
async function processor(job) {
  if (job.data.status) throw new Error(`Request failed with status code ${job.data.status}`);
  if (job.data.fail) {
    const err = new Error(`upstream 503 for user ${job.data.user}`);
    throw err;
  }
  if (job.data.sleep) await sleep(job.data.sleep);
  if (job.data.bigResult) return { blob: 'r'.repeat(job.data.bigResult) };
  await job.log(`processing ${job.id}`);
  if (isMQ) await job.updateProgress(100); else await job.progress(100);
  return { ok: true, id: job.id };
}
function startWorker(name, fn, opts = {}) {
  if (isMQ) {
    const w = new mod.Worker(name, fn, { connection: conn(), prefix, name: 'w-main', ...opts });
    w.on('error', () => {});
    opened.push(w);
    return w;
  }
  const q = queue(name);
  q.process('*', opts.concurrency || 1, fn);
  return q;
}
async function until(cond, what, ms = 20000) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
function crashWorker(name, lockDuration, stalledInterval = 30000) {
  // Start a worker in its own process, wait until it holds a job, SIGKILL it.
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'worker.js'), lib, url, prefix, name, String(lockDuration), String(stalledInterval)],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    child.stdout.on('data', (b) => {
      if (String(b).includes('started')) { child.kill('SIGKILL'); }
    });
    child.on('exit', () => resolve());
    child.on('error', reject);
  });
}

async function jobView(q, job) {
  const state = await job.getState();
  return {
    id: String(job.id), name: job.name, state,
    attemptsMade: job.attemptsMade ?? null,
    attemptsStarted: job.attemptsStarted ?? null,
    stalledCounter: job.stalledCounter ?? null,
    failedReason: job.failedReason ?? null,
    stacktraceLength: (job.stacktrace || []).length,
    timestamp: job.timestamp ?? null,
    processedOn: job.processedOn ?? null,
    finishedOn: job.finishedOn ?? null,
    delay: job.delay ?? (job.opts && job.opts.delay) ?? null,
    priority: (job.priority ?? job.opts.priority) || 0,
    optsAttempts: job.opts.attempts ?? null,
    progress: job._progress ?? job.progress ?? null,
    processedBy: job.processedBy ?? null,
    parentKey: job.parentKey ?? null,
  };
}

async function report(names) {
  const out = { lib, version: require(`${lib}/package.json`).version, queues: {} };
  for (const name of names) {
    const q = queue(name);
    const counts = await q.getJobCounts();
    const types = isMQ ? ['active', 'completed', 'delayed', 'failed', 'prioritized', 'wait', 'paused', 'waiting-children']
                       : ['active', 'completed', 'delayed', 'failed', 'wait', 'paused'];
    const jobs = [];
    for (const t of types) {
      const js = await q.getJobs([t], 0, -1);
      for (const j of js) if (j) jobs.push(await jobView(q, j));
    }
    out.queues[name] = { counts, jobs };
  }
  return out;
}

async function main() {
  // --- mail: completions, retries that exhaust, a pending retry, logs, secrets, a Buffer
  const mail = queue('mail');
  const n = 5 * scale;
  for (let i = 0; i < n; i++) {
    await mail.add('welcome', { user: `u${i}`, password: 'hunter2', apiKey: 'sk-live-123',
                                 blob: Buffer.from('hello'), nested: { authorization: 'Bearer x' } },
                   { keepLogs: 5 });
  }
  for (let i = 0; i < 3 * scale; i++) {
    await mail.add('digest', { user: `f${i}`, fail: true },
                   { attempts: 3, backoff: { type: 'exponential', delay: 20 } });
  }
  await mail.add('digest', { user: 'slow-retry', fail: true },
                 { attempts: 5, backoff: { type: 'fixed', delay: 3600000 } });
  const metrics = { maxDataPoints: 60 };
  const w = isMQ ? startWorker('mail', processor, { concurrency: 2, metrics })
                 : (() => { const q = new mod('mail', url, { prefix, metrics }); opened.push(q);
                            q.process('*', 2, processor); return q; })();
  await until(async () => {
    const c = await mail.getJobCounts();
    return c.completed === n && c.failed === 3 * scale && c.delayed === 1;
  }, 'mail jobs to settle');
  await w.close();

  // --- convert / render: crashed workers
  const convert = queue('convert');
  await convert.add('pdf', { doc: 'a.docx' }, { attempts: 2 });
  await convert.add('pdf', { doc: 'b.docx' }, { attempts: 2 });
  await crashWorker('convert', 300);
  const render = queue('render');
  await render.add('video', { clip: 'intro.mp4' });
  await crashWorker('render', 600000);
  await sleep(500); // let the short lock expire

  // --- backlog: delayed and prioritized, no worker
  const backlog = queue('backlog');
  await backlog.add('later', { n: 1 }, { delay: 3600000 });
  await backlog.add('later', { n: 2 }, { delay: 7200000 });
  await backlog.add('urgent', { n: 3 }, { priority: 1 });
  await backlog.add('whenever', { n: 4 }, { priority: 7 });
  await backlog.add('plain', { n: 5 });
  if (!isMQ) await backlog.add('forever', { n: 6 }, { attempts: Infinity }); // stored as null; BullMQ refuses it
  await backlog.add('stubborn', { n: 7 }, { attempts: 1000, backoff: 1000 });
  if (lib === 'bullmq5' || lib === 'bullmq6') {
    // a job under a deduplication id, and a job scheduler whose next run is tomorrow at 04:00
    await backlog.add('digest', { n: 8 }, { deduplication: { id: 'digest-of-the-day' } });
    await backlog.upsertJobScheduler('nightly-digest', { pattern: '0 4 * * *', tz: 'UTC' },
      { name: 'digest', data: { all: true } });
  }

  // --- api: client errors retried (a 400 fails the same way every time)
  const api = queue('api');
  for (let i = 0; i < 2; i++) {
    await api.add('call', { order: i, status: 400 }, { attempts: 3, backoff: { type: 'exponential', delay: 10 } });
  }
  // --- heavy: big payloads and a big return value
  const heavy = queue('heavy');
  await heavy.add('render', { doc: 'd'.repeat(150 * 1024) });
  await heavy.add('render', { doc: 'D'.repeat(1200 * 1024) });
  await heavy.add('upload', { file: Buffer.alloc(3000, 7).toString('base64') });
  await heavy.add('report', { bigResult: 200 * 1024 });
  const names2 = ['api', 'heavy'];
  if (!isMQ) {
    // --- slowjobs: Bull fails the job after `timeout` ms; the promise keeps running
    await queue('slowjobs').add('crunch', { sleep: 300 }, { timeout: 50 });
    names2.push('slowjobs');
  }
  const w2 = names2.map((n) => startWorker(n, processor));
  await until(async () => {
    const a = await api.getJobCounts(), h = await heavy.getJobCounts();
    const slowDone = isMQ ? true : (await queue('slowjobs').getJobCounts()).failed === 1;
    return a.failed === 2 && h.completed === 4 && slowDone;
  }, 'api/heavy/slowjobs to settle');
  await Promise.all(w2.map((x) => x.close()));

  // --- limited: a rate limit that lasts an hour
  const limited = queue('limited');
  if (isMQ) {
    const lw = new mod.Worker('limited', processor, { connection: conn(), prefix, autorun: false });
    if (typeof lw.rateLimit === 'function') await lw.rateLimit(3600000); // BullMQ >= 3
    await lw.close();
    for (let i = 0; i < 3; i++) await limited.add('sync', { i });
  } else {
    const lq = new mod('limited', url, { prefix, limiter: { max: 1, duration: 3600000 } });
    opened.push(lq);
    for (let i = 0; i < 3; i++) await lq.add('sync', { i });
    lq.process('*', processor);
    await until(async () => (await lq.getJobCounts()).completed === 1, 'one limited job');
    await lq.close();
  }

  // --- late: due in 10 ms, and nothing running to promote it
  await queue('late').add('reminder', { n: 1 }, { delay: 10 });

  // --- stalls: the library's own stalled check recovers a job whose worker died
  const stalls = queue('stalls');
  await stalls.add('resize', { img: 'a.png' });
  await crashWorker('stalls', 300, 100);
  await sleep(400);
  if (isMQ) {
    const sw = new mod.Worker('stalls', processor, { connection: conn(), prefix, autorun: false,
                                                     maxStalledCount: 0, stalledInterval: 100 });
    await sw.moveStalledJobsToWait();   // marks the active ids
    await sleep(150);
    await sw.moveStalledJobsToWait();   // finds them unlocked
    await sw.close();
  } else {
    const sq = new mod('stalls', url, { prefix, settings: { maxStalledCount: 0, stalledInterval: 100 } });
    await sq.isReady();
    await sq.moveUnlockedJobsToWait();
    await sleep(150);
    await sq.moveUnlockedJobsToWait();
    await sq.close();
  }

  // --- timer: a lone delayed job (marker entry in wait on BullMQ <= 4)
  await queue('timer').add('tick', { n: 0 }, { delay: 3600000 });

  // --- reports: paused with waiting jobs
  const reports = queue('reports');
  await reports.pause();
  for (let i = 0; i < 3; i++) await reports.add('monthly', { month: i + 1 });

  const names = ['mail', 'convert', 'render', 'backlog', 'timer', 'reports', 'stalls', 'api', 'heavy',
                 'limited', 'late'];
  if (!isMQ) names.push('slowjobs');
  // --- flows (BullMQ only): parent waiting on children, one child failed
  if (isMQ) {
    const fp = new mod.FlowProducer({ connection: conn(), prefix });
    opened.push(fp);
    await fp.add({ name: 'assemble', queueName: 'flow-parent', data: { order: 42 },
      children: [
        { name: 'part', queueName: 'flow-child', data: { part: 1 } },
        { name: 'part', queueName: 'flow-child', data: { part: 2, fail: true }, opts: { attempts: 1 } },
      ] });
    const cw = startWorker('flow-child', processor);
    const fc = queue('flow-child');
    await until(async () => {
      const c = await fc.getJobCounts();
      return c.completed === 1 && c.failed === 1;
    }, 'flow children to settle');
    await cw.close();
    names.push('flow-parent', 'flow-child');
  }
  const out = await report(names);
  process.stdout.write(JSON.stringify(out));
  await Promise.all(opened.map((o) => o.close().catch(() => {})));
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
